"""One run, from a composed config to ``results.json``."""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from zoft.config.protocol import as_record, format_block, run_key, settle, typed_overrides
from zoft.config.schema import RunConfig
from zoft.config.validate import validate
from zoft import distributed
from zoft.errors import DivergenceError, Preempted, ZoftUserError
from zoft.loggers import NullLogger, start_logger
from zoft.methods.io import save_adapted
from zoft.methods.registry import EVAL_ONLY, PRE_TRAINING, apply_method
from zoft.models.loader import LoadedModel, check_model_available, load_model, resolve_device
from zoft.objectives.base import EvalResult
from zoft.objectives.build import build_objective
from zoft.optim.build import build_optimizer, build_scheduler, is_zeroth_order
from zoft.outputs import OutputWriteError, git_info, package_versions, write_json, write_jsonl
from zoft.rundir import Attempt, RunLock, clear_outputs, plan_attempt
from zoft.tasks.base import get_task
from zoft.tasks.data import load_task_data
from zoft.tasks.sampling import demo_sets
from zoft.train.loop import Trainer, total_steps
from zoft.train.precision import plan_precision

log = logging.getLogger("zoft")


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``output_dir`` if set, else Hydra's run folder, else ``outputs/manual``."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - not running under Hydra
        return Path("outputs/manual")


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


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, take the run folder, load data and model, train (unless evaluation-only),
    evaluate, write results.

    The config is validated before the folder is touched: a bad value never overwrites an
    earlier ``results.json``. The folder is then locked for the whole run, and the previous
    attempt in it (if any) decides what this one does: resume, nothing (a completed run with the
    same settings; ``redo=true`` runs it again), or refuse (different settings).
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    # The protocol table's lookups become plain values; each field remembers where it came from.
    protocol = settle(cfg, typed_overrides())
    run_dir = resolve_run_dir(cfg)
    main = distributed.is_main_process()  # under torchrun only rank 0 writes files
    config = OmegaConf.to_container(cfg, resolve=True)
    config["protocol"] = {"name": cfg.protocol.name}  # the table itself is in conf/protocol/
    try:
        validate(cfg)
    except ZoftUserError as err:
        if main:
            _record_rejected(run_dir, config, err)
        raise
    lock = RunLock(run_dir).acquire() if main else None
    try:
        attempt = plan_attempt(run_dir, config, cfg.resume, cfg.redo)
        if attempt.action == "done":
            print(attempt.message, flush=True)
            _print_summary(cfg, attempt.previous.get("metrics", {}))
            return attempt.previous
        if attempt.action == "fresh" and main:
            clear_outputs(run_dir)
        return _run_attempt(cfg, protocol, run_dir, config, attempt, main)
    finally:
        if lock is not None:
            lock.release()


