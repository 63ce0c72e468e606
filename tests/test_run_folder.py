"""The run folder nothing can corrupt: input checked before the folder is touched, one run per
folder (a lock), a rerun that resumes / does nothing / refuses, and a SIGKILL at any moment on
the default config (no checkpoint flag) leaves a folder that resumes to the uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CONF, ROOT, compose_config
from zoft.config.bounds import RULES, schema_numeric_fields
from zoft.config.choices import METHOD_FAMILIES
from zoft.frontend import Stop, preflight
from zoft.outputs import DiskFullError, read_jsonl_tolerant, save_tensors
from zoft.rundir import RunFolderError, RunLock
from zoft.run import run
from zoft.train.checkpoint import LoopState, load_checkpoint, save_checkpoint

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
SHORT = ["task.num_train=32", "task.num_dev=16", "task.num_test=16", "trainer.batch_size=8",
         "trainer.eval_steps=10", "trainer.log_steps=1", "trainer.progress_bar=false"]
TIMING = ("examples_per_s", "elapsed_s")  # the only fields two equal runs may differ in


def _train(args, **kw):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300, **kw)


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl_tolerant(run_dir / "metrics.jsonl")]


# --------------------------------------------------------------------------- bad input, early

BAD_CONFIG = [  # (overrides, text the message must contain)
    (["optimizer.lr=nan"], "optimizer.lr=nan is not a finite number"),
    (["optimizer.eps=inf"], "optimizer.eps=inf is not a finite number"),
    (["optimizer.eps=nan"], "optimizer.eps=nan"),
    (["optimizer.lr=-1"], "optimizer.lr=-1.0 must be >= 0"),
    (["trainer.grad_accum=0"], "trainer.grad_accum=0 must be >= 1"),
    (["task.num_train=0"], "task.num_train=0 leaves method=ft nothing to train on"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 must be >= 1"),
    (["trainer.num_epochs=-1"], "trainer.num_epochs=-1.0 must be > 0"),
    (["optimizer.momentum=1.5", "optimizer=sgd", "method=ft"], "optimizer.momentum=1.5 must be in [0, 1)"),
    (["+optimizer.learning_rate=1e-2"], "optimizer.learning_rate is not a setting of optimizer=mezo (did you "
                                        "mean optimizer.lr?)"),
    (["optimizer.learning_rate=1e-2"], "optimizer.learning_rate is not a setting of optimizer=mezo (did you "
                                       "mean optimizer.lr?)"),
    (["optimizer=adam", "optimizer.eps=0.5"], "optimizer.eps is not a setting of optimizer=adam (the zeroth-order "
                                              "optimizers have it); its settings: lr, weight_decay, max_grad_norm, "
                                              "betas, adam_eps"),
    (["optimizer=adam", "optimizer.eps=0.5", "optimizer.momentum=0.9"],
     "\n  - optimizer.momentum is not a setting of optimizer=adam (sgd, mezo-sgd, zo-sgd-mmt have it)"),
    (["optimizer=mezo", "optimizer.name=adam"], "optimizer.name='adam' renames optimizer=mezo without changing it; "
                                                "choose the optimizer with optimizer=adam"),
    (["~optimizer"], "no optimizer: choose one with optimizer=<name> (sgd, adam, mezo,"),
    (["optimizer=hizoo", "optimizer.n_directions=2"], "optimizer.n_directions=2 must be 1 (directions per step; "
                                                      "HiZOO uses one)"),
    (["-m", "+sweep=opt-lozo", "optimizer=mezo", "task=demo"],
     "optimizer.lowrank_rank is not a setting of optimizer=mezo (lozo, subzero have it)"),
    (["+trainer.max_step=10"], "trainer.max_step is not a config key; did you mean trainer.max_steps?"),
    (["trainer.max_step=10"], "did you mean max_steps?"),
    (["task=sst3"], "unknown task option 'sst3'. Did you mean sst2?"),
]


@pytest.mark.parametrize("overrides,expected", BAD_CONFIG, ids=[" ".join(o) for o, _ in BAD_CONFIG])
def test_bad_config_stops_before_the_folder_is_touched(tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    with pytest.raises(Stop) as stop:
        preflight([*overrides, f"hydra.run.dir={run_dir}"], CONF)
    assert stop.value.code == 2
    assert stop.value.message.startswith("error: ") and expected in stop.value.message
    assert not run_dir.exists()


def test_a_missing_cuda_device_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(Stop) as stop:
        preflight(["model.device=cuda", f"hydra.run.dir={tmp_path / 'run'}"], CONF)
    assert stop.value.code == 2 and "model.device='cuda' but this machine has no CUDA device" in stop.value.message


def test_every_number_in_the_schema_has_a_range():
    assert sorted(schema_numeric_fields()) == sorted(RULES)


def test_the_method_registry_implements_the_one_method_vocabulary():
    from zoft.config.schema import MethodConfig
    from zoft.errors import MethodError
    from zoft.methods import registry

    # Every method the config checks accept has an implementation, and nothing else is registered.
    assert set(registry.METHODS) == set(METHOD_FAMILIES)
    with pytest.raises(ValueError, match="METHOD_FAMILIES"):
        registry.register_method("not-a-method")
    # The registry refuses an unsupported family from the same table the config checks read.
    assert "bert" not in METHOD_FAMILIES["prompt"]
    with pytest.raises(MethodError, match="does not support model.family='bert'"):
        registry.apply_method(torch.nn.Linear(1, 1), MethodConfig(name="prompt"), "bert")


def test_validation_does_not_import_torch():
    code = ("import sys; from zoft.frontend import preflight, Stop\n"
            "try: preflight(['optimizer.lr=nan', 'hydra.run.dir=/nonexistent/x'], __import__('pathlib').Path('conf'))\n"
            "except Stop as s: print(s.code)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "[]"], out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["optimizer.lr=nan"], ["+trainer.max_step=10"], ["optimizer.eps=nan"],
                                       ["trainer.grad_accum=0"]])
def test_cli_bad_input_exits_2_without_traceback_and_keeps_a_completed_folder(completed_run, overrides):
    run_dir, before = completed_run
    out = _train([*SHORT, "trainer.max_steps=20", *overrides, f"hydra.run.dir={run_dir}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: ")
    assert _folder_bytes(run_dir) == before  # results.json, .hydra/, metrics: all unchanged


def _folder_bytes(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("done") / "run"
    out = _train([*SHORT, "trainer.max_steps=20", f"hydra.run.dir={run_dir}"])
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir, _folder_bytes(run_dir)


@pytest.mark.slow
def test_rerunning_a_completed_command_is_a_no_op(completed_run):
    run_dir, before = completed_run
    out = _train([*SHORT, "trainer.max_steps=20", f"hydra.run.dir={run_dir}"])
    assert out.returncode == 0 and "already holds this completed run; nothing to do" in out.stdout
    assert _folder_bytes(run_dir) == before


def test_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(Stop) as stop:
        preflight([f"hydra.run.dir={blocker / 'run'}"], CONF)
    assert stop.value.code == 2 and "cannot create the run folder" in stop.value.message


# ------------------------------------------------------------------------ reruns in a folder


def _cfg(run_dir, *extra):
    return compose_config([*SHORT, "trainer.max_steps=20", *extra, f"output_dir={run_dir}"])


@pytest.fixture
def finished(tmp_path):
    results = run(_cfg(tmp_path))
    assert results["status"] == "completed"
    return tmp_path


@pytest.mark.parametrize("change,key", [
    (["optimizer.lr=1e-3"], "optimizer.lr"),             # an optimizer value
    (["task=demo", "task.num_train=48"], "task.num_train"),  # the data
    (["method=lora"], "method.name"),                     # the method
    (["model.tiny.hidden_size=48"], "model.tiny.hidden_size"),  # the model
    (["trainer.batch_size=4"], "trainer.batch_size"),     # the protocol
    (["seed=7"], "seed"),                                 # a seed
])
def test_a_different_run_in_a_used_folder_is_refused_naming_the_keys(finished, change, key):
    before = (finished / "results.json").read_bytes()
    with pytest.raises(RunFolderError, match=rf"holds a completed run with different settings:\s+{key}: "):
        run(_cfg(finished, *change))
    assert (finished / "results.json").read_bytes() == before


def test_safe_keys_change_freely_and_a_rerun_duplicates_nothing(finished):
    rows = _rows(finished)
    again = run(_cfg(finished, "trainer.log_steps=5", "trainer.progress_bar=true", "trainer.eval_batch_size=4"))
    assert again["status"] == "completed" and _rows(finished) == rows  # a no-op: nothing appended
    redone = run(_cfg(finished, "redo=true"))
    assert redone["metrics"] == again["metrics"] and _rows(finished) == rows  # replaced, not appended


def test_a_larger_max_steps_extends_the_run_to_the_straight_run(finished, tmp_path_factory):
    extended = run(compose_config([*SHORT, "trainer.max_steps=30", f"output_dir={finished}"]))
    straight_dir = tmp_path_factory.mktemp("straight30")
    straight = run(compose_config([*SHORT, "trainer.max_steps=30", f"output_dir={straight_dir}"]))
    assert extended["resumed"] == 1 and extended["metrics"] == straight["metrics"]
    assert _rows(finished) == _rows(straight_dir)
    # the same 30 steps (16 bytes each); the header records each run's own config (max_steps)
    records = 30 * 16
    assert (finished / "trajectory.bin").read_bytes()[-records:] == (straight_dir / "trajectory.bin").read_bytes()[-records:]


def test_a_checkpoint_from_other_settings_is_refused(tmp_path):
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = tmp_path / "last.pt"
    save_checkpoint(path, [("w", param)], opt, sched, LoopState(step=3), run_config={"optimizer": {"lr": 0.1}})
    with pytest.raises(RunFolderError, match=r"different settings:\s+optimizer.lr: 0.1 -> 0.2"):
        load_checkpoint(path, [("w", param)], opt, sched, run_config={"optimizer": {"lr": 0.2}})
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(RunFolderError, match="not a readable zoft checkpoint"):
        load_checkpoint(path, [("w", param)], opt, sched)


# ------------------------------------------------------------------------------- the lock


def test_the_lock_admits_one_process_and_names_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from zoft.rundir import RunLock; "
         f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"in use by another zoft run \(PID {holder.pid}\)"):
            RunLock(tmp_path).acquire()
        with pytest.raises(Stop) as stop:
            preflight([f"hydra.run.dir={tmp_path}"], CONF)
        assert stop.value.code == 2 and f"PID {holder.pid}" in stop.value.message
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path).acquire().release()  # the kernel released it with the process


@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_fails_at_once(tmp_path):
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *SHORT, "trainer.max_steps=3000",
                              f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = _train([*SHORT, "trainer.max_steps=3000", f"hydra.run.dir={tmp_path}"])
        assert second.returncode == 2 and f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


# ------------------------------------------------------------------ write failures, signals


def test_torch_writer_failure_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_tensors(path, {"w": torch.ones(2)})
    before = path.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr("zoft.outputs.shutil.disk_usage", lambda p: type("U", (), {"free": 1024})())
    with pytest.raises(DiskFullError, match="no space left on the device while writing .*last.pt; "
                                            "the previous last.pt is intact"):
        save_tensors(path, {"w": torch.zeros(2)})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_multirun_with_failed_jobs_exits_non_zero_with_a_summary(tmp_path):
    out = _train(["-m", "optimizer.lr=-1,nan", "trainer.max_steps=5", f"hydra.sweep.dir={tmp_path}"])
    assert out.returncode == 1
    assert "sweep: 2 jobs: 2 failed" in out.stdout and str(tmp_path) in out.stdout


# --------------------------------------------------- SIGKILL at any moment, default config

KILL_RUN = ["task.num_train=64", "task.num_dev=16", "task.num_test=16", "trainer.max_steps=300",
            "trainer.eval_steps=50", "trainer.batch_size=8", "trainer.log_steps=1", "trainer.progress_bar=false",
            "save_model=true"]  # no checkpoint flag: the auto cadence (every evaluation)


def _start(run_dir):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *KILL_RUN, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)




def wait_for_step(run_dir, step, proc, timeout=120):
    """Return once ``run_dir/metrics.jsonl`` has a row at ``step`` or later (the run is there)."""
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        try:
            rows = read_jsonl_tolerant(path)
        except FileNotFoundError:  # not written yet, or just replaced by a run that starts afresh
            rows = []
        if rows and max(r.get("step", 0) for r in rows) >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"run did not reach step {step}")


def _folder_state(run_dir):
    from safetensors.torch import load_file

    results = json.loads((run_dir / "results.json").read_text())
    return results, _rows(run_dir), load_file(str(run_dir / "model" / "model.safetensors")), \
        (run_dir / "trajectory.bin").read_bytes()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    proc = _start(run_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return _folder_state(run_dir)


def _assert_same_run(run_dir, straight, context):
    results, rows, weights, trajectory = _folder_state(run_dir)
    ref_results, ref_rows, ref_weights, ref_trajectory = straight
    assert results["status"] == "completed", context
    assert results["metrics"] == ref_results["metrics"], context  # initial_* included
    assert any(k.startswith("initial_") for k in results["metrics"])
    for key in ("steps", "best_step", "forward_passes", "last_loss"):
        assert results["training"][key] == ref_results["training"][key], (key, context)
    assert results["training"]["seconds"] > 0
    assert rows == ref_rows, context  # no duplicated or missing rows
    assert weights.keys() == ref_weights.keys() and all(torch.equal(weights[k], ref_weights[k]) for k in weights)
    assert trajectory == ref_trajectory, context
    return results


@pytest.mark.slow
def test_sigkill_at_random_moments_on_the_default_config_resumes_to_the_straight_run(tmp_path, straight_run):
    rng = random.Random()
    kills = sorted(rng.sample(range(5, 290), 2))
    for kill_at in kills:
        proc = _start(tmp_path)
        wait_for_step(tmp_path, kill_at, proc)
        time.sleep(rng.random() * 0.05)  # anywhere inside a step, an evaluation or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = _start(tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    results = _assert_same_run(tmp_path, straight_run, kills)
    assert results["resumed"] >= 1 or kills[-1] < 50  # before the first checkpoint it starts afresh


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "preempted")])
def test_a_stop_signal_checkpoints_and_the_rerun_resumes_to_the_straight_run(tmp_path, straight_run, sig, status):
    proc = _start(tmp_path)
    wait_for_step(tmp_path, 30, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4 and "Traceback" not in err, err[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == status and results[f"{status}_at_step"] >= 30
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    again = _start(tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert _assert_same_run(tmp_path, straight_run, status)["resumed"] == 1


def test_a_folder_written_before_the_mode_group_existed_still_resumes():
    """results.json of earlier versions has no ``mode``: it meant mode=train."""
    from zoft.rundir import differences

    old = {"model": {"name": "tiny-opt"}, "optimizer": {"name": "mezo", "lr": 1e-3}}
    assert differences(old, {**old, "mode": {"name": "train"}}) == []
    assert differences(old, {**old, "mode": {"name": "kernel"}}) == ["mode.name: 'train' -> 'kernel'"]


# ------------------------------------------------- runs you can find: one folder, resume=<folder>


def test_the_run_folder_is_decided_once_and_handed_to_hydra(tmp_path):
    # The clock is read once (to the microsecond here): the folder the check creates is Hydra's.
    argv = preflight([f"hydra.run.dir={tmp_path}/runs/${{now:%H-%M-%S-%f}}"], CONF)
    pinned = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    assert len(pinned) == 1 and "${" not in pinned[0]
    assert [str(p) for p in (tmp_path / "runs").iterdir()] == pinned


def test_output_dir_moves_the_hydra_files_and_the_log_too(tmp_path):
    argv = preflight([f"output_dir={tmp_path / 'x'}"], CONF)
    assert f"hydra.run.dir={tmp_path / 'x'}" in argv


def test_output_dir_and_another_typed_run_dir_contradict(tmp_path):
    with pytest.raises(Stop) as stop:
        preflight([f"output_dir={tmp_path / 'x'}", f"hydra.run.dir={tmp_path / 'y'}"], CONF)
    assert stop.value.code == 2 and "name different folders" in stop.value.message
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert f"hydra.run.dir={tmp_path / 'x'}" in preflight([f"output_dir={tmp_path / 'x'}",
                                                          f"hydra.run.dir={tmp_path / 'x'}"], CONF)


def test_launcher_slurm_without_multirun_says_what_it_does(tmp_path):
    with pytest.raises(Stop) as stop:
        preflight(["launcher=slurm", f"hydra.run.dir={tmp_path / 'run'}"], CONF)
    assert stop.value.code == 2 and "without -m this run would start here, on this machine" in stop.value.message
    assert not (tmp_path / "run").exists()


def test_resume_last_continues_the_latest_run_of_the_same_config(finished, tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    older, newer, other = root / "day" / "older", root / "day" / "newer", root / "day" / "other"
    for folder in (older, newer, other):
        shutil.copytree(finished, folder)
    record = json.loads((other / "results.json").read_text())
    record["config"]["optimizer"]["lr"] = 0.5  # the newest folder holds another config
    (other / "results.json").write_text(json.dumps(record))
    os.utime(older / "results.json", (1e9, 1e9))
    template = f"hydra.run.dir={root}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}"
    argv = preflight([*SHORT, "trainer.max_steps=30", "resume=last", template], CONF)
    assert f"hydra.run.dir={newer}" in argv and f"resume={newer}" in argv  # extends it to 30 steps
    with pytest.raises(Stop) as stop:  # the same length: the completed run is a no-op
        preflight([*SHORT, "trainer.max_steps=20", "resume=last", template], CONF)
    assert stop.value.code == 0 and f"{newer} already holds this completed run" in stop.value.message
    with pytest.raises(Stop) as stop:
        preflight([*SHORT, "trainer.max_steps=20", "seed=3", "resume=last", template], CONF)
    assert stop.value.code == 2 and f"resume=last: no run of this config under {root}/" in stop.value.message
    assert sorted(p.name for p in root.iterdir()) == ["day"]  # nothing created


def test_resume_names_the_folder_to_continue(finished):
    argv = preflight([*SHORT, "trainer.max_steps=30", f"resume={finished}"], CONF)
    assert f"hydra.run.dir={finished}" in argv
    with pytest.raises(Stop) as stop:
        preflight([*SHORT, f"resume={finished / 'nope'}"], CONF)
    assert stop.value.code == 2 and "no such run folder" in stop.value.message
    assert not (finished / "nope").exists()
    with pytest.raises(Stop) as stop:  # a sweep has one folder per job
        preflight(["-m", "optimizer.lr=1e-3,1e-4", f"resume={finished}"], CONF)
    assert stop.value.code == 2 and "hydra.sweep.dir=<its folder>" in stop.value.message


def test_the_resume_command_names_the_folder_and_the_typed_overrides():
    from omegaconf import OmegaConf

    from zoft.frontend import resume_command

    hydra_cfg = OmegaConf.create({"overrides": {
        "hydra": ["hydra.mode=RUN", "hydra.run.dir=/o/x", "hydra.job.chdir=false"],
        "task": ["task=sst2", "optimizer.lr=1e-5", "resume=last"]}})
    assert resume_command("train.py", hydra_cfg, Path("/o/2026-12-06/04-37-34")) == \
        "python train.py hydra.job.chdir=false task=sst2 optimizer.lr=1e-5 resume=/o/2026-12-06/04-37-34"
    # A folder name that Hydra would split at its commas is quoted for Hydra, then for the shell.
    command = resume_command("train.py", hydra_cfg, Path("/o/0_a=1,b=2"))
    assert command.endswith(""" 'resume="/o/0_a=1,b=2"'""") and shlex.split(command)[-1] == 'resume="/o/0_a=1,b=2"'


def test_a_sweep_job_folder_resumes_with_the_printed_quoting(finished, tmp_path_factory):
    """A job folder's name has ',' and '=': the printed command passes Hydra's grammar and resumes
    it; typed unquoted, the command stops naming the quoting instead of Hydra's grammar error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from zoft.frontend import resume_command

    job = tmp_path_factory.mktemp("sweep") / "0_optimizer.lr=1e-3,seed=1"
    shutil.copytree(finished, job)
    hydra_cfg = OmegaConf.create({"overrides": {"hydra": [], "task": [*SHORT, "trainer.max_steps=30"]}})
    command = resume_command("train.py", hydra_cfg, job)
    argv = preflight(shlex.split(command)[2:], CONF)
    values = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(argv)}
    assert values["resume"] == str(job) and values["hydra.run.dir"] == str(job)
    with pytest.raises(Stop) as stop:
        preflight([*SHORT, f"resume={job}"], CONF)
    assert stop.value.code == 2 and f"""'resume="{job}"'""" in stop.value.message
    assert sorted(p.name for p in job.parent.iterdir()) == [job.name]  # nothing created


