"""``metrics.jsonl`` of one :meth:`zoft.train.loop.Trainer.fit`: the rows, as they come, and the
two rewrites that going back to a checkpoint needs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from zoft.outputs import MetricsLog, read_jsonl_tolerant, write_jsonl

Rows = list[dict]


class MetricsFile:
    """Appends rows to ``path`` (when ``writes``: rank 0 only) and hands every row to ``on_log``
    (the wandb logger) on every rank."""

    def __init__(self, path: Path, writes: bool, on_log: Optional[Callable[[dict], None]] = None) -> None:
        self.path = Path(path)
        self.writes = writes
        self.on_log = on_log
        self._log: Optional[MetricsLog] = None

    def open(self) -> None:
        """Start appending (the file is created if there is none)."""
        if self.writes:
            self._log = MetricsLog(self.path)

    def write(self, row: dict) -> None:
        if self._log is not None:
            self._log.write(row)
        if self.on_log:
            self.on_log(row)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def keep_until(self, step: int) -> None:
        """A resume from the checkpoint of ``step``: the rows logged after it are redone by the
        resumed run, so they leave the file."""
        self._rewrite(lambda rows: [r for r in rows if r.get("step", 0) <= step])

    def abandon_after(self, step: int, note: dict) -> None:
        """A rollback to the checkpoint of ``step``: the training rows after it leave the file
        (the redone steps log their own); the evaluations of the abandoned stretch stay, marked
        ``abandoned``, since the best-weights bookkeeping may point at one of them. ``note`` (what
        rolled back, and why) is appended."""
        def abandon(rows: Rows) -> Rows:
            kept = []
            for r in rows:
                if r.get("step", 0) <= step:
                    kept.append(r)
                elif "loss" not in r:  # an evaluation of the abandoned stretch
                    kept.append({**r, "abandoned": True})
            return kept + [note]
        self._rewrite(abandon)

    def _rewrite(self, edit: Callable[[Rows], Rows]) -> None:
        """Replace the file by ``edit`` of its rows (atomically), pausing the append handle."""
        if not (self.writes and self.path.exists()):
            return
        was_open = self._log is not None
        self.close()
        write_jsonl(self.path, edit(read_jsonl_tolerant(self.path)))
        if was_open:
            self.open()
