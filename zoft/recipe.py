"""The recipe: what a run does once its folder is taken, read top to bottom.

Setup steps, in order (each small, each a function below)::

    seed, threads  ->  data  ->  model  ->  method  ->  objective

then one runner, chosen by the config (:func:`runner_for`):

* ``evaluate``: zero-shot and in-context learning (no weights change);
* ``fit``: a closed-form fit alone (linear probing), then the final evaluation;
* ``train``: (the closed-form fit, for LP-then-MeZO,) the training loop, the final evaluation;
* ``kernel``: the eNTK kernel view (``mode=kernel``), no gradient steps.

Every runner fills the same :class:`zoft.results.RunResults`; ``zoft.run`` writes it.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from zoft import distributed
from zoft.methods.io import save_adapted
from zoft.config.choices import EVAL_ONLY
from zoft.methods.registry import CLOSED_FORM_FITS, Named, apply_method
from zoft.models.loader import LoadedModel, check_model_available, load_model, resolve_device
from zoft.objectives.base import EvalResult
from zoft.objectives.build import attach_objective_head, build_objective
from zoft.optim.build import build_optimizer, build_scheduler, is_zeroth_order
from zoft.optim.trajectory import TrajectoryWriter
from zoft.outputs import write_jsonl
from zoft.results import ResultsFile, RunResults
from zoft.sweep_summary import job_label
from zoft.tasks import TaskSpec, get_task
from zoft.examples import TaskData
from zoft.tasks.data import load_task_data
from zoft.tasks.readers import DataFileError
from zoft.tasks.sampling import demo_sets
from zoft.train.checkpoint_policy import CheckpointPolicy
from zoft.train.closures import StepClosures
from zoft.train.loop import Trainer, total_steps
from zoft.train.parts import TrainParts
from zoft.train.precision import PrecisionPlan, plan_precision

log = logging.getLogger("zoft")


@dataclass
class Setup:
    """What the setup steps built, handed to a runner."""

    cfg: DictConfig
    run_dir: Path
    results: RunResults
    results_file: ResultsFile
    parallel: distributed.Parallel
    resume: bool
    on_log: Optional[Callable[[dict], None]]
    spec: TaskSpec
    data: TaskData
    precision: PrecisionPlan
    loaded: LoadedModel
    named: Named
    objective: object  # a zoft.objectives objective

    def evaluate(self, items: Sequence, split: str) -> EvalResult:
        return self.objective.evaluate(self.loaded.model, items, self.cfg.trainer.eval_batch_size, desc=split)


@dataclass
class PreparedSplits:
    """The splits encoded by the objective (train items carry their training targets)."""

    train: list
    dev: list
    test: list


# ------------------------------------------------------------------------------- setup steps
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_cpu_threads(cfg: DictConfig) -> None:
    """``trainer.cpu_threads`` intra-op threads; null keeps torch's default (one per core),
    except for the tiny models built in code: their matrices are too small to split, and on a
    loaded machine every split op waits for a busy core (steps ran 10-25x slower on 2 cores)."""
    threads = cfg.trainer.cpu_threads
    if threads is None and cfg.model.path is None and "OMP_NUM_THREADS" not in os.environ:
        threads = 1
    if threads:
        torch.set_num_threads(threads)


def setup_data(cfg: DictConfig, results: RunResults) -> tuple[TaskSpec, TaskData]:
    """The task's splits. An unavailable model fails here in seconds, before any data work, and
    data errors surface before the model is loaded."""
    spec = get_task(cfg.task.name)
    check_model_available(cfg.model)
    data = load_task_data(spec, cfg.task)
    check_demo_pool(cfg, data)
    results.data = {"sources": data.sources,
                    "sizes": {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)}}
    return spec, data


def demo_count(cfg: DictConfig) -> int:
    """Demonstrations per test example: ``method.num_demos`` for ICL, none otherwise."""
    return cfg.method.num_demos if cfg.method.name == "icl" else 0


def check_demo_pool(cfg: DictConfig, data: TaskData) -> None:
    """ICL draws its demonstrations from the train split, which zero-shot may lack (a folder with
    only the test split): say so before the model loads."""
    num_demos = demo_count(cfg)
    if num_demos and not data.pool:
        raise DataFileError(f"method=icl draws {num_demos} demonstrations per test example from the task's "
                            f"train split, and task.data_dir={cfg.task.data_dir!r} has no train file; add it, "
                            "or run method=zero-shot")


def setup_model(cfg: DictConfig, data: TaskData) -> tuple[LoadedModel, PrecisionPlan]:
    """The model in the dtype the precision plan asks for; a seq-cls head gets one output per
    class (the candidates of a classification task)."""
    num_labels = len(data.train[0].candidates) if cfg.model.kind == "seq-cls" and data.train else None
    precision = plan_precision(cfg.trainer.precision, cfg.model.dtype, resolve_device(cfg.model.device))
    if precision.notice:
        log.warning(precision.notice)
    return load_model(cfg.model, num_labels=num_labels, dtype=precision.load_dtype), precision


def setup_method(cfg: DictConfig, loaded: LoadedModel, results: RunResults) -> Named:
    """Adapt the model for ``cfg.method`` (adapters, freezing) and count what trains."""
    named = apply_method(loaded.model, cfg.method, loaded.family)
    trainable = sum(p.numel() for _, p in named)
    total = sum(p.numel() for p in loaded.model.parameters())
    results.parameters = {"trainable": trainable, "total": total}
    log.info("model %s: %d parameters, %d trainable (method=%s)", cfg.model.name, total, trainable, cfg.method.name)
    return named


def build_setup(cfg: DictConfig, run_dir: Path, results: RunResults, results_file: ResultsFile,
                parallel: distributed.Parallel, resume: bool, on_log=None,
                on_data: Optional[Callable[[TaskData], None]] = None) -> Setup:
    """Every setup step, in order. ``on_data(data)`` runs once the splits are drawn, before the
    model loads (the run checks and announces the sample sizes it really got)."""
    seed_everything(cfg.seed)
    set_cpu_threads(cfg)
    spec, data = setup_data(cfg, results)
    if on_data is not None:
        on_data(data)
    loaded, precision = setup_model(cfg, data)
    attach_objective_head(cfg, spec, loaded)  # its parameters exist before the method picks what trains
    named = setup_method(cfg, loaded, results)
    objective = build_objective(cfg, spec, loaded, data)
    return Setup(cfg, run_dir, results, results_file, parallel, resume, on_log, spec, data, precision,
                 loaded, named, objective)


# -------------------------------------------------------------------------------- runners
def runner_for(cfg: DictConfig) -> str:
    """Which runner a config asks for: ``kernel``, ``evaluate``, ``fit`` or ``train``."""
    if cfg.mode.name == "kernel":
        return "kernel"
    if cfg.method.name in EVAL_ONLY:
        return "evaluate"
    fit = CLOSED_FORM_FITS.get(cfg.method.name)
    if fit is not None and not fit.trains_after(cfg.method):
        return "fit"
    return "train"


def run_recipe(s: Setup) -> None:
    """Run the runner the config asks for on a built setup."""
    RUNNERS[runner_for(s.cfg)](s)


def run_kernel(s: Setup) -> None:
    """The kernel view (eNTK): no gradient steps, see :mod:`zoft.kernel`."""
    from zoft.kernel.pipeline import run_from_objective  # scipy/sklearn solvers load only for this mode

    s.results.kernel = run_from_objective(s.cfg, s.loaded, s.objective, s.data, s.run_dir, s.results.metrics)
    print_summary(s.cfg, s.results.metrics)


def run_evaluation(s: Setup) -> None:
    """Zero-shot and in-context learning (the original's large_models/run.py): no training. ICL
    gives every test example its own ``method.num_demos`` demonstrations, resampled from the
    whole train split with seeds ``randint(0, 10000)`` drawn under ``task.sample_seed``. The dev
    split is scored only zero-shot (its examples come from the train split, so demos could
    contain them)."""
    cfg, data = s.cfg, s.data
    num_demos = demo_count(cfg)
    if num_demos:
        demos = demo_sets(data.pool, cfg.task.sample_seed, len(data.test), num_demos)
        s.results.icl = {"num_demos": num_demos, "demo_seed": cfg.task.sample_seed, "pool": len(data.pool)}
        log.info("ICL: %d demonstrations per test example, resampled from %d train examples", num_demos, len(data.pool))
        test_items = s.objective.prepare(data.test, train=False, demos=demos)
    else:
        if data.dev:
            dev = s.evaluate(s.objective.prepare(data.dev, train=False), "dev")
            s.results.metrics.update(_prefixed("dev", dev.metrics))
            _write_predictions(s, "dev", dev)
        test_items = s.objective.prepare(data.test, train=False)
    test = s.evaluate(test_items, "test")
    s.results.metrics.update(_prefixed("test", test.metrics))
    _write_predictions(s, "test", test)
    if s.parallel.is_main:
        print_summary(cfg, s.results.metrics)


def run_fit(s: Setup) -> None:
    """A closed-form fit (linear probing) and the final evaluation."""
    splits = prepare_splits(s)
    evaluate_before_training(s, splits)
    closed_form_fit(s, splits)
    final_evaluation(s, splits)


def run_training(s: Setup) -> None:
    """The closed-form fit when the method has one (LP-then-MeZO), the loop, the final evaluation."""
    splits = prepare_splits(s)
    evaluate_before_training(s, splits)
    start_dev = None
    if s.cfg.method.name in CLOSED_FORM_FITS:
        closed_form_fit(s, splits)
        if splits.dev:  # the probe alone, before the loop changes it: a best-checkpoint candidate
            start_dev = s.evaluate(splits.dev, "dev")
            s.results.pre_training.update(_prefixed("dev", start_dev.metrics))
    trainer = build_trainer(s, total_steps(s.cfg.trainer, len(splits.train)))
    outcome = trainer.fit(splits.train, splits.dev, resume=s.resume, start_dev=start_dev)
    s.results.training = {"steps": outcome.steps, "best_step": outcome.best_step, "last_loss": outcome.last_loss,
                          "forward_passes": outcome.forward_passes, "seconds": round(outcome.seconds, 3)}
    final_evaluation(s, splits)


RUNNERS: dict[str, Callable[[Setup], None]] = {
    "kernel": run_kernel, "evaluate": run_evaluation, "fit": run_fit, "train": run_training,
}


# ------------------------------------------------------------------------- runner steps
def prepare_splits(s: Setup) -> PreparedSplits:
    dev = s.objective.prepare(s.data.dev, train=False)
    test = s.objective.prepare(s.data.test, train=False)
    return PreparedSplits(train=s.objective.prepare(s.data.train, train=True), dev=dev, test=test)


def evaluate_before_training(s: Setup, splits: PreparedSplits) -> None:
    """``initial_*`` metrics (``trainer.eval_before_training``); a resumed attempt keeps the
    first attempt's, so they are written at once."""
    if s.resume or not s.cfg.trainer.eval_before_training:
        return
    for split, items in (("dev", splits.dev), ("test", splits.test)):
        if items:
            s.results.metrics.update(_prefixed(f"initial_{split}", s.evaluate(items, split).metrics))
    log.info("before training: %s", _fmt(s.results.initial_metrics()))
    s.results_file.write(s.results)


def closed_form_fit(s: Setup, splits: PreparedSplits) -> None:
    fit = CLOSED_FORM_FITS[s.cfg.method.name]
    s.results.pre_training = fit.fit(s.loaded, s.objective, splits.train, s.cfg.method)


def build_trainer(s: Setup, steps: int) -> Trainer:
    """Optimizer (rebuilt on the shards under FSDP), trajectory recording, scheduler, loop."""
    cfg, model = s.cfg, s.loaded.model
    optimizer = build_optimizer(cfg.optimizer, s.named, seed=cfg.seed, model=model)
    if s.parallel.active:
        s.named = distributed.wrap(s.parallel, model, s.named, cfg, zeroth_order=is_zeroth_order(optimizer))
        s.results.distributed = {"strategy": s.parallel.strategy, "world_size": s.parallel.world_size,
                                 "mixed_precision": s.parallel.mixed_precision}
        if s.parallel.strategy == "fsdp":  # the parameters are now DTensor shards
            optimizer = build_optimizer(cfg.optimizer, s.named, seed=cfg.seed, model=model)
    if is_zeroth_order(optimizer) and s.parallel.is_main:
        # (step, lr, g) per step: `zoft replay` rebuilds the weights from the base model.
        optimizer.attach_trajectory(TrajectoryWriter(s.run_dir / "trajectory.bin", optimizer,
                                                     [n for n, _ in s.named], s.results.config, resume=s.resume))
    scheduler = build_scheduler(optimizer, cfg.trainer.lr_scheduler, steps, cfg.trainer.warmup_steps)
    parts = TrainParts(model, s.objective, optimizer, scheduler, s.named)
    closures = StepClosures(parts, cfg.trainer.grad_accum, s.parallel, s.precision, cfg.optimizer.get("max_grad_norm"))
    # The resolved config goes into every last.pt: a resume under other settings is refused.
    checkpoints = CheckpointPolicy(parts, cfg.trainer, s.run_dir / "checkpoints", s.parallel,
                                   run_config=s.results.config)
    return Trainer(parts, cfg.trainer, s.run_dir, cfg.seed, closures=closures, checkpoints=checkpoints,
                   parallel=s.parallel, on_log=s.on_log)


def final_evaluation(s: Setup, splits: PreparedSplits) -> None:
    """Final numbers with the best weights (the paper evaluates test and dev after reloading),
    the saved model (``save_model``) and the test predictions."""
    if splits.dev:
        s.results.metrics.update(_prefixed("dev", s.evaluate(splits.dev, "dev").metrics))
    test = s.evaluate(splits.test, "test")
    s.results.metrics.update(_prefixed("test", test.metrics))
    if s.cfg.save_model:
        _save_model(s)
    _write_predictions(s, "test", test)
    if s.parallel.is_main:
        print_summary(s.cfg, s.results.metrics)


def _save_model(s: Setup) -> None:
    parallel, model = s.parallel, s.loaded.model
    state = parallel.full_state(list(model.named_parameters())) if parallel.strategy == "fsdp" else None
    if parallel.is_main:
        save_adapted(model, s.loaded.tokenizer, s.cfg.method, s.loaded.family, s.named, s.run_dir / "model",
                     state_dict=state)


def _write_predictions(s: Setup, split: str, result: EvalResult) -> None:
    if s.parallel.is_main:  # only rank 0 writes
        write_jsonl(s.run_dir / f"predictions_{split}.jsonl", result.predictions)


# ------------------------------------------------------------------------------ printing
def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def print_summary(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """The run's last lines: the task's main metric on dev and test, before -> after."""
    metric = "accuracy" if "test_accuracy" in metrics else next(
        (k.split("_", 1)[1] for k in metrics if k.startswith("test_") and k != "test_loss"), "loss")
    head = f"{cfg.task.name} / {cfg.model.name} / method={cfg.method.name}"
    if cfg.mode.name == "kernel":
        head += f" mode=kernel (kernel.formula={cfg.kernel.formula}, kernel.solver={cfg.kernel.solver})"
    elif cfg.method.name not in EVAL_ONLY:
        head += f" optimizer={cfg.optimizer.name}"
    label = job_label()  # a multirun job: which job this is
    lines = [f"{head} / {label}" if label else head]
    for split in ("dev", "test"):
        before = metrics.get(f"initial_{split}_{metric}")
        after = metrics.get(f"{split}_{metric}")
        if after is None:
            continue
        text = f"  {split} {metric}: "
        text += f"{before:.4f} before -> {after:.4f} after" if before is not None else f"{after:.4f}"
        lines.append(text)
    print("\n".join(lines), flush=True)
