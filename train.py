"""zoft's one entry point: ``python train.py [group=option ...] [key=value ...]``.

Examples:
    python train.py                                   # offline demo (tiny model, MeZO)
    python train.py method=mezo task=sst2 model=opt-13b
    python train.py -m optimizer.lr=1e-6,1e-7         # one run folder per job
    python train.py method=mezo model=opt-13b --dry-run   # the protocol with its sources; exits

The run folder is printed when the run starts and ends; `resume=<folder>` (or `resume=last`, the
latest run of the same config) continues a stopped run there.

Exit codes: 0 done (also: a completed run rerun in its folder, a no-op), 1 a bug (traceback),
2 bad input (one line naming the value; nothing written), 3 diverged, 4 stopped by a signal
(SIGTERM/SIGUSR1/SIGINT: checkpointed; it prints the command that resumes), 130 Ctrl-C before
training started.
A multirun exits 1 when any job did not complete. ZOFT_DEBUG=1 shows tracebacks for input errors.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from zoft.config.store import register_configs
from zoft.errors import DivergenceError, Preempted, ZoftUserError

register_configs()
log = logging.getLogger("zoft")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job; returns the dev metric (or NaN) so Hydra sweepers can optimise it."""
    from zoft.run import run

    try:
        results = run(cfg)
    except (ZoftUserError, DivergenceError, Preempted) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job stopped: %s", err)
            return math.nan
        if os.environ.get("ZOFT_DEBUG") == "1":
            raise
        # Bad input, divergence or a stop signal: one clear message, no traceback (results.json
        # has the details). Exit codes: 2 bad input, 3 diverged, 4 stopped (resumable).
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, Preempted):
            from zoft.frontend import resume_command
            from zoft.run import resolve_run_dir

            print(f"to resume: {resume_command(sys.argv[0], HydraConfig.get(), resolve_run_dir(cfg, {}))}",
                  file=sys.stderr)
        sys.exit(2 if isinstance(err, ZoftUserError) else 3 if isinstance(err, DivergenceError) else 4)
    except KeyboardInterrupt:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print("interrupted before training started (nothing to resume); rerun the same command", file=sys.stderr)
        sys.exit(130)
    except Exception:
        # In a multirun a failed job must not stop the others: results.json says "failed".
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.exception("job failed; continuing with the other jobs")
            return math.nan
        raise
    metrics = results["metrics"]
    return next((v for k, v in metrics.items() if k.startswith("dev_") and k != "dev_loss"), math.nan)


if __name__ == "__main__":
    from pathlib import Path

    from zoft.errors import ZoftUserError

    try:
        from zoft.frontend import Stop, preflight
    except ZoftUserError as err:  # an optimizer option whose class cannot be read (zoft/optim/registry.py)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    try:  # before Hydra writes into the run folder; the folders it decides are pinned in argv
        if "--dry-run" in sys.argv[1:]:  # the protocol block, then exit: nothing loaded or written
            from zoft.dry_run import dry_run

            print(dry_run([a for a in sys.argv[1:] if a != "--dry-run"], Path(__file__).resolve().parent / "conf"))
            sys.exit(0)
        sys.argv[1:] = preflight(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    except Stop as stop:
        print(stop.message, file=sys.stderr if stop.code else sys.stdout)
        sys.exit(stop.code)
    from zoft.distributed import env_rank

    if env_rank() > 0:
        # torchrun/accelerate rank > 0: Hydra must not create a run folder, .hydra/ or a log file
        # (rank 0 writes every output); logs go to the console only.
        quiet = {"hydra.output_subdir": "null", "hydra.run.dir": ".", "hydra/job_logging": "stdout"}
        sys.argv = [a for a in sys.argv if a.split("=", 1)[0].lstrip("+~") not in quiet]
        sys.argv += [f"{k}={v}" for k, v in quiet.items()]
    main()
