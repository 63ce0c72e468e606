"""One run, from a composed config to ``results.json``."""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from zoft import distributed
from zoft.config.choices import EVAL_ONLY
from zoft.config.groups import option_file
from zoft.config.optimizer_checks import normalise
from zoft.config.resolvers import register_resolvers
from zoft.config.protocol import as_record, check_evaluation_sample, format_block, run_key, settle, typed_overrides
from zoft.config.schema import RunConfig
from zoft.config.validate import validate
from zoft.errors import DivergenceError, Preempted, ZoftUserError
from zoft.loggers import NullLogger, start_logger
from zoft.outputs import OutputWriteError, git_info, package_versions
from zoft.recipe import build_setup, print_summary, run_recipe
from zoft.results import ResultsFile, RunResults
from zoft.rundir import (LOCK_NAME, Attempt, RunLock, clear_outputs, plan_attempt, resume_folder, resume_target,
                         run_dir_template)

log = logging.getLogger("zoft")


def resolve_run_dir(cfg: DictConfig, config: dict[str, Any]) -> Path:
    """The folder ``resume=<folder>`` names (``resume=last``: the latest run of this config under
    the fixed part of ``hydra.run.dir``, as :func:`zoft.rundir.resume_folder` finds it for
    ``python train.py`` too), else ``output_dir`` if set, else Hydra's run folder, else
    ``outputs/manual``. (``python train.py`` has already turned ``resume=last`` into the folder.)"""
    target = resume_target(cfg.resume)
    if target is not None:
        return resume_folder(target, config, _run_dir_template())
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - not running under Hydra
        return Path("outputs/manual")


