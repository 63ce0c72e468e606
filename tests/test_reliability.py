"""The divergence guard and resume=true without a checkpoint. SIGKILL/SIGTERM/SIGINT resume:
tests/test_run_folder.py."""

from __future__ import annotations

import json

import pytest

from conftest import compose_config
from zoft.errors import DivergenceError, ZoftUserError
from zoft.run import run

def test_forced_nan_stops_with_diverged_status(tmp_path):
    cfg = compose_config(["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=200",
                          "trainer.progress_bar=false", "trainer.eval_before_training=false",
                          "optimizer=sgd", "method=ft", "optimizer.lr=1e12", "optimizer.max_grad_norm=null",
                          f"output_dir={tmp_path}"])
    with pytest.raises(DivergenceError) as err:
        run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged"
    assert results["diverged_at_step"] == err.value.step >= 1
    assert "loss is nan" in results["error"]["message"] or "loss is inf" in results["error"]["message"]


def test_rollback_halves_the_lr_then_gives_up(tmp_path, caplog):
    cfg = compose_config(["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=200",
                          "trainer.progress_bar=false", "trainer.eval_before_training=false",
                          "trainer.checkpoint_steps=1", "trainer.on_divergence=rollback", "trainer.max_rollbacks=2",
                          "optimizer=sgd", "method=ft", "optimizer.lr=1e12", "optimizer.max_grad_norm=null",
                          f"output_dir={tmp_path}"])
    with caplog.at_level("WARNING"), pytest.raises(DivergenceError):
        run(cfg)
    rollbacks = [r for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(rollbacks) == 2
    assert "x0.25" in rollbacks[-1].getMessage()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr_scale"] for r in rows if "rollback_from" in r] == [0.5, 0.25]


def test_mezo_non_finite_loss_stops_as_diverged(tmp_path):
    cfg = compose_config(["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=100",
                          "trainer.progress_bar=false", "trainer.eval_before_training=false",
                          "optimizer.lr=1e8", f"output_dir={tmp_path}"])
    with pytest.raises(DivergenceError, match="non-finite loss"):
        run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged" and results["diverged_at_step"] >= 2


def test_resume_true_without_checkpoint_is_a_clear_error(tmp_path):
    cfg = compose_config(["trainer.max_steps=5", "trainer.progress_bar=false", "resume=true",
                          f"output_dir={tmp_path}"])
    with pytest.raises(ZoftUserError, match="resume=true but .*last.pt does not exist"):
        run(cfg)
