"""Compact MeZO trajectories: a fine-tuned model as (base model, seed, projected gradients).

File layout (little-endian)::

    b"ZOFTTRJ1" | uint32 header length | header (UTF-8 JSON)
    then one record per step:  uint32 step | float64 lr | n_directions x float32 g

With one direction a record is 16 bytes: 1000 steps of MeZO on OPT-13B are 16 kB plus the header
(the run config, the parameter names and the optimizer description). Every record is flushed
when written, so the file is readable after a kill (a truncated last record is ignored).

:func:`replay_into` feeds the records to an optimizer built like the one that trained (same
parameters, same order, same settings) through ``replay(projected_grads)``, which performs
exactly the arithmetic of training minus the forward passes, so on the same device and dtype the
rebuilt weights are bit-identical.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from zoft.errors import ZoftUserError

if TYPE_CHECKING:  # annotations only
    from zoft.optim.build import ZerothOrderOptimizer

MAGIC = b"ZOFTTRJ1"


class TrajectoryError(ZoftUserError, ValueError):
    """The trajectory file is not one, or does not match the optimizer/model it is replayed on."""


@dataclass
class Trajectory:
    header: dict
    steps: list[int]
    lrs: list[float]
    grads: list[list[float]]
    header_bytes: int = 0
    # Bytes of a last record cut short (a run killed mid-write); that record is not in ``steps``.
    cut_bytes: int = 0
    # The file it was read from (for messages); empty when built in memory.
    source: str = ""

    def __len__(self) -> int:
        return len(self.steps)


def weights_checksum(params) -> float:
    """A position-weighted float64 sum of the tensors: tells a wrong base model from the right one."""
    total = 0.0
    for i, p in enumerate(params):
        total += (i + 1) * float(p.detach().double().sum())
    return total


class TrajectoryWriter:
    """Appends one record per optimizer step to ``path`` (header written on open)."""

    def __init__(self, path: Path | str, optimizer: ZerothOrderOptimizer, names: Optional[Sequence[str]] = None,
                 config: Optional[dict] = None, resume: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Scalars per record: the projected gradients (one per direction), or the estimator's own
        # ``record_width`` scalars (HiZOO: g and its curvature term; scheduled n-SPSA: the largest n).
        self.n = int(optimizer.record_width)
        self._record = struct.Struct(f"<Id{self.n}f")
        header = {"format": 1, "optimizer": optimizer.describe(), "names": list(names or []),
                  "record_width": self.n,
                  "config": config or {}, "start_step": optimizer.step_count,
                  "checksum": weights_checksum(p for g in optimizer.param_groups for p in g["params"])}
        blob = json.dumps(header, default=str).encode()
        self._truncate_pending = resume and self.path.is_file()
        if self._truncate_pending:
            # A resumed run continues the file of the interrupted one: its header (and the base
            # weights' checksum) stays; records from the checkpoint's step on are redone.
            self._f = open(self.path, "r+b")
            self._f.seek(0, 2)
        else:
            self._f = open(self.path, "w+b")  # readable too: a rewind scans the records
            self._f.write(MAGIC + struct.pack("<I", len(blob)) + blob)
            self._f.flush()

    def _drop_records_from(self, step: int) -> None:
        self._f.seek(len(MAGIC))
        (length,) = struct.unpack("<I", self._f.read(4))
        offset = len(MAGIC) + 4 + length
        size = self._record.size
        self._f.seek(offset)
        while True:
            chunk = self._f.read(size)
            if len(chunk) < size or self._record.unpack(chunk)[0] >= step:
                break  # a cut record (kill mid-write) or the first one to redo
            offset += size
        self._f.seek(offset)
        self._f.truncate()

    def rewind(self) -> None:
        """The loop went back to a checkpoint: the next record replaces every record from its
        step on."""
        self._truncate_pending = True

    def record(self, step: int, lr: float, grads: Sequence[float]) -> None:
        if self._truncate_pending:
            self._drop_records_from(step)
            self._truncate_pending = False
        self._f.write(self._record.pack(step, lr, *grads))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_trajectory(path: Path | str) -> Trajectory:
    """Read a trajectory file; a truncated last record (a killed run) is dropped and counted in
    ``cut_bytes``. Anything else that is not a whole trajectory (another file, a cut header,
    records that do not follow each other) is a :class:`TrajectoryError` naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file (pass the run's trajectory.bin)" if path.is_dir() else "does not exist"
        raise TrajectoryError(f"trajectory file {str(path)!r} {what}")
    data = path.read_bytes()
    header, start = _read_header(path, data)
    rec = struct.Struct(f"<Id{_record_width(path, header)}f")
    body = memoryview(data)[start:]
    count, cut = divmod(len(body), rec.size)
    steps, lrs, grads = [], [], []
    for i in range(count):
        step, lr, *g = rec.unpack_from(body, i * rec.size)
        steps.append(step)
        lrs.append(lr)
        grads.append(g)
    traj = Trajectory(header, steps, lrs, grads, start, cut_bytes=cut, source=str(path))
    _check_consecutive(path, traj, rec.size)
    return traj


def _read_header(path: Path, data: bytes) -> tuple[dict, int]:
    """The header (a JSON object describing the optimizer) and the offset of the first record."""
    fix = "point --trajectory at a run's trajectory.bin (a file cut while copied must be copied again)"
    if not data:
        raise TrajectoryError(f"{path}: the file is empty, not a zoft trajectory; {fix}")
    if data[:len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise TrajectoryError(f"{path}: the file is truncated ({len(data)} bytes, inside its first 8); {fix}")
        raise TrajectoryError(f"{path}: not a zoft trajectory: it starts with {data[:8]!r}, a trajectory "
                              f"with {MAGIC!r}; {fix}")
    prefix = len(MAGIC) + 4
    if len(data) < prefix:
        raise TrajectoryError(f"{path}: the header is truncated: the file ends after {len(data)} bytes, "
                              f"before the header's length; {fix}")
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    if prefix + size > len(data):
        raise TrajectoryError(f"{path}: the header is truncated: it declares {size} bytes but only "
                              f"{len(data) - prefix} follow; {fix}")
    try:
        header = json.loads(data[prefix:prefix + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrajectoryError(f"{path}: the header is not valid JSON ({err}); the file is damaged; {fix}") from None
    if not isinstance(header, dict) or not isinstance(header.get("optimizer"), dict):
        raise TrajectoryError(f"{path}: the header has no optimizer description, so its records cannot be "
                              f"read; the file is damaged or not from zoft; {fix}")
    return header, prefix + size


def _record_width(path: Path, header: dict) -> int:
    """Scalars per record: what the writer stored as ``record_width`` (older files: the
    optimizer's number of directions)."""
    n = header.get("record_width", header["optimizer"].get("n_directions"))
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TrajectoryError(f"{path}: the header's record width {n!r} is not a positive integer; "
                              "the file is damaged or not from zoft")
    return n


def _check_consecutive(path: Path, traj: Trajectory, record_size: int) -> None:
    """Records are written one per step from ``start_step`` on (a resume or a rollback rewrites
    the tail); any other sequence means the record section is damaged, e.g. spliced or cut at a
    point that is not a record boundary."""
    first = int(traj.header.get("start_step", 0))
    for i, step in enumerate(traj.steps):
        if step != first + i:
            offset = traj.header_bytes + i * record_size
            raise TrajectoryError(
                f"{path}: the record section is damaged: record {i} (byte {offset}) is for step {step} but "
                f"step {first + i} was expected (records follow each other from step {first}); copy the "
                "file again from the run folder")


def check_until_step(traj: Trajectory, until_step: Optional[int], name: str = "until_step") -> None:
    """``until_step`` counts steps to apply: 0 (the base model) to the number recorded. Outside
    that range it used to mean "none" or "all" silently; now it is an error naming the range.

    A file whose last record is cut (a run killed mid-write) is replayed only up to the records
    before the cut, and only when asked to explicitly: without ``until_step`` it would silently
    give a model the run never finished stepping to.
    """
    where = traj.source or "the trajectory"
    n = len(traj)
    if until_step is not None and not 0 <= until_step <= n:
        cut = f", plus {traj.cut_bytes} bytes of a cut record" if traj.cut_bytes else ""
        raise TrajectoryError(f"{name} {until_step} is out of range: {where} has {n} recorded steps{cut}; "
                              f"pass 0..{n} (the number of steps to apply; 0 = the base model)")
    if until_step is None and traj.cut_bytes:
        raise TrajectoryError(
            f"{where}: the record section is truncated: {n} whole records and {traj.cut_bytes} bytes of a cut "
            f"one (the run was killed while writing it, or the file was cut while copied); pass {name} "
            f"{n} (or less) to replay the whole records, or copy the file again")


def replay_into(optimizer, trajectory: Trajectory | Path | str, until_step: Optional[int] = None) -> int:
    """Apply the recorded steps (up to ``until_step`` steps in total) to ``optimizer``'s
    parameters; returns the number of steps applied."""
    traj = trajectory if isinstance(trajectory, Trajectory) else read_trajectory(trajectory)
    if until_step is not None:
        check_until_step(traj, until_step)
    saved = traj.header["optimizer"]
    mine = json.loads(json.dumps(optimizer.describe(), default=str))  # as stored (tuples -> lists)
    diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
    if diff:
        raise TrajectoryError("the optimizer does not match the one that recorded the trajectory: "
                              + ", ".join(f"{k}: recorded {a!r}, here {b!r}" for k, (a, b) in diff.items()))
    optimizer.step_count = int(traj.header.get("start_step", 0))
    applied = 0
    for step, lr, grads in zip(traj.steps, traj.lrs, traj.grads):
        if until_step is not None and applied >= until_step:
            break
        if step != optimizer.step_count:
            raise TrajectoryError(f"trajectory record for step {step} where step {optimizer.step_count} "
                                  "was expected (records must be consecutive)")
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.replay(grads)
        applied += 1
    return applied


def check_names(traj: Trajectory, names: Sequence[str]) -> None:
    """The replayed parameters must be the recorded ones, in the same order."""
    recorded = traj.header.get("names") or []
    if recorded and list(recorded) != list(names):
        missing = sorted(set(recorded) - set(names))[:5]
        raise TrajectoryError(f"the model's trainable parameters differ from the recorded ones "
                              f"({len(names)} here vs {len(recorded)} recorded; e.g. missing {missing})")


def describe_size(traj: Trajectory, path: Path | str) -> dict[str, Any]:
    """Sizes for reports: bytes in total, header bytes, bytes per step."""
    total = Path(path).stat().st_size
    return {"bytes": total, "header_bytes": traj.header_bytes, "steps": len(traj),
            "bytes_per_step": (total - traj.header_bytes) / max(len(traj), 1)}

