"""Resume after SIGKILL, SIGTERM preemption, the divergence guard, atomic outputs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, compose_config
from zoft.errors import DivergenceError, ZoftUserError
from zoft.outputs import read_jsonl_tolerant
from zoft.run import run

# A run long enough to be interrupted, checkpointing every 10 steps.
RUN = [
    "task.num_train=64", "task.num_dev=16", "task.num_test=16", "trainer.max_steps=300",
    "trainer.eval_steps=100", "trainer.batch_size=8", "trainer.log_steps=1", "trainer.progress_bar=false",
    "trainer.eval_before_training=false", "trainer.checkpoint_steps=10", "save_model=true",
]


def _start(run_dir, extra=()):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RUN, *extra, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            rows = read_jsonl_tolerant(path)
            if rows and max(r.get("step", 0) for r in rows) >= step:
                return
        time.sleep(0.02)
    raise AssertionError(f"run did not reach step {step}")


def _final_state(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    weights = load_file(str(run_dir / "model" / "model.safetensors"))
    return results, weights


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    proc = _start(run_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return (*_final_state(run_dir), run_dir / "trajectory.bin")


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, uninterrupted):
    kill_at = random.Random().randint(15, 250)
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "running"
    again = _start(tmp_path)  # the same command in the same folder resumes (resume=auto)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    results, weights = _final_state(tmp_path)
    ref_results, ref_weights, _ = uninterrupted
    assert results["status"] == "completed" and results["resumed"] == 1, kill_at
    assert results["metrics"] == ref_results["metrics"], kill_at
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], ref_weights[name]), (name, kill_at)
    steps = [r["step"] for r in read_jsonl_tolerant(tmp_path / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 301))  # no duplicated or missing rows after the resume
    assert (tmp_path / "checkpoints" / "last.pt").exists()  # kept: a larger max_steps extends the run
    # The MeZO trajectory continues the interrupted file: byte-identical to the straight run's.
    assert (tmp_path / "trajectory.bin").read_bytes() == uninterrupted[2].read_bytes()


@pytest.mark.slow
def test_sigterm_checkpoints_and_resumes(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, 40, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "preempted" and results["preempted_at_step"] >= 40
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    again = _start(tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    results, weights = _final_state(tmp_path)
    assert results["metrics"] == uninterrupted[0]["metrics"]


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
