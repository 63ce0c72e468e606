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


def test_after_a_rollback_last_pt_holds_the_halved_lr_and_the_count(tmp_path):
    """A run that rolled back and then stopped before its next checkpoint resumes the redone
    stretch: last.pt is rewritten at the rollback with lr_scale 0.5 and one rollback spent (it
    once kept the full LR and a fresh rollback budget)."""
    from zoft.train.checkpoint import read_checkpoint

    # The gradient check trips at step 21 (20 steps of history, a factor no step passes); the
    # loop goes back to step 20's checkpoint; no checkpoint is due after that before step 26.
    cfg = compose_config(["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=26",
                          "trainer.progress_bar=false", "trainer.eval_before_training=false",
                          "trainer.eval_steps=7", "trainer.checkpoint_steps=10", "trainer.on_divergence=rollback",
                          "trainer.divergence_factor=1e-9", "trainer.max_rollbacks=1", "method=mezo",
                          "optimizer.lr=1e-3", "trainer.lr_scheduler=linear", f"output_dir={tmp_path}"])
    run(cfg)
    loop = read_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]
    assert (loop["step"], loop["lr_scale"], loop["rollbacks"]) == (20, 0.5, 1)


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


# -- checkpoints load with weights_only=True --------------------------------------------------
RESUME = ["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.progress_bar=false",
          "trainer.eval_before_training=false", "trainer.eval_steps=0", "trainer.batch_size=8",
          "trainer.lr_scheduler=constant"]  # constant: extending the run keeps the schedule


class _RunsCode:
    """A pickled object whose unpickling runs a command (what a hostile last.pt would hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "mezo", "hizoo", "fzoo"])
def test_resume_from_a_weights_only_checkpoint_matches_the_straight_run(tmp_path, optimizer):
    """Every optimizer kind's state (Adam moments, SGD buffers, the ZO seed stream, HiZOO's
    Hessian, FZOO's probes) passes the weights-only unpickler: 3 steps, then extended to 6,
    equals 6 steps straight."""
    import torch

    from zoft.train.checkpoint import read_checkpoint

    base = RESUME + ["method=ft", f"optimizer={optimizer}"]
    run(compose_config(base + ["trainer.max_steps=3", f"output_dir={tmp_path / 'split'}"]))
    extended = run(compose_config(base + ["trainer.max_steps=6", f"output_dir={tmp_path / 'split'}"]))
    run(compose_config(base + ["trainer.max_steps=6", f"output_dir={tmp_path / 'straight'}"]))
    assert extended["resumed"] == 1
    # The state at step 6 (last.pt; the reported weights may be step 3's, the best by dev).
    split, straight = (read_checkpoint(next((tmp_path / name).rglob("last.pt"))) for name in ("split", "straight"))
    assert split["loop"]["step"] == straight["loop"]["step"] == 6
    for name, tensor in straight["weights"].items():
        assert torch.equal(split["weights"][name], tensor), name


def _plant_foreign_checkpoint(tmp_path) -> tuple[list[str], "Path"]:
    """A completed 2-step run whose last.pt also holds an object that runs a command when
    unpickled; returns the overrides that extend it to 4 steps, and the command's marker file."""
    import torch

    from zoft.train.checkpoint import read_checkpoint

    base = RESUME + [f"output_dir={tmp_path / 'run'}"]
    run(compose_config(base + ["trainer.max_steps=2"]))
    last = next((tmp_path / "run").rglob("last.pt"))
    payload = read_checkpoint(last)  # the real checkpoint reads back
    marker = tmp_path / "code-ran"
    payload["loop"]["extra"] = _RunsCode(marker)
    torch.save(payload, last)
    return base + ["trainer.max_steps=4"], marker


FOREIGN = r"never contains \(it refers to (posix|nt|os)\.system\).*resume=false"


def test_a_checkpoint_holding_a_foreign_object_is_refused_before_it_runs(tmp_path):
    extend, marker = _plant_foreign_checkpoint(tmp_path)
    with pytest.raises(ZoftUserError, match=FOREIGN):
        run(compose_config(extend))
    assert not marker.exists()


@pytest.mark.slow
def test_cli_refuses_a_foreign_checkpoint_with_exit_2(tmp_path):
    import re
    import subprocess
    import sys

    from conftest import ROOT

    extend, marker = _plant_foreign_checkpoint(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *extend], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(FOREIGN, proc.stderr) and "Traceback" not in proc.stderr
    assert not marker.exists()
