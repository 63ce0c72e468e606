"""Kernel rows sharded over 2 gloo processes equal the single-process kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import pytest



FORMULAS = ("sgd", "asymmetric_signgd")


def _kernels(train, dev, model):
    from zoft.kernel import LabelWordLogits, ParamSubset, compute_kernel, split_params

    out = {}
    for formula in FORMULAS:
        fn = LabelWordLogits(model, train.label_word_ids, binary=formula == "asymmetric_signgd")
        params, fixed = split_params(fn, ParamSubset())
        out[formula] = compute_kernel(fn, params, fixed, train, dev, formula, outer_batch_size=2, inner_batch_size=2)
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers
    torch.set_num_threads(1)
    from kernel_helpers import splits, tiny_roberta

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, tok = tiny_roberta()
        train, dev = splits(tok)
        torch.save(_kernels(train, dev, model), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_kernel_equals_one_process_kernel(tmp_path):
    from kernel_helpers import splits, tiny_roberta

    # fork: the children inherit the imported modules (spawn would re-import transformers twice)
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    model, tok = tiny_roberta()
    train, dev = splits(tok)  # 5 training rows: shards of 3 and 2, no duplicated padding rows
    single = _kernels(train, dev, model)
    for rank in (0, 1):
        gathered = torch.load(tmp_path / f"rank{rank}.pt")
        for formula in FORMULAS:
            assert gathered[formula].shape == single[formula].shape
            torch.testing.assert_close(gathered[formula], single[formula], rtol=1e-6,
                                       atol=1e-6 * single[formula].abs().max().item())
