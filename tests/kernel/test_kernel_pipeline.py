"""A kernel run end to end on tiny RoBERTa: metrics, the keyed cache, overwrite, loading files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

from kernel_helpers import ARCH, SENTENCES, splits, tiny_roberta
from zoft.config.validate import ConfigError, validate
from zoft.kernel.pipeline import inputs_from_items, run_kernel
from zoft.kernel.store import kernel_file, save_kernel
from zoft.models.tiny import MASK, PAD
from zoft.run import default_config

ROOT = Path(__file__).resolve().parents[2]


def cfg_for(tmp_path, **kernel):
    return default_config(
        model={"name": "tiny-roberta", "family": "roberta", "kind": "masked", "tiny": vars(ARCH)},
        task={"name": "sst2"}, mode={"name": "kernel"}, output_dir=str(tmp_path),
        kernel={"cache_dir": str(tmp_path / "cache"), "outer_batch_size": 2, "inner_batch_size": 4, **kernel},
    )


@pytest.fixture(scope="module")
def data():
    model, tok = tiny_roberta()
    train, dev = splits(tok)
    return model, {"train": train, "dev": dev, "test": dev}


def run(cfg, data, tmp_path):
    metrics: dict[str, float] = {}
    summary = run_kernel(cfg, data[0], data[1], torch.device("cpu"), tmp_path, metrics)
    return metrics, summary


def test_kernel_run_reports_metrics_and_caches_by_inputs(tmp_path, data):
    cfg = cfg_for(tmp_path, formula="sgd", solver="lstsq")
    metrics, summary = run(cfg, data, tmp_path)
    assert set(metrics) == {f"{s}_{m}" for s in ("train", "dev", "test") for m in ("accuracy", "loss")}
    # least squares (nearly) interpolates the 5 training targets; the random tiny model's kernel
    # is ill-conditioned, so gelsd's rank cut-off leaves a small residual
    assert metrics["train_accuracy"] == 1.0 and metrics["train_loss"] < 0.1
    assert summary["solver_metrics"]["train_rank"] >= 1
    assert summary["binary"] is True and summary["shapes"]["dev"] == [5, 1, 2, 1]
    assert all(e.startswith("computed") for e in summary["files"].values())
    files = sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    assert len(files) == 3 and all(f.split("_")[0] in ("train", "dev", "test") for f in files)

    again, summary2 = run(cfg, data, tmp_path)
    assert again == metrics and all(e.startswith("cached") for e in summary2["files"].values())
    # Any input change gives new files (never a stale kernel): formula, subset, data, weights.
    for change in ({"formula": "signgd"}, {"exclude_head": True}):
        _, s = run(cfg_for(tmp_path, solver="lstsq", **({"formula": "sgd"} | change)), data, tmp_path)
        assert all(e.startswith("computed") for e in s["files"].values()), change
    other_model = tiny_roberta(seed=1)[0]
    _, s = run(cfg, (other_model, data[1]), tmp_path)
    assert all(e.startswith("computed") for e in s["files"].values())
    _, s = run(cfg_for(tmp_path, formula="sgd", solver="lstsq", overwrite=True), data, tmp_path)
    assert all(e.startswith("computed") for e in s["files"].values())


def test_published_kernel_files_are_loaded_instead_of_computed(tmp_path, data):
    # Files in the published layout, with values the tiny model could never produce: the run must
    # use them as they are. Targets in the files are class labels {0, 1}.
    train, dev = data[1]["train"], data[1]["dev"]
    y_t = 2.0 * train.labels.double() - 1
    k_tt = torch.eye(5, dtype=torch.float64)[:, None, :, None]
    k_td = torch.zeros(5, 1, 2, 1, dtype=torch.float64)
    k_td[0, 0, 0, 0] = 1.0  # dev 0 looks like train 0 (label 1)
    k_td[1, 0, 1, 0] = 1.0  # dev 1 looks like train 1 (label 0)
    for mode, kern, labels in (("train", k_tt, train.labels), ("dev", k_td, dev.labels), ("test", k_td, dev.labels)):
        save_kernel(kernel_file(tmp_path / "pub", mode, "sst-2"), kern, labels)
    cfg = cfg_for(tmp_path, solver="lstsq", load_dir=str(tmp_path / "pub"), load_task="sst-2")
    metrics, summary = run(cfg, data, tmp_path)
    assert all(e.startswith("loaded") for e in summary["files"].values())
    assert metrics["dev_accuracy"] == 1.0  # predictions = y_t[0], y_t[1] = +1, -1 = dev labels 1, 0
    assert metrics["dev_loss"] == pytest.approx(0.0, abs=1e-12) and y_t[0] == 1


def test_multiclass_kernel_with_adjust_for_init(tmp_path, data):
    cfg = cfg_for(tmp_path, binary=False, solver="lstsq", adjust_for_init=True, regularization=1e-3)
    metrics, summary = run(cfg, data, tmp_path)
    assert summary["binary"] is False and summary["shapes"]["train"] == [5, 2, 5, 2]
    assert 0.0 <= metrics["dev_accuracy"] <= 1.0 and metrics["train_accuracy"] >= 0.6
    # f0 (saved as train_logits_*) is the full masked LM's label-word logits at the mask
    (path,) = (tmp_path / "cache").glob("train_logits_*.pt")
    f0, labels = torch.load(path)
    train = data[1]["train"]
    with torch.no_grad():
        full = data[0](input_ids=train.input_ids, attention_mask=train.attention_mask).logits
    expected = full[torch.arange(5), train.mask_pos][:, train.label_word_ids].double()
    torch.testing.assert_close(f0, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, train.labels)


@dataclass
class Item:  # the shape of the mlm-prompt objective's prepared items
    input_ids: list
    token_type_ids: Optional[list]
    mask_pos: Optional[int]
    label: int


def test_inputs_from_prepared_items_keep_the_objectives_mask_index():
    items = [Item([0, 7, MASK, 2], [0, 0, 0, 0], 2, 1), Item([0, MASK, 9, 9, 2], [0, 0, 0, 1, 1], 1, 0)]
    inputs = inputs_from_items(items, [11, 12], mask_id=MASK, pad_id=PAD)
    assert inputs.mask_pos.tolist() == [2, 1] and inputs.input_ids.shape == (2, 5)
    assert inputs.input_ids[0, 4].item() == PAD and inputs.attention_mask[0].tolist() == [1, 1, 1, 1, 0]
    assert inputs.token_type_ids[1].tolist() == [0, 0, 0, 1, 1] and inputs.labels.tolist() == [1, 0]
    with pytest.raises(Exception, match="mlm-prompt"):
        inputs_from_items([Item([0, 7, 2], None, None, 0)], [11, 12], mask_id=MASK, pad_id=PAD)


@pytest.mark.slow
def test_each_kernel_mistake_is_one_error_line():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "mode=kernel", "model=tiny-roberta",
                           "task=sst-2-kshot", "kernel.gamma=-1", "kernel.asym_lambda=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert lines == ["  - kernel.gamma=-1.0 must be > 0 (the asymmetric kernel's gamma)",
                     "  - kernel.asym_lambda=2.0 must be in [0, 1] (a mixing weight)"], proc.stderr


def test_kernel_settings_are_validated_before_anything_loads(tmp_path):
    cfg = cfg_for(tmp_path, formula="ntk", solver="asym", asym_lambda=2.0, binary=False)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    text = str(err.value)
    for expected in ("kernel.formula='ntk'", "kernel.solver=asym needs kernel.formula=asymmetric_signgd",
                     "kernel.asym_lambda=2.0 must be in [0, 1]", "kernel.binary=true"):
        assert expected in text, text
    bad_model = cfg_for(tmp_path)
    bad_model.model.kind = "causal"
    bad_model.model.family = "opt"
    with pytest.raises(ConfigError, match="model.kind=masked"):
        validate(bad_model)
