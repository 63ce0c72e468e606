"""The end of a multirun: one line per outcome, and a non-zero exit when any job did not
complete. Registered as a Hydra callback in ``conf/config.yaml`` (``hydra.callbacks``).

Each job folder of the sweep (those holding Hydra's ``.hydra/``) is read back: its
``results.json`` status, or ``failed`` when there is none (a job stopped before writing it).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


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


def summary_lines(by_status: dict[str, list[Path]]) -> list[str]:
    total = sum(len(v) for v in by_status.values())
    counts = ", ".join(f"{len(by_status.get(s, []))} {s}" for s in sorted(by_status, key=lambda s: s != "completed"))
    lines = [f"sweep: {total} jobs: {counts or 'none ran'}"]
    for status, jobs in sorted(by_status.items()):
        if status != "completed":
            lines += [f"  {status}: {job}" for job in jobs]
    return lines


class SweepSummary(Callback):
    """Prints the sweep's outcome and exits 1 when a job failed, diverged or was stopped."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        by_status = job_statuses(Path(config.hydra.sweep.dir))
        print("\n".join(summary_lines(by_status)), flush=True)
        if set(by_status) - {"completed"}:
            sys.exit(1)
