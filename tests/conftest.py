"""Shared fixtures. No test touches the network: the Hub and wandb are forced offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from zoft.config.optimizer_checks import normalise
from zoft.config.store import register_configs

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

register_configs()

# Numerics probes (see docs/testing.md): ZOFT_TEST_THREADS=1|2 runs every test with that many
# intra-op threads, and ZOFT_TEST_DTYPE=float64 runs the config-composed tiny models in float64,
# so that a learning check can be shown to hold whatever rounding the machine's kernels do.
# By default every test runs with one intra-op thread: the tiny models gain nothing from more,
# and on a loaded 2-core machine each split op waits for a busy core (a 7x slowdown measured).
torch.set_num_threads(int(os.environ.get("ZOFT_TEST_THREADS", "1")))
TEST_DTYPE = os.environ.get("ZOFT_TEST_DTYPE", "float32")


def compose_config(overrides: list[str] | None = None):
    """Compose ``conf/config.yaml`` with overrides, as ``train.py`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    normalise(cfg, list(overrides or []))  # as zoft.run.run and the command-line checks do
    return cfg


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


# A fast training setup on the tiny model, shared by end-to-end tests.
FAST = [
    "task.num_train=32",
    "task.num_dev=16",
    "task.num_test=16",
    "trainer.max_steps=30",
    "trainer.eval_steps=15",
    "trainer.batch_size=8",
    "trainer.progress_bar=false",
    "trainer.eval_before_training=false",
    f"model.dtype={TEST_DTYPE}",
]
# The 2-layer, hidden-64 OPT architecture (tiny-opt's yaml has the demo's 1-layer, hidden-32 one):
# the method tests' margins were measured on it.
TINY64 = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=4", "model.tiny.ffn_dim=128"]
if os.environ.get("ZOFT_TEST_THREADS"):
    FAST.append(f"trainer.cpu_threads={os.environ['ZOFT_TEST_THREADS']}")


# Tests must write only under their tmp_path: anything that appears in the checkout's own outputs/
# or multirun/ during the session is a leak (the documented-commands check once left one empty run
# folder per command there). The controller process compares the entries before and after.
_RUN_ROOTS = ("outputs", "multirun")
_BEFORE = pytest.StashKey[set]()
_LEAKED = pytest.StashKey[list]()


def _run_entries() -> set[Path]:
    """Every entry one or two levels below outputs/ and multirun/ (run folders are <date>/<time>;
    a run outside Hydra writes outputs/manual/)."""
    return {p for root in _RUN_ROOTS for pattern in ("*", "*/*") for p in (ROOT / root).glob(pattern)}


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = _run_entries()


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks once
        return
    leaked = sorted(_run_entries() - session.config.stash[_BEFORE])
    session.config.stash[_LEAKED] = leaked
    if leaked and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaked = config.stash.get(_LEAKED, [])
    if leaked:
        names = ", ".join(str(p.relative_to(ROOT)) for p in leaked[:5])
        terminalreporter.write_line(f"error: the tests left {len(leaked)} entries in the checkout's outputs/ or "
                                    f"multirun/ (they must write under tmp_path): {names}", red=True)
