"""logger=wandb: one run per job, finished even on error, offline without a key or network,
WANDB_MODE=disabled respected, and no wandb process left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

from conftest import FAST, ROOT, compose_config
from http_helpers import LoopbackServer, clear_proxies, closed_port_url
from zoft.loggers import wandb_logger
from zoft.loggers.wandb_logger import choose_mode, flatten, summary_of, train_row_to_wandb
from zoft.run import run


class FakeRun:
    def __init__(self, calls):
        self.calls = calls
        self.summary = {}

    def log(self, data, step):
        self.calls["log"].append((step, data))

    def finish(self, exit_code):
        self.calls["finish"].append(exit_code)


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = {"init": [], "log": [], "finish": [], "teardown": 0}
    module = types.SimpleNamespace(Settings=lambda **kw: kw)

    def init(**kwargs):
        calls["init"].append(kwargs)
        calls["run"] = FakeRun(calls)
        return calls["run"]

    def teardown():
        calls["teardown"] += 1

    module.init, module.teardown = init, teardown
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables wandb for other tests
    return calls


def test_one_run_per_job_with_flat_config_step_metrics_and_summary(tmp_path, fake_wandb):
    cfg = compose_config(FAST + ["logger=wandb", "logger.mode=offline", "logger.tags=[a,b]",
                                 "trainer.log_steps=5", f"output_dir={tmp_path}"])
    results = run(cfg)
    (init,) = fake_wandb["init"]
    assert init["mode"] == "offline" and init["project"] == "zoft" and init["tags"] == ["a", "b"]
    assert init["dir"] == str(tmp_path) and init["name"] == tmp_path.name
    assert init["config"]["optimizer.lr"] == cfg.optimizer.lr and init["config"]["seeds.run"] == 42
    train = [(s, d) for s, d in fake_wandb["log"] if "train/loss" in d]
    dev = [(s, d) for s, d in fake_wandb["log"] if "dev/accuracy" in d]
    assert [s for s, _ in train] == [5, 10, 15, 20, 25, 30]
    assert [s for s, _ in dev] == [15, 30]
    for key in ("train/lr", "train/forward_passes", "train/examples_per_s", "train/projected_grad",
                "train/peak_memory_mb"):
        assert key in train[0][1], key
    summary = fake_wandb["run"].summary
    assert summary["test/accuracy"] == results["metrics"]["test_accuracy"]
    assert summary["status"] == "completed" and summary["training/steps"] == 30
    assert fake_wandb["finish"] == [0] and fake_wandb["teardown"] == 1


def test_a_failing_job_still_finishes_its_run(tmp_path, fake_wandb):
    # num_train beyond the data fails after the logger started (during data loading).
    cfg = compose_config(FAST + ["logger=wandb", "logger.mode=offline", "task.num_train=100000",
                                 f"output_dir={tmp_path}"])
    with pytest.raises(ValueError):
        run(cfg)
    assert fake_wandb["finish"] == [1] and fake_wandb["teardown"] == 1
    assert fake_wandb["run"].summary["status"] == "failed"
    assert "num_train=100000" in fake_wandb["run"].summary["error"]


def test_disabled_mode_is_respected_with_the_real_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run(compose_config(FAST + ["logger=wandb", "logger.mode=online", f"output_dir={tmp_path}"]))
    assert not (tmp_path / "wandb").exists()


def test_bad_logger_values_are_named():
    from zoft.config.validate import ConfigError, validate

    with pytest.raises(ConfigError, match="logger.mode='sometimes'"):
        validate(compose_config(["logger.mode=sometimes"]))


def test_mode_choice(tmp_path, monkeypatch):
    clear_proxies(monkeypatch)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    mode, why = choose_mode(None)
    assert mode == "offline" and "no API key" in why
    assert choose_mode("disabled") == ("disabled", None)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())  # nothing listens there: connection refused
    mode, why = choose_mode(None)
    assert mode == "offline" and "not reachable" in why
    with LoopbackServer() as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        assert choose_mode(None) == ("online", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode("online") == ("disabled", None)


@pytest.mark.parametrize("variable", ["http_proxy", "WANDB_HTTP_PROXY"])
def test_the_server_is_reached_through_a_proxy(monkeypatch, variable):
    """As wandb does: its own proxy setting, else the standard variables."""
    clear_proxies(monkeypatch)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())  # reachable only through the proxy
    with LoopbackServer() as proxy:
        monkeypatch.setenv(variable, proxy.url)
        assert choose_mode(None) == ("online", None)
    assert proxy.requests[0][1].startswith(os.environ["WANDB_BASE_URL"])


def test_key_from_the_netrc_file_named_by_NETRC(tmp_path, monkeypatch):
    """wandb reads the file NETRC names (not only ~/.netrc)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    netrc_file = tmp_path / "elsewhere" / "netrc"
    netrc_file.parent.mkdir()
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert wandb_logger.has_api_key()
    monkeypatch.setenv("NETRC", str(tmp_path / "elsewhere" / "missing"))
    assert not wandb_logger.has_api_key()


def test_key_from_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert wandb_logger.has_api_key()


def test_row_and_summary_naming():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    assert train_row_to_wandb({"step": 4, "loss": 0.5, "dev_accuracy": 0.9, "best": True}) == {
        "train/loss": 0.5, "dev/accuracy": 0.9, "dev/best": 1}
    summary = summary_of({"status": "completed", "metrics": {"initial_dev_accuracy": 0.5, "test_f1": 0.7}})
    assert summary == {"status": "completed", "initial_dev/accuracy": 0.5, "test/f1": 0.7}


def _processes_with(marker: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_offline_multirun_leaves_runs_on_disk_and_no_process_behind(tmp_path):
    """The real wandb, no key and no network: each job logs offline and its service ends."""
    marker = f"ZOFT_WANDB_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "none"), OMP_NUM_THREADS="1",
               ZOFT_WANDB_TEST=marker.split("=")[1], WANDB_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "optimizer.lr=1e-3,1e-4", "logger=wandb", *FAST,
         "trainer.max_steps=6", "trainer.log_steps=2", "trainer.eval_steps=3", f"hydra.sweep.dir={tmp_path / 'mr'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("logging offline to") == 2  # one clear line per job
    assert "Traceback" not in output
    jobs = sorted(p for p in (tmp_path / "mr").iterdir() if (p / "results.json").exists())
    assert len(jobs) == 2
    for job in jobs:
        (record,) = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        blob = record.read_bytes()
        for text in (b"train/loss", b"dev/accuracy", b"test/accuracy", b"optimizer.lr", str(tmp_path / "mr").encode()):
            assert text in blob, text
    deadline = time.time() + 10
    while _processes_with(marker.split("=")[1]) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker.split("=")[1]) == []
