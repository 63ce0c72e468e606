"""What a run reports: one typed record, written to ``results.json`` in one place.

The fields are documented for users in docs/results-json.md. A field that is ``None`` is left
out of the file (a zero-shot run has no ``training``, a run that has not loaded data yet has no
``data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from zoft.outputs import write_json

@dataclass
class RunResults:
    """The record of one run (one attempt, with what earlier attempts carried over)."""

    status: str
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: Optional[dict[str, Any]] = None
    seeds: Optional[dict[str, Any]] = None
    versions: Optional[dict[str, str]] = None
    git: Optional[dict[str, Any]] = None
    run_dir: Optional[str] = None
    resumed: Optional[int] = None  # attempts after the first
    data: Optional[dict[str, Any]] = None  # sources and split sizes
    parameters: Optional[dict[str, int]] = None  # trainable and total
    icl: Optional[dict[str, Any]] = None
    kernel: Optional[dict[str, Any]] = None
    pre_training: Optional[dict[str, Any]] = None  # the closed-form fit (linear probing)
    distributed: Optional[dict[str, Any]] = None
    training: Optional[dict[str, Any]] = None  # steps, best_step, last_loss, forward_passes, seconds
    stopped_at_step: Optional[int] = None  # written as "<status>_at_step" (diverged/interrupted/preempted)
    error: Optional[dict[str, str]] = None
    seconds: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: fields in declaration order, ``None`` left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "stopped_at_step":
                out[f"{self.status}_at_step"] = value
            else:
                out[f.name] = value
        return out

    def initial_metrics(self) -> dict[str, float]:
        """The evaluation before training (``initial_*``), which a resumed attempt keeps."""
        return {k: v for k, v in self.metrics.items() if k.startswith("initial_")}


class ResultsFile:
    """``<run_dir>/results.json``; only the main process writes it (under torchrun, rank 0)."""

    def __init__(self, run_dir: Path, main: bool = True) -> None:
        self.path = Path(run_dir) / "results.json"
        self.main = main

    def write(self, results: RunResults) -> None:
        if self.main:
            write_json(self.path, results.as_dict())