def _run_attempt(cfg: DictConfig, protocol, run_dir: Path, config: dict[str, Any], attempt: Attempt,
                 main: bool) -> dict[str, Any]:
    """One attempt in a locked folder: results.json says ``running`` until it ends."""
    resume = attempt.action == "resume"
    previous = attempt.previous
    results: dict[str, Any] = {
        "status": "running",
        # a resumed attempt keeps the first attempt's evaluation before training
        "metrics": {k: v for k, v in previous.get("metrics", {}).items() if k.startswith("initial_")} if resume else {},
        "config": config,
        "protocol": {"table": cfg.protocol.name, "key": run_key(cfg).label(), "fields": as_record(protocol)},
        "seeds": {
            "run": cfg.seed,
            "data_sampling": cfg.task.sample_seed,
            "model_init": cfg.model.init_seed,
            "perturbation": cfg.optimizer.zo_seed if cfg.optimizer.zo_seed is not None else cfg.seed,
        },
        "versions": package_versions(),
        "git": git_info(),
        "run_dir": str(run_dir),
    }
    if resume:
        results["resumed"] = previous.get("resumed", 0) + 1
    results_path = run_dir / "results.json"
    if main:
        write_json(results_path, results)
    started = time.time()
    logger = None
    try:
        if main:
            print(format_block(cfg, protocol), flush=True)
        # Under torchrun only rank 0 logs (one wandb run per job).
        logger = start_logger(cfg, run_dir, results) if main else NullLogger()
        _execute(cfg, run_dir, results, resume, on_log=logger.log)
        results["status"] = "completed"
    except DivergenceError as err:
        results["status"] = "diverged"
        results["diverged_at_step"] = err.step
        results["error"] = {"type": type(err).__name__, "message": str(err)}
        raise
    except Preempted as err:
        # SIGINT (Ctrl-C) is the user's own stop; SIGTERM/SIGUSR1 come from a scheduler.
        results["status"] = "interrupted" if err.signal_name == "SIGINT" else "preempted"
        results[f"{results['status']}_at_step"] = err.step
        raise
    except KeyboardInterrupt:
        results["status"] = "interrupted"  # before the loop started: nothing to checkpoint yet
        raise
    except BaseException as err:
        results["status"] = "failed"
        results["error"] = {"type": type(err).__name__, "message": str(err),
                            "traceback": traceback.format_exc(limit=20)}
        raise
    finally:
        results["seconds"] = round(time.time() - started, 3)
        if main:
            _write_final(results_path, results)
        if logger is not None:  # one wandb run per job, ended even when the job failed
            logger.finish(results)
    return results


def _record_rejected(run_dir: Path, config: dict[str, Any], err: Exception) -> None:
    """A multirun job whose config is invalid still says so in its own (new, empty) folder, for
    the sweep summary and ``zoft report``. A folder that holds a results.json is never touched,
    and no folder is created."""
    path = run_dir / "results.json"
    if run_dir.is_dir() and not path.exists():
        write_json(path, {"status": "failed", "metrics": {}, "config": config,
                          "error": {"type": type(err).__name__, "message": str(err)}})


def _write_final(path: Path, results: dict[str, Any]) -> None:
    """The last write of results.json; when it fails (a full disk) the error that stopped the
    run is the one to report, and the previous results.json stays intact."""
    try:
        write_json(path, results)
    except OutputWriteError as err:
        if results["status"] == "completed":
            raise
        log.error("%s", err)


def _evaluate(loaded: LoadedModel, objective, items, batch_size: int, desc: str) -> EvalResult:
    return objective.evaluate(loaded.model, items, batch_size, desc=desc)


def _execute(cfg: DictConfig, run_dir: Path, results: dict[str, Any], resume: bool, on_log=None) -> None:
    parallel = distributed.setup(cfg)
    try:
        _execute_on(cfg, run_dir, results, resume, parallel, on_log)
    finally:
        parallel.close()


