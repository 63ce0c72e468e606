"""mode=kernel through the normal run on an LM-BFF k-shot task (tiny RoBERTa, fixture data)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_config
from lmbff_helpers import sst2_kshot_root
from zoft.run import run


@pytest.fixture(scope="module")
def kshot_root(tmp_path_factory):
    return sst2_kshot_root(tmp_path_factory, 4)


def overrides(root, out, *extra) -> list[str]:
    return ["model=tiny-roberta", "task=sst-2-kshot", f"task.data_dir={root}", "task.k=4", "task.sample_seed=42",
            "mode=kernel", "trainer.progress_bar=false", f"output_dir={out}",
            f"kernel.cache_dir={out / 'kernels'}", *extra]


@pytest.mark.parametrize("formula,solver", [("sgd", "lstsq"), ("signgd", "logistic"), ("asymmetric_signgd", "asym")])
def test_kernel_run_writes_results_like_any_run(kshot_root, tmp_path, formula, solver):
    results = run(compose_config(overrides(kshot_root, tmp_path, f"kernel.formula={formula}", f"kernel.solver={solver}",
                                           "kernel.exclude_embeddings=true")))
    assert results["status"] == "completed"
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["metrics"]
    for split in ("train", "dev", "test"):
        assert 0.0 <= m[f"{split}_accuracy"] <= 1.0 and m[f"{split}_loss"] >= 0.0
    k = saved["kernel"]
    n_train, n_test = saved["data"]["sizes"]["train"], saved["data"]["sizes"]["test"]
    lead = [2] if formula == "asymmetric_signgd" else []
    assert k["shapes"]["test"] == lead + [n_train, 1, n_test, 1] and k["grad_dim"] > 0
    assert k["formula"] == formula and k["solver"] == solver
    # the saved test kernel is the documented (kernel, targets) pair, loadable with torch.load
    (path,) = (tmp_path / "kernels").glob("test_kernels_sst-2-kshot.*.pt")
    kernel, targets = torch.load(path)
    assert list(kernel.shape) == k["shapes"]["test"] and targets.shape == (n_test,)


def test_kernel_matches_the_objectives_own_logits(kshot_root, tmp_path):
    """f0 saved by the kernel run = the mlm-prompt objective's label-word logits (same prompts)."""
    cfg = compose_config(overrides(kshot_root, tmp_path, "kernel.solver=lstsq", "kernel.adjust_for_init=true",
                                   "kernel.binary=false"))
    results = run(cfg)
    assert results["kernel"]["binary"] is False
    from zoft.models.loader import load_model
    from zoft.objectives.build import build_objective
    from zoft.objectives.mlm import collate
    from zoft.tasks import get_task
    from zoft.tasks.data import load_task_data

    spec = get_task(cfg.task.name)
    loaded = load_model(cfg.model)
    objective = build_objective(cfg, spec, loaded, load_task_data(spec, cfg.task))
    items = objective.prepare(load_task_data(spec, cfg.task).test, train=False)
    with torch.no_grad():
        expected = objective.class_logits(loaded.model, collate(items, loaded.tokenizer.pad_token_id, loaded.device))
    (path,) = (tmp_path / "kernels").glob("test_logits_sst-2-kshot.*.pt")
    f0, _ = torch.load(path)
    torch.testing.assert_close(f0, expected.double(), rtol=1e-4, atol=1e-4)
