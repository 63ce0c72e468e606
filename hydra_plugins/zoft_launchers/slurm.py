"""``launcher=slurm``: hydra-submitit-launcher's Slurm launcher with zoft's requeue and resume.

What zoft adds to submitit's launcher:

* **Slurm's warning is SIGUSR1.** The job script asks Slurm for SIGUSR1 ``signal_delay_s``
  seconds before the time limit (submitit's default is SIGUSR2, which zoft's training loop does
  not watch). On SIGUSR1 or SIGTERM (preemption) the loop writes ``checkpoints/last.pt`` after the
  current step and stops; a signal outside the loop (loading, the final evaluation) goes to
  submitit's own handler, which requeues the job.
* **A stopped job is requeued, not reported.** When the loop stopped on a signal the job is put
  back in the queue (the loop's ``scontrol requeue`` when ``trainer.requeue_on_signal``, else
  here when ``launcher.requeue``) and exits without a result, so the sweep waits for the requeued
  job, which reruns the same overrides in the same job folder and resumes from the checkpoint
  (``resume=auto``).
* ``launcher.requeue=false``: submitit's ``checkpoint`` declines (returns None), and a stopped
  job ends as ``preempted`` in its results.json.

Importing this module must stay cheap and must not fail without the ``slurm`` extra: Hydra
imports every module under ``hydra_plugins`` at each start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

log = logging.getLogger(__name__)

# Slurm's advance warning: the signal the training loop checkpoints on (submitit reads this
# variable when it is imported, in the submitting process and in each job).
WARNING_SIGNAL = "USR1"
# The exit status of a job that stopped after a checkpoint and was put back in the queue.
REQUEUED_EXIT = 4

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurm
except ImportError:  # the slurm extra is not installed: launcher=slurm says so when chosen
    _SubmititSlurm = None


def use_warning_signal() -> None:
    """Make submitit ask Slurm for SIGUSR1 (and handle it in the job) instead of SIGUSR2."""
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = WARNING_SIGNAL
    import submitit.core.job_environment as job_environment

    job_environment.JobEnvironment.USR_SIG = WARNING_SIGNAL  # in case submitit was imported already


def watch_warning_signal() -> None:
    """In the job: give SIGUSR1 to submitit's requeue handler should the variable not have reached
    the job (``sbatch --export=NONE``); the training loop takes it over while it runs."""
    import submitit.core.job_environment as job_environment

    handler = signal.getsignal(job_environment.JobEnvironment._usr_sig())
    if callable(handler) and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        signal.signal(signal.SIGUSR1, handler)


def read_record(run_dir: Path) -> bytes:
    """The bytes of ``run_dir/results.json`` (empty when there is none)."""
    try:
        return (Path(run_dir) / "results.json").read_bytes()
    except OSError:
        return b""


def stopped_by_signal(record: bytes, before: bytes) -> bool:
    """Whether this attempt, whose results.json is ``record``, stopped on SIGTERM/SIGUSR1 after
    writing a checkpoint. An attempt that failed before writing results.json leaves ``before``
    (an earlier attempt's) in place, which does not count: no requeue loop."""
    try:
        status = json.loads(record.decode("utf-8")).get("status")
    except ValueError:
        return False
    return status == "preempted" and record != before


if _SubmititSlurm is not None:

    class SlurmLauncher(_SubmititSlurm):
        """Submitit's Slurm launcher: SIGUSR1 warnings, and a job stopped by a signal is requeued
        to resume from its checkpoint (``launcher.requeue``, ``trainer.requeue_on_signal``)."""

        def _requeue_enabled(self) -> bool:
            launcher_cfg = self.config.get("launcher", {}) if self.config is not None else {}
            return bool(launcher_cfg.get("requeue", True))

        def launch(self, job_overrides, initial_job_idx):
            use_warning_signal()
            return super().launch(job_overrides, initial_job_idx)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            """Run one job in its Slurm allocation; a job stopped by a signal is requeued and
            leaves no result, so the sweep keeps waiting for it."""
            import submitit

            watch_warning_signal()
            seen: dict[str, Any] = {}
            task = self.task_function

            def observed_task(cfg):  # the job folder and its record before this attempt
                seen["dir"] = Path(HydraConfig.get().runtime.output_dir)
                seen["before"] = read_record(seen["dir"])
                return task(cfg)

            self.task_function = observed_task
            try:
                result = super().__call__(*args, **kwargs)
            finally:
                self.task_function = task
            if "dir" not in seen or not stopped_by_signal(read_record(seen["dir"]), seen["before"]):
                return result
            requeued = bool(result.cfg.trainer.get("requeue_on_signal", True))  # the loop ran scontrol requeue
            if not requeued and self._requeue_enabled():
                submitit.JobEnvironment()._requeue(countdown=0)
                requeued = True
            if not requeued:
                return result  # ends as "preempted" (launcher.requeue=false)
            log.warning("%s stopped after a checkpoint and was requeued; it resumes there", seen["dir"])
            # SystemExit is no Exception: submitit writes no result, and the sweep waits for the rerun.
            raise SystemExit(REQUEUED_EXIT)

        def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            """What submitit resubmits on a signal outside the training loop: this job again, or
            nothing when ``launcher.requeue=false``."""
            if not self._requeue_enabled():
                return None  # submitit: "checkpoint function returned None" -> not requeued
            return super().checkpoint(*args, **kwargs)