def _execute_on(cfg: DictConfig, run_dir: Path, results: dict[str, Any], resume: bool,
                parallel: distributed.Parallel, on_log=None) -> None:
    seed_everything(cfg.seed)
    set_cpu_threads(cfg)
    spec = get_task(cfg.task.name)
    check_model_available(cfg.model)  # an unavailable model fails in seconds, before data work
    data = load_task_data(spec, cfg.task)  # data errors surface before the model is loaded
    results["data"] = {"sources": data.sources, "sizes": {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)}}

    # A seq-cls head gets one output per class (the candidates of a classification task).
    num_labels = len(data.train[0].candidates) if cfg.model.kind == "seq-cls" and data.train else None
    precision = plan_precision(cfg.trainer.precision, cfg.model.dtype, resolve_device(cfg.model.device))
    if precision.notice:
        log.warning(precision.notice)
    loaded = load_model(cfg.model, num_labels=num_labels, dtype=precision.load_dtype)
    named = apply_method(loaded.model, cfg.method, loaded.family)
    n_trainable = sum(p.numel() for _, p in named)
    n_total = sum(p.numel() for p in loaded.model.parameters())
    results["parameters"] = {"trainable": n_trainable, "total": n_total}
    log.info("model %s: %d parameters, %d trainable (method=%s)", cfg.model.name, n_total, n_trainable, cfg.method.name)

    objective = build_objective(cfg, spec, loaded, data)
    bs = cfg.trainer.eval_batch_size
    metrics = results["metrics"]

    if cfg.optimizer.name == "kernel":  # the kernel view (eNTK): no gradient steps, see zoft.kernel
        from zoft.kernel.pipeline import run_from_objective

        results["kernel"] = run_from_objective(cfg, loaded, objective, data, run_dir, metrics)
        _print_summary(cfg, metrics)
        return

    if cfg.method.name in EVAL_ONLY:
        _evaluate_only(cfg, loaded, objective, data, run_dir, results, main=parallel.is_main)
        return

    dev_items = objective.prepare(data.dev, train=False)
    test_items = objective.prepare(data.test, train=False)

    train_items = objective.prepare(data.train, train=True)
    if not resume and cfg.trainer.eval_before_training:
        for name, items in (("dev", dev_items), ("test", test_items)):
            if items:
                metrics.update(_prefixed(f"initial_{name}", _evaluate(loaded, objective, items, bs, name).metrics))
        log.info("before training: %s", _fmt({k: v for k, v in metrics.items() if k.startswith("initial_")}))
        if parallel.is_main:  # kept by a resumed attempt, whenever this one stops
            write_json(run_dir / "results.json", results)

    fit = PRE_TRAINING.get(cfg.method.name)  # closed-form methods (linear probing) fit here
    if fit is not None:
        results["pre_training"] = fit(loaded, objective, train_items, cfg.method)
        if dev_items and results["pre_training"]["continue_training"]:
            dev = _evaluate(loaded, objective, dev_items, bs, "dev").metrics
            results["pre_training"].update(_prefixed("dev", dev))
        if not results["pre_training"]["continue_training"]:
            _finish(cfg, loaded, objective, named, dev_items, test_items, run_dir, metrics, parallel)
            return

    steps = total_steps(cfg.trainer, len(train_items))
    optimizer = build_optimizer(cfg.optimizer, named, seed=cfg.seed, model=loaded.model)
    if parallel.active:
        named = distributed.wrap(parallel, loaded.model, named, cfg, zeroth_order=is_zeroth_order(optimizer))
        results["distributed"] = {"strategy": parallel.strategy, "world_size": parallel.world_size,
                                  "mixed_precision": parallel.mixed_precision}
        if parallel.strategy == "fsdp":  # the parameters are now DTensor shards
            optimizer = build_optimizer(cfg.optimizer, named, seed=cfg.seed, model=loaded.model)
    if is_zeroth_order(optimizer) and parallel.is_main:
        # (step, lr, g) per step: `zoft replay` rebuilds the weights from the base model.
        from zoft.optim.trajectory import TrajectoryWriter

        optimizer.attach_trajectory(TrajectoryWriter(run_dir / "trajectory.bin", optimizer, [n for n, _ in named],
                                                     results["config"], resume=resume))
    scheduler = build_scheduler(optimizer, cfg.trainer.lr_scheduler, steps, cfg.trainer.warmup_steps)
    trainer = Trainer(loaded.model, objective, optimizer, scheduler, named, cfg.trainer, run_dir,
                      seed=cfg.seed, max_grad_norm=cfg.optimizer.max_grad_norm, on_log=on_log, parallel=parallel,
                      precision=precision, run_config=results["config"])
    outcome = trainer.fit(train_items, dev_items, resume=resume)
    results["training"] = {
        "steps": outcome.steps, "best_step": outcome.best_step, "last_loss": outcome.last_loss,
        "forward_passes": outcome.forward_passes, "seconds": round(outcome.seconds, 3),
    }

    _finish(cfg, loaded, objective, named, dev_items, test_items, run_dir, metrics, parallel)


