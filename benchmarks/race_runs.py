"""One run of the zeroth-order race, and a pool of worker processes that runs many.

A run is one ``zoft.run.run`` of an estimator at one LR and one seed, for a fixed budget of forward
passes, evaluated on dev every ``100 // forward passes per step`` steps (at least 1), so the curve is
read at least every 100 forward passes. What a run costs is counted in forward passes as the
estimator spends them (the loop's own count); AdamW's backprop step counts as
``BACKPROP_FORWARD_EQUIVALENTS`` forward passes (a forward and a backward at twice its cost).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
EVAL_EVERY_FORWARD = 100  # dev evaluations at least this often, in forward passes
BACKPROP_FORWARD_EQUIVALENTS = 3  # AdamW: 1 forward + 1 backward counted as 2 forwards


@dataclass(frozen=True)
class RunSpec:
    """What one run needs; ``settings`` are the estimator's optimizer.* overrides."""

    name: str
    lr: float
    seed: int
    budget: int  # forward passes (forward-equivalents for AdamW)
    base: tuple[str, ...]  # model/task/trainer overrides of the setup
    settings: tuple[str, ...]
    run_dir: str


@dataclass
class Outcome:
    """A finished run: its dev curve and the numbers of the checkpoint it kept."""

    spec: RunSpec
    forward_per_step: int
    steps: int = 0
    forward_passes: int = 0  # spent, as counted by the loop (x3 for AdamW)
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (forward passes, dev loss, dev acc)
    dev_loss: float = float("inf")  # the kept checkpoint: lowest dev loss within the budget
    dev_acc: float = 0.0
    test_acc: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the worker's process: the wall time on an idle core
    diverged: Optional[str] = None  # why the run stopped early: diverged, or failed with an error


def compose(overrides: list[str]):
    """zoft's config with ``overrides``, composed as the command line would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from zoft.config.store import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def forward_per_step(name: str, settings: tuple[str, ...]) -> int:
    """Forward passes of one step of ``name`` with ``settings`` (AdamW: its forward-equivalents)."""
    import torch

    from zoft.optim.build import build_optimizer

    if name == "adam":
        return BACKPROP_FORWARD_EQUIVALENTS
    cfg = compose([f"optimizer={name}", *(s for s in settings if "{" not in s)])  # placeholders: no cost
    probe = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optimizer, list(probe.named_parameters()), seed=0, model=probe)
    return int(opt.forward_passes_per_step)


def eval_every(per_step: int) -> int:
    """Steps between dev evaluations: at least one every EVAL_EVERY_FORWARD forward passes."""
    return max(EVAL_EVERY_FORWARD // per_step, 1)


def run_overrides(spec: RunSpec, per_step: int) -> list[str]:
    steps = max(spec.budget // per_step, 1)
    every = eval_every(per_step)
    settings = [s.replace("{steps/5}", str(max(steps // 5, 1))) for s in spec.settings]  # SubZero's T0
    return [*spec.base, f"optimizer={spec.name}", f"optimizer.lr={spec.lr}", *settings, f"seed={spec.seed}",
            f"trainer.max_steps={steps}", f"trainer.eval_steps={every}", f"trainer.log_steps={every}",
            "trainer.eval_before_training=true", "trainer.progress_bar=false", "trainer.checkpoint_steps=0",
            "trainer.select_by=loss", "trainer.on_divergence=stop", "resume=false", "redo=true",
            f"+output_dir={spec.run_dir}"]


def execute(spec: RunSpec) -> Outcome:
    """Run ``spec`` in this process and read its curve back from metrics.jsonl."""
    from zoft.errors import DivergenceError
    from zoft.run import run

    per_step = forward_per_step(spec.name, spec.settings)
    outcome = Outcome(spec, per_step)
    cfg = compose(run_overrides(spec, per_step))
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            results = run(cfg)
    except DivergenceError as err:  # the loop's divergence guard: the run loses
        outcome.diverged = str(err).splitlines()[0][:200]
    except Exception as err:  # noqa: BLE001 - one broken estimator must not end the race: reported
        outcome.diverged = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    outcome.seconds = time.perf_counter() - start
    outcome.cpu_seconds = time.process_time() - cpu_start
    read_curve(outcome, Path(spec.run_dir) / "metrics.jsonl")
    if outcome.diverged is None:
        m = results["metrics"]
        outcome.dev_loss, outcome.dev_acc, outcome.test_acc = m["dev_loss"], m["dev_accuracy"], m["test_accuracy"]
    return outcome


def read_curve(outcome: Outcome, metrics: Path) -> None:
    """(forward passes, dev loss, dev accuracy) at each evaluation, the one before training at 0.

    ZO runs take the loop's forward-pass count of the step row logged with each evaluation;
    AdamW's loop counts one pass per step, so its steps are converted to forward-equivalents.
    """
    spent = {0: 0}
    for line in metrics.read_text().splitlines() if metrics.is_file() else ():
        row = json.loads(line)
        if "forward_passes" in row:
            spent[row["step"]] = row["forward_passes"]
            if outcome.spec.name == "adam":
                spent[row["step"]] = row["step"] * BACKPROP_FORWARD_EQUIVALENTS
            outcome.steps = max(outcome.steps, row["step"])
        elif "dev_loss" in row and row.get("step") in spent:
            outcome.curve.append((spent[row["step"]], row["dev_loss"], row["dev_accuracy"]))
    outcome.forward_passes = spent[outcome.steps]
    results = metrics.parent / "results.json"
    initial = json.loads(results.read_text()).get("metrics", {}) if results.is_file() else {}
    if "initial_dev_loss" in initial:  # the evaluation before training
        outcome.curve.append((0, initial["initial_dev_loss"], initial["initial_dev_accuracy"]))
    outcome.curve.sort()


def _init_worker() -> None:
    import torch

    os.environ.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars of every run


def run_all(specs: list[RunSpec], workers: int, on_done=None) -> list[Outcome]:
    """Run ``specs`` on ``workers`` processes (one thread each); outcomes in the order of ``specs``."""
    import multiprocessing

    if workers <= 1:
        _init_worker()
        outcomes = []
        for spec in specs:
            outcomes.append(execute(spec))
            if on_done:
                on_done(outcomes[-1])
        return outcomes
    by_dir: dict[str, Outcome] = {}
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for outcome in pool.imap_unordered(execute, specs):
            by_dir[outcome.spec.run_dir] = outcome
            if on_done:
                on_done(outcome)
    return [by_dir[s.run_dir] for s in specs]
