"""A multirun's own lines: the sweep folder when it starts; at the end one line per outcome,
the folder again and the ``zoft report`` command, and a non-zero exit when any job did not
complete. Registered as a Hydra callback in ``conf/config.yaml`` (``hydra.callbacks``).
Each job's summary line names the job by its varying overrides (:func:`job_label`).

Each job folder of the sweep (those holding Hydra's ``.hydra/``) is read back: its
``results.json`` status, or ``failed`` when there is none (a job stopped before writing it).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

SEED_KEYS = ("seed", "task.sample_seed")


def job_label() -> str:
    """``job 3: optimizer.lr=1e-06,task.sample_seed=13`` in a multirun job: the overrides that vary
    between the sweep's jobs (Hydra's ``override_dirname``; train.py leaves out the ones every job
    shares) and the seeds the job was given; ``""`` outside a multirun."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under Hydra
        return ""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    seeds = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+") in SEED_KEYS]
    parts = [p for p in [hydra_cfg.job.override_dirname, *seeds] if p]
    return f"job {hydra_cfg.job.num}: " + (",".join(parts) or "(no overrides)")


def job_statuses(sweep_dir: Path) -> dict[str, list[Path]]:
    """status -> job folders, for every job folder under ``sweep_dir``."""
    by_status: dict[str, list[Path]] = defaultdict(list)
    for hydra_dir in sorted(Path(sweep_dir).glob("**/.hydra")):
        job = hydra_dir.parent
        try:
            status = json.loads((job / "results.json").read_text(encoding="utf-8")).get("status", "failed")
        except (OSError, ValueError):
            status = "failed"
        by_status[status].append(job)
    return dict(by_status)


def summary_lines(by_status: dict[str, list[Path]], sweep_dir: Path) -> list[str]:
    """The counts per status, the folders of jobs that did not complete, then the sweep folder
    and the command that tabulates it."""
    total = sum(len(v) for v in by_status.values())
    counts = ", ".join(f"{len(by_status.get(s, []))} {s}" for s in sorted(by_status, key=lambda s: s != "completed"))
    lines = [f"sweep: {total} jobs: {counts or 'none ran'}"]
    for status, jobs in sorted(by_status.items()):
        if status != "completed":
            lines += [f"  {status}: {job}" for job in jobs]
    folder = shlex.quote(str(sweep_dir))
    return lines + [f"sweep folder: {sweep_dir}", f"report: zoft report {folder}"]


class SweepSummary(Callback):
    """Prints the sweep folder, then the sweep's outcome; exits 1 when a job failed, diverged or
    was stopped."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"sweep folder: {config.hydra.sweep.dir}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        by_status = job_statuses(sweep_dir)
        print("\n".join(summary_lines(by_status, sweep_dir)), flush=True)
        if set(by_status) - {"completed"}:
            sys.exit(1)