def _run_dir_template() -> str:
    """This Hydra job's ``hydra.run.dir`` unresolved (``outputs/${now:...}`` or the one typed);
    ``outputs`` when not running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return run_dir_template(HydraConfig.get()) if HydraConfig.initialized() else "outputs"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, take the run folder, load data and model, train (unless evaluation-only),
    evaluate, write results.

    The config is validated before the folder is touched: a bad value never overwrites an
    earlier ``results.json``. The folder is then locked for the whole run, and the previous
    attempt in it (if any) decides what this one does: resume, nothing (a completed run with the
    same settings; ``redo=true`` runs it again), or refuse (different settings).

    Bad input found only once the data or the model is loaded (``task.num_train`` larger than the
    training data, a bad data file, ...) stops a single ``python train.py`` run as a config error
    does: exit 2 and no folder left behind, when the folder was new and holds nothing the run
    wrote besides ``results.json`` (:func:`_discard_rejected_folder`). A multirun job, or a call
    from code, keeps its ``failed`` results.json.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    normalise(cfg, typed_overrides())
    # The protocol table's lookups become plain values; each field remembers where it came from.
    protocol = settle(cfg, typed_overrides())
    main = distributed.is_main_process()  # under torchrun only rank 0 writes files
    config = OmegaConf.to_container(cfg, resolve=True)
    config["protocol"] = {"name": cfg.protocol.name}  # the table itself is in conf/protocol/
    run_dir = resolve_run_dir(cfg, config)
    try:
        validate(cfg)
    except ZoftUserError as err:
        if main:
            _record_rejected(run_dir, config, err)
        raise
    lock = RunLock(run_dir).acquire() if main else None
    hydra_files = _single_run_hydra_files(run_dir) if main and not ResultsFile(run_dir).path.exists() else None
    rejected = False
    try:
        attempt = plan_attempt(run_dir, config, cfg.resume, cfg.redo)
        if attempt.action == "done":
            print(attempt.message, flush=True)
            print_summary(cfg, attempt.previous.get("metrics", {}))
            return attempt.previous
        if attempt.action == "fresh" and main:
            clear_outputs(run_dir)
        results = _run_attempt(cfg, protocol, run_dir, config, attempt, main)
        if main:
            print(f"run folder: {run_dir}", flush=True)
        return results
    except ZoftUserError:
        rejected = hydra_files is not None
        raise
    finally:
        if lock is not None:
            lock.release()
        if rejected:
            _discard_rejected_folder(run_dir, hydra_files)


def _single_run_hydra_files(run_dir: Path) -> Optional[set[str]]:
    """The names Hydra writes into ``run_dir`` (its ``.hydra/`` and the job's log) when this is
    a single ``python train.py`` run in that folder; None for a multirun job or outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.RUN or Path(hydra.runtime.output_dir).resolve() != Path(run_dir).resolve():
        return None
    return {f"{hydra.job.name}.log"} | ({str(hydra.output_subdir)} if hydra.output_subdir else set())


def _discard_rejected_folder(run_dir: Path, hydra_files: set[str]) -> None:
    """Remove the folder of a single run stopped by bad input before it wrote anything else:
    its ``results.json``, lock and Hydra's files. A folder holding anything more (outputs of the
    run, the user's own files) is left as it is."""
    run_dir = Path(run_dir)
    ours = {ResultsFile(run_dir).path.name, LOCK_NAME, *hydra_files}
    try:
        entries = list(run_dir.iterdir())
        if any(entry.name not in ours for entry in entries):
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        run_dir.rmdir()
    except OSError as err:  # the error that stopped the run is the one to report
        log.warning("could not remove the run folder %s: %s", run_dir, err)


def _new_results(cfg: DictConfig, protocol, run_dir: Path, config: dict[str, Any], attempt: Attempt) -> RunResults:
    """The record an attempt starts from; a resumed attempt keeps the first attempt's evaluation
    before training and counts itself."""
    previous = attempt.previous
    resume = attempt.action == "resume"
    return RunResults(
        status="running",
        config=config,
        metrics={k: v for k, v in previous.get("metrics", {}).items() if k.startswith("initial_")} if resume else {},
        protocol={"table": cfg.protocol.name, "key": run_key(cfg).label(), "fields": as_record(protocol)},
        seeds={"run": cfg.seed, "data_sampling": cfg.task.sample_seed, "model_init": cfg.model.init_seed,
               "perturbation": cfg.seed if cfg.optimizer.get("zo_seed") is None else cfg.optimizer.zo_seed},
        versions=package_versions(),
        git=git_info(),
        run_dir=str(run_dir),
        resumed=previous.get("resumed", 0) + 1 if resume else None,
    )


def _run_attempt(cfg: DictConfig, protocol, run_dir: Path, config: dict[str, Any], attempt: Attempt,
                 main: bool) -> dict[str, Any]:
    """One attempt in a locked folder: results.json says ``running`` until it ends."""
    results = _new_results(cfg, protocol, run_dir, config, attempt)
    results_file = ResultsFile(run_dir, main)
    results_file.write(results)
    started = time.time()
    logger = None
    evaluation_only = run_key(cfg).method in EVAL_ONLY
    typed = typed_overrides()

    def on_data(data) -> None:
        """An evaluation-only run's block waits for the data: it states the dev and test examples
        really drawn, after refusing a typed size that the data cannot give."""
        if evaluation_only:
            sizes = {"dev": len(data.dev), "test": len(data.test)}
            check_evaluation_sample(cfg, sizes, typed)
            if main:
                print(format_block(cfg, protocol, typed, sizes=sizes), flush=True)

    try:
        if main:
            print(f"run folder: {run_dir}" + (" (resuming)" if attempt.action == "resume" else ""), flush=True)
            if not evaluation_only:
                print(format_block(cfg, protocol), flush=True)
        # Under torchrun only rank 0 logs (one wandb run per job).
        logger = start_logger(cfg, run_dir, results.as_dict()) if main else NullLogger()
        _execute(cfg, run_dir, results, results_file, attempt.action == "resume", on_log=logger.log,
                 on_data=on_data)
        results.status = "completed"
    except BaseException as err:
        _record_stop(results, err)
        raise
    finally:
        results.seconds = round(time.time() - started, 3)
        _write_final(results_file, results)
        if logger is not None:  # one wandb run per job, ended even when the job failed
            logger.finish(results.as_dict())
    return results.as_dict()


def _record_stop(results: RunResults, err: BaseException) -> None:
    """The status of an attempt that did not complete."""
    if isinstance(err, DivergenceError):
        results.status, results.stopped_at_step = "diverged", err.step
        results.error = {"type": type(err).__name__, "message": str(err)}
    elif isinstance(err, Preempted):
        # SIGINT (Ctrl-C) is the user's own stop; SIGTERM/SIGUSR1 come from a scheduler.
        results.status = "interrupted" if err.signal_name == "SIGINT" else "preempted"
        results.stopped_at_step = err.step
    elif isinstance(err, KeyboardInterrupt):
        results.status = "interrupted"  # before the loop started: nothing to checkpoint yet
    else:
        results.status = "failed"
        results.error = {"type": type(err).__name__, "message": str(err),
                         "traceback": traceback.format_exc(limit=20)}


def _record_rejected(run_dir: Path, config: dict[str, Any], err: Exception) -> None:
    """A multirun job whose config is invalid still says so in its own (new, empty) folder, for
    the sweep summary and ``zoft report``. A folder that holds a results.json is never touched,
    and no folder is created."""
    results_file = ResultsFile(run_dir)
    if run_dir.is_dir() and not results_file.path.exists():
        results_file.write(RunResults(status="failed", config=config,
                                      error={"type": type(err).__name__, "message": str(err)}))


def _write_final(results_file: ResultsFile, results: RunResults) -> None:
    """The last write of results.json; when it fails (a full disk) the error that stopped the
    run is the one to report, and the previous results.json stays intact."""
    try:
        results_file.write(results)
    except OutputWriteError as err:
        if results.status == "completed":
            raise
        log.error("%s", err)


def _execute(cfg: DictConfig, run_dir: Path, results: RunResults, results_file: ResultsFile, resume: bool,
             on_log=None, on_data=None) -> None:
    """Set up (one distributed initialisation for every runner) and run the recipe
    (``on_data``: see :func:`zoft.recipe.build_setup`)."""
    parallel = distributed.setup(cfg)
    try:
        run_recipe(build_setup(cfg, run_dir, results, results_file, parallel, resume, on_log, on_data=on_data))
    finally:
        parallel.close()


def default_config(**overrides: Any) -> DictConfig:
    """A config for use outside Hydra (tests, notebooks): the schema's defaults, the optimizer
    option's file (mezo unless ``optimizer={"name": ...}``) and the paper's protocol table, which
    its ``${protocol:...}`` values are looked up in (they need the model and the task)."""
    register_resolvers()
    base = OmegaConf.structured(RunConfig)
    # The optimizer node: the option file as written (mezo unless overrides name another), its
    # ${protocol:...} values looked up in the paper's table, as a composed config does.
    name = (overrides.get("optimizer") or {}).get("name", "mezo")
    base.optimizer = option_file("optimizer", name) or {"name": name}
    return OmegaConf.merge(base, {"protocol": option_file("protocol", "paper")}, OmegaConf.create(overrides))