def test_dry_run_checks_the_resume_folder_as_a_real_run_does(finished, tmp_path, monkeypatch):
    from zoft.dry_run import dry_run

    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    missing = f"resume={tmp_path / 'no' / 'such'}"
    with pytest.raises(Stop) as real:
        preflight([*SHORT, missing], CONF)
    with pytest.raises(Stop) as dry:
        dry_run([*SHORT, missing], CONF)
    assert dry.value.code == real.value.code == 2 and dry.value.message == real.value.message
    assert "no such run folder" in dry.value.message
    assert f"it would continue {finished}" in dry_run([*SHORT, "trainer.max_steps=30", f"resume={finished}"], CONF)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_resume_last_looks_under_the_typed_run_dir_in_the_run_too(finished, tmp_path_factory, monkeypatch):
    """train.py's check and :func:`zoft.run.resolve_run_dir` find ``resume=last`` with one helper,
    under the fixed part of a typed ``hydra.run.dir`` (not ``outputs/``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from zoft.run import resolve_run_dir

    root = tmp_path_factory.mktemp("x")
    job = root / "day" / "12-00-00"
    shutil.copytree(finished, job)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no outputs/ here
    overrides = [*SHORT, "trainer.max_steps=20", "resume=last",
                 f"hydra.run.dir={root}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        config = json.loads((job / "results.json").read_text())["config"]
        assert resolve_run_dir(cfg, config) == job
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    with pytest.raises(Stop) as stop:  # the same folder for train.py: a completed run, a no-op
        preflight(overrides, CONF)
    assert stop.value.code == 0 and f"{job} already holds this completed run" in stop.value.message


@pytest.mark.slow
def test_ctrl_c_prints_the_command_that_resumes_it_in_its_default_folder(tmp_path, straight_run):
    """The default folder outputs/<date>/<time>: the folder is printed at the start, Ctrl-C prints
    the command that resumes, that command continues to the straight run, and no other folder
    (no empty sibling) was made."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *KILL_RUN], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = iter(proc.stdout.readline, "")
    run_dir = Path(next(line for line in lines if line.startswith("run folder: ")).split(": ", 1)[1].strip())
    wait_for_step(run_dir, 30, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-2000:]
    command = next(line for line in err.splitlines() if line.startswith("to resume: ")).split(": ", 1)[1]
    assert command.endswith(f"resume={run_dir}")
    again = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count(f"run folder: {run_dir}") == 2  # at the start and at the end
    assert _assert_same_run(run_dir, straight_run, "ctrl-c")["resumed"] == 1
    assert [p for p in (tmp_path / "outputs").rglob("*") if p.parent.parent == tmp_path / "outputs"] == [run_dir]
