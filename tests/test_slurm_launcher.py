"""``launcher=slurm`` end to end without a cluster: Hydra finds zoft's launcher plugin, and a sweep
goes through a fake ``sbatch`` (tests/fake_slurm.py) that runs the generated job scripts here.
A job stopped by SIGTERM (preemption) or SIGUSR1 (Slurm's time-limit warning) is requeued and
resumes from its checkpoint; the sweep waits for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import fake_slurm
from conftest import CONF, ROOT
from zoft.outputs import read_jsonl_tolerant

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _hydra_cfg(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_hydra_finds_the_launcher_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    target = _hydra_cfg(["launcher=slurm"]).hydra.launcher._target_
    assert target.startswith("hydra_plugins.")  # Hydra 1.3 instantiates launchers only from there
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert target in found


def test_requeue_switch_decides_what_submitit_resubmits(tmp_path):
    from hydra_plugins.zoft_launchers.slurm import SlurmLauncher

    hl = _hydra_cfg(["launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600"]).hydra.launcher
    params = {k: v for k, v in OmegaConf.to_container(hl).items() if k != "_target_"}
    params["submitit_folder"] = str(tmp_path / "%j")
    launcher = SlurmLauncher(**params)
    launcher.config = OmegaConf.create({"launcher": {"requeue": True}})
    delayed = launcher.checkpoint([["optimizer.lr=1e-6"]], "hydra.sweep.dir", 0)
    assert delayed is not None and delayed.function is launcher  # submitit resubmits this job
    launcher.config = OmegaConf.create({"launcher": {"requeue": False}})
    assert launcher.checkpoint([["optimizer.lr=1e-6"]], "hydra.sweep.dir", 0) is None


def test_only_a_job_that_stopped_on_a_signal_now_is_requeued():
    from hydra_plugins.zoft_launchers.slurm import stopped_by_signal

    preempted = json.dumps({"status": "preempted", "preempted_at_step": 31}).encode()
    assert stopped_by_signal(preempted, b"")
    assert stopped_by_signal(preempted, json.dumps({"status": "preempted", "preempted_at_step": 9}).encode())
    # An attempt that failed before writing results.json leaves the last one's: not requeued again.
    assert not stopped_by_signal(preempted, preempted)
    assert not stopped_by_signal(json.dumps({"status": "completed"}).encode(), b"")


def test_without_sbatch_on_path_the_sweep_stops_before_any_folder(tmp_path, monkeypatch):
    """On a machine without Slurm: exit 2 naming what is missing, no traceback, no sweep folder."""
    from zoft.frontend import Stop, preflight

    sweep = ["-m", "launcher=slurm", "optimizer.lr=1e-3,1e-4", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(Stop) as stop:
        preflight(sweep, CONF)
    assert stop.value.code == 2 and "launcher=slurm needs Slurm's sbatch on PATH (not found)" in stop.value.message
    fake_slurm.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in preflight(sweep, CONF)  # with sbatch: it goes on
    monkeypatch.undo()
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "launcher=slurm", "optimizer.lr=1e-3,1e-4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sbatch on PATH" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no multirun/ folder


def _wait_for_step(job_glob: Path, step: int, deadline: float, master: subprocess.Popen) -> Path:
    """The job folder once its metrics.jsonl has a row at ``step`` or later."""
    while time.time() < deadline and master.poll() is None:
        for metrics in job_glob.parent.glob(f"{job_glob.name}/metrics.jsonl"):
            try:
                rows = read_jsonl_tolerant(metrics)
            except FileNotFoundError:
                rows = []
            if rows and max(r.get("step", 0) for r in rows) >= step:
                return metrics.parent
        time.sleep(0.01)
    ended = "" if master.poll() is None else f" (the sweep command ended, exit {master.returncode})"
    raise AssertionError(f"no job reached step {step} under {job_glob}{ended}")


@pytest.mark.slow
def test_a_sweep_runs_through_sbatch_and_stopped_jobs_resume_from_their_checkpoint(tmp_path):
    state = fake_slurm.install(tmp_path / "bin")
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    master = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "launcher=slurm", "optimizer.lr=0.001,0.0001",
         "task.num_train=64", "task.num_dev=16", "task.num_test=16", "trainer.max_steps=300",
         "trainer.eval_steps=50", "trainer.batch_size=8", "trainer.log_steps=1", "trainer.progress_bar=false",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 400
        # The fake runs the array's tasks in turn: stop each one mid-run with one of Slurm's signals.
        for num, sig in ((0, signal.SIGTERM), (1, signal.SIGUSR1)):
            _wait_for_step(sweep_dir / f"{num}_*", 30, deadline, master)
            pid = int(next(state.glob(f"pid-*_{num}")).read_text())
            os.kill(pid, sig)
        out, err = master.communicate(timeout=max(1, deadline - time.time()))
    finally:
        master.kill()
        for runner in state.glob("runner-*"):  # the detached runner ends with its last task
            try:
                os.kill(int(runner.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert master.returncode == 0 and "Callback" not in err, err[-3000:]  # Hydra warns when a callback raises
    jobs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    # Named by the overrides that vary (the constants, e.g. trainer.progress_bar, are left out).
    assert [j.name for j in jobs] == ["0_optimizer.lr=0.001,sample_seed=0,seed=42",
                                      "1_optimizer.lr=0.0001,sample_seed=0,seed=42"]
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "completed" and results["resumed"] == 1, job
        assert results["training"]["steps"] == 300
        steps = [r["step"] for r in read_jsonl_tolerant(job / "metrics.jsonl") if "loss" in r]
        assert steps == list(range(1, 301))  # resumed where the checkpoint was: no step lost or repeated
    script = next(sweep_dir.glob(".submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --signal=USR1@120" in script  # the loop's signal
    logs = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.out"))
    assert "demo / tiny-opt / method=ft optimizer=mezo / job 0: optimizer.lr=0.001\n" in logs
    assert "demo / tiny-opt / method=ft optimizer=mezo / job 1: optimizer.lr=0.0001\n" in logs
    assert f"sweep folder: {sweep_dir}" in out.splitlines()[0]
    assert out.splitlines()[-3:] == ["sweep: 2 jobs: 2 completed", f"sweep folder: {sweep_dir}",
                                     f"report: zoft report {sweep_dir}"]
