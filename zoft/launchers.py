"""Launcher glue for ``launcher=slurm``.

``SlurmLauncher`` is hydra-submitit-launcher's launcher plus one switch, ``launcher.requeue``:
submitit requeues a preempted job by asking the launcher's ``checkpoint`` for a resubmission;
returning ``None`` declines, so with ``launcher.requeue=false`` a preempted job simply ends.
A requeued job reruns the same command in the same run folder; with ``resume=auto`` it
continues from ``checkpoints/last.pt`` when one was written (zoft writes one on SIGTERM/SIGUSR1).
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurm


class SlurmLauncher(_SubmititSlurm):
    """Submitit's Slurm launcher whose requeue on preemption follows ``launcher.requeue``."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        launcher_cfg = self.config.get("launcher", {}) if self.config is not None else {}
        if not launcher_cfg.get("requeue", True):
            return None  # submitit: "checkpoint function returned None" -> not requeued
        return super().checkpoint(*args, **kwargs)
