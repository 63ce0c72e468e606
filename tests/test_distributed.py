"""Several processes on CPU (gloo): DDP, FSDP and data-parallel MeZO give the single-process
trajectory for the same global batch, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from conftest import ROOT, compose_config
from zoft.distributed import DistributedError, resolve_strategy, shard_bounds
from zoft.run import run

# Batch 7 over 2 ranks: shards of 4 and 3 examples, so unequal shards are exercised; 32 train
# examples make the last batch of each epoch 4 long.
BASE = [
    "task.num_train=32", "task.num_dev=16", "task.num_test=16", "trainer.batch_size=7",
    "trainer.max_steps=6", "trainer.eval_steps=3", "trainer.log_steps=1", "trainer.progress_bar=false",
    "trainer.eval_before_training=false", "method=ft",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, overrides: list[list[str]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    run(compose_config(overrides[rank]))


def run_two_processes(overrides: list[list[str]], timeout: float = 300) -> None:
    """Run zoft's ``run`` in 2 gloo processes (rank r gets ``overrides[r]``); fail on error or hang."""
    ctx = mp.start_processes(_worker, args=(2, _free_port(), overrides), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-process run did not finish in {timeout:.0f}s")


def rows(run_dir) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "loss" in r], [r for r in lines if "dev_loss" in r]


def assert_same_run(single, multi, rtol: float) -> None:
    """Same training losses, dev numbers, best weights and test metrics."""
    (train_a, dev_a), (train_b, dev_b) = rows(single), rows(multi)
    assert [r["step"] for r in train_a] == [r["step"] for r in train_b] == list(range(1, 7))
    assert [r["loss"] for r in train_b] == pytest.approx([r["loss"] for r in train_a], rel=rtol)
    assert [r["dev_loss"] for r in dev_b] == pytest.approx([r["dev_loss"] for r in dev_a], rel=rtol)
    wa = torch.load(single / "checkpoints" / "best_trainable.pt", weights_only=True)
    wb = torch.load(multi / "checkpoints" / "best_trainable.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=rtol, atol=rtol, msg=name)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (single, multi))
    assert rb["status"] == "completed"
    for key, value in ra["metrics"].items():
        assert rb["metrics"][key] == pytest.approx(value, rel=rtol), key


def test_shards_partition_the_batch_evenly():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            covered = [i for start, end in bounds for i in range(start, end)]
            assert covered == list(range(n))
            sizes = [end - start for start, end in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_strategy_resolution():
    assert resolve_strategy("auto", 1, zeroth_order=False) == "none"
    assert resolve_strategy("auto", 2, zeroth_order=False) == "ddp"
    assert resolve_strategy("fsdp", 2, zeroth_order=False) == "fsdp"
    assert resolve_strategy("auto", 2, zeroth_order=True) == "zo-dp"
    assert resolve_strategy("ddp", 2, zeroth_order=True) == "zo-dp"
    with pytest.raises(DistributedError, match="fsdp needs a first-order optimizer"):
        resolve_strategy("fsdp", 2, zeroth_order=True)
    with pytest.raises(DistributedError, match="choose one of auto, ddp, fsdp"):
        resolve_strategy("deepspeed", 2, zeroth_order=False)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_first_order_two_processes_match_one(tmp_path, strategy):
    if strategy == "fsdp":
        fsdp = pytest.importorskip("torch.distributed.fsdp")
        if not hasattr(fsdp, "fully_shard"):
            pytest.skip(f"torch {torch.__version__} has no FSDP2 fully_shard (needs torch >= 2.6)")
    # SGD, not Adam: Adam divides by sqrt(v), which turns the rounding noise of gradients that
    # are zero in exact arithmetic (attention key biases) into lr-sized steps, so two correct runs
    # would differ by ~lr in those entries; SGD keeps a float-level difference float-level.
    common = BASE + ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
                     "trainer.checkpoint_steps=2", "seed=3"]
    run(compose_config(common + [f"output_dir={tmp_path / 'single'}"]))
    # Rank 1 gets its own output_dir only so the test can see that it writes nothing there.
    run_two_processes([
        common + [f"distributed.strategy={strategy}", f"output_dir={tmp_path / 'multi'}"],
        common + [f"distributed.strategy={strategy}", f"output_dir={tmp_path / 'rank1'}"],
    ])
    assert_same_run(tmp_path / "single", tmp_path / "multi", rtol=1e-5)
    results = json.loads((tmp_path / "multi" / "results.json").read_text())
    assert results["distributed"] == {"strategy": strategy, "world_size": 2, "mixed_precision": "no"}
    assert not (tmp_path / "rank1").exists()


@pytest.mark.slow
def test_data_parallel_mezo_via_torchrun_matches_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 train.py`` with MeZO: same trajectory as one process, and
    rank 1 leaves no file anywhere (no Hydra folder either)."""
    common = BASE + ["optimizer=mezo", "optimizer.lr=1e-2", "optimizer.n_directions=2"]
    run(compose_config(common + [f"output_dir={tmp_path / 'single'}"]))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "train.py"), *common, f"output_dir={tmp_path / 'multi'}"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The projected gradient divides a loss difference by 2*eps = 2e-3, so the float32 rounding
    # of a loss summed in another order (two shards vs one batch: a few ulps of a loss ~0.7,
    # up to ~2.4e-7) shows up ~500x larger in g: up to ~1.2e-4 absolute on step 1 (4e-5 was
    # measured on an AMD EPYC, 6e-4 relative to g = 0.065), compounding over steps to 2e-3 in the
    # 6-step run. A wrong combination (e.g. each rank using only its own shard's loss) differs
    # by O(1) in the loss, i.e. by hundreds in g.
    first = [rows(d)[0][0]["projected_grad"] for d in (tmp_path / "single", tmp_path / "multi")]
    assert first[1] == pytest.approx(first[0], abs=2.5e-4)
    assert_same_run(tmp_path / "single", tmp_path / "multi", rtol=2e-3)
    assert json.loads((tmp_path / "multi" / "results.json").read_text())["distributed"]["strategy"] == "zo-dp"
    # output_dir holds everything rank 0 wrote (.hydra/ too); rank 1 created nothing anywhere.
    assert (tmp_path / "multi" / ".hydra" / "config.yaml").is_file()
    assert list(work.iterdir()) == []
    assert proc.stdout.count("test accuracy") == 1  # the summary is printed once


def test_device_map_cannot_be_combined_with_several_processes(monkeypatch):
    from zoft.distributed import setup

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = compose_config(["model.device_map=auto", "model.device=cpu"])
    with pytest.raises(DistributedError, match="model.device_map='auto'.*cannot be combined with 2"):
        setup(cfg)


def test_model_parallel_placement_runs_mezo_and_zero_shot(tmp_path):
    """``model.device_map=auto`` (accelerate's placement; all on the CPU here) loads a saved
    model and trains it with MeZO, and evaluates it zero-shot, in one process."""
    from zoft.models.loader import load_model

    folder = tmp_path / "saved"
    loaded = load_model(compose_config([]).model)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    common = BASE + [f"model.path={folder}", "model.device_map=auto", "trainer.max_steps=3"]
    trained = run(compose_config(common + ["optimizer=mezo", "optimizer.lr=1e-2", f"output_dir={tmp_path / 'mezo'}"]))
    assert trained["status"] == "completed" and trained["training"]["steps"] == 3
    zero = run(compose_config(common + ["method.name=zero-shot", f"output_dir={tmp_path / 'zs'}"]))
    assert 0 <= zero["metrics"]["test_accuracy"] <= 1