def _finish(cfg, loaded, objective, named, dev_items, test_items, run_dir: Path, metrics: dict,
            parallel: distributed.Parallel) -> None:
    """Final numbers with the best weights (the paper evaluates test and dev after reloading)."""
    bs = cfg.trainer.eval_batch_size
    if dev_items:
        metrics.update(_prefixed("dev", _evaluate(loaded, objective, dev_items, bs, "dev").metrics))
    test = _evaluate(loaded, objective, test_items, bs, "test")
    metrics.update(_prefixed("test", test.metrics))
    if cfg.save_model:
        state = parallel.full_state(list(loaded.model.named_parameters())) if parallel.strategy == "fsdp" else None
        if parallel.is_main:
            save_adapted(loaded.model, loaded.tokenizer, cfg.method, loaded.family, named, run_dir / "model",
                         state_dict=state)
    if parallel.is_main:
        write_jsonl(run_dir / "predictions_test.jsonl", test.predictions)
        _print_summary(cfg, metrics)


def _evaluate_only(cfg: DictConfig, loaded: LoadedModel, objective, data, run_dir: Path, results: dict[str, Any],
                   main: bool = True) -> None:
    """Zero-shot and in-context learning (the original's large_models/run.py): no training. ICL gives every
    test example its own ``method.num_demos`` demonstrations, resampled from the whole train
    split with seeds ``randint(0, 10000)`` drawn under ``task.sample_seed``. The dev split is
    scored only zero-shot (its examples come from the train split, so demos could contain them)."""
    bs, metrics = cfg.trainer.eval_batch_size, results["metrics"]
    num_demos = cfg.method.num_demos if cfg.method.name == "icl" else 0
    if num_demos:
        demos = demo_sets(data.pool, cfg.task.sample_seed, len(data.test), num_demos)
        results["icl"] = {"num_demos": num_demos, "demo_seed": cfg.task.sample_seed, "pool": len(data.pool)}
        log.info("ICL: %d demonstrations per test example, resampled from %d train examples", num_demos, len(data.pool))
    else:
        demos = None
        if data.dev:
            dev = _evaluate(loaded, objective, objective.prepare(data.dev, train=False), bs, "dev")
            metrics.update(_prefixed("dev", dev.metrics))
            if main:  # only rank 0 writes
                write_jsonl(run_dir / "predictions_dev.jsonl", dev.predictions)
    test_items = (objective.prepare(data.test, train=False, demos=demos) if demos is not None
                  else objective.prepare(data.test, train=False))
    test = _evaluate(loaded, objective, test_items, bs, "test")
    metrics.update(_prefixed("test", test.metrics))
    if main:
        write_jsonl(run_dir / "predictions_test.jsonl", test.predictions)
        _print_summary(cfg, metrics)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _print_summary(cfg: DictConfig, metrics: dict[str, float]) -> None:
    metric = "accuracy" if "test_accuracy" in metrics else next(
        (k.split("_", 1)[1] for k in metrics if k.startswith("test_") and k != "test_loss"), "loss")
    head = f"{cfg.task.name} / {cfg.model.name} / method={cfg.method.name}"
    lines = [head if cfg.method.name in EVAL_ONLY else f"{head} optimizer={cfg.optimizer.name}"]
    for split in ("dev", "test"):
        before = metrics.get(f"initial_{split}_{metric}")
        after = metrics.get(f"{split}_{metric}")
        if after is None:
            continue
        text = f"  {split} {metric}: "
        text += f"{before:.4f} before -> {after:.4f} after" if before is not None else f"{after:.4f}"
        lines.append(text)
    print("\n".join(lines), flush=True)


def default_config(**overrides: Any) -> DictConfig:
    """A structured config with schema defaults, for use outside Hydra (tests, notebooks)."""
    base = OmegaConf.structured(RunConfig)
    return OmegaConf.merge(base, OmegaConf.create(overrides))
