"""The run folder is owned by one run at a time, and knows which run it holds.

* :class:`RunLock`: an exclusive ``flock`` on ``<run>/run.lock`` for the whole run, released
  by the kernel when the process exits (even on SIGKILL). A second run into the same folder
  fails at once, naming the holder's PID.
* :func:`run_defining`: the config minus the keys that are safe to change between attempts
  (:data:`SAFE_TO_CHANGE`: the run length, logging, checkpoint cadence, threads, the device).
* :func:`plan_attempt`: what a new attempt in a folder does. A completed run with the same
  run-defining config is a no-op; an unfinished one resumes; a different config is refused,
  naming the keys that differ. ``redo=true`` or ``resume=false`` start the folder afresh.
* :func:`resume_folder`: the folder ``resume=last`` (the latest run of the same config, via
  :func:`find_last_run`) or ``resume=<folder>`` continues.

Torch-free, so that the train.py front end can check a folder before Hydra writes into it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from zoft.errors import ZoftUserError

LOCK_NAME = "run.lock"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
# Keys (and key prefixes) that an attempt may change without changing what the run is:
# extending the run, how it logs and checkpoints, where it runs.
SAFE_TO_CHANGE = (
    "trainer.max_steps", "trainer.num_epochs", "trainer.progress_bar", "trainer.log_steps",
    "trainer.checkpoint_steps", "trainer.eval_batch_size", "trainer.cpu_threads", "trainer.requeue_on_signal",
    "logger", "launcher", "resume", "redo", "output_dir", "save_model", "model.device", "protocol",
    "kernel.cache_dir", "kernel.overwrite",
)
LENGTH_KEYS = ("trainer.max_steps", "trainer.num_epochs")
# What a fresh start in a used folder replaces.
RUN_OUTPUTS = ("results.json", "metrics.jsonl", "trajectory.bin", "predictions_dev.jsonl",
               "predictions_test.jsonl", CHECKPOINT_DIR, "model", "kernel")


class RunFolderError(ZoftUserError):
    """The run folder is in use, unwritable, or holds a different run."""


class RunLock:
    """Exclusive ownership of a run folder (``with RunLock(path): ...``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self, record_pid: bool = True) -> "RunLock":
        """Take the lock (or raise naming the holder); ``record_pid=False`` only tests it."""
        check_writable(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RunFolderError(
                f"{self.path.parent} is in use by another zoft run (PID {holder_pid(self.path) or 'unknown'}); "
                "wait for it to finish, or run into another folder (hydra.run.dir=... or output_dir=...)") from None
        if record_pid:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_pid(lock_path: Path) -> Optional[int]:
    try:
        return int(Path(lock_path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_locked(run_dir: Path) -> Optional[str]:
    """An error message when another process holds ``run_dir``'s lock, else None (no side effect
    beyond opening the lock file when it exists)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    try:
        RunLock(run_dir).acquire(record_pid=False).release()
    except RunFolderError as err:
        return str(err)
    return None


def check_writable(folder: Path) -> None:
    """Create ``folder`` (and parents) or raise one clear line when it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create the run folder {folder}: {err.strerror}; "
                             "choose a writable place (hydra.run.dir=... or output_dir=...)") from None
    try:  # a real write: os.access says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise RunFolderError(f"the run folder {folder} is not writable ({err.strerror}); "
                             "choose a writable place (hydra.run.dir=... or output_dir=...)") from None


# ------------------------------------------------------------------------------ which run it is


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_safe(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in SAFE_TO_CHANGE)


# Keys that later versions added, with the value an older record meant by leaving them out.
ADDED_KEYS = {"mode.name": "train"}


def run_defining(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without :data:`SAFE_TO_CHANGE` keys (a key added by a later
    version reads as its default in an older record, so old run folders still resume)."""
    flat = {**ADDED_KEYS, **flatten(config)}
    return {k: v for k, v in flat.items() if not _is_safe(k)}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every run-defining key that differs."""
    old, new = run_defining(before), run_defining(now)
    keys = sorted(set(old) | set(new))
    # Records written before each optimizer option had its own settings carry every option's keys
    # (one flat schema), and the option's _target_ came later: an optimizer key on one side only
    # did nothing in the run that has it, so it does not make the runs differ.
    keys = [k for k in keys if not (k.startswith("optimizer.") and (k in old) != (k in new))]
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys if old.get(k) != new.get(k)]


def same_length(before: dict[str, Any], now: dict[str, Any]) -> bool:
    old, new = flatten(before), flatten(now)
    return all(old.get(k) == new.get(k) for k in LENGTH_KEYS)


@dataclass
class Attempt:
    """What this attempt does in its folder: ``fresh``, ``resume`` or ``done`` (a no-op)."""

    action: str
    previous: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def read_results(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


# resume=<one of these> says how to treat the run folder; any other value names the folder.
RESUME_MODES = ("auto", "true", "false")


def resume_target(resume: Any) -> Optional[str]:
    """``"last"`` or a folder when ``resume`` names which run to continue; None for a mode."""
    value = str(resume)
    return None if value.lower() in RESUME_MODES else value


def run_dir_template(hydra_cfg) -> str:
    """``hydra.run.dir`` of a Hydra config node (a composed config's ``hydra``, or the running
    job's ``HydraConfig``), unresolved (``outputs/${now:...}`` or the one typed): where
    ``resume=last`` looks."""
    from omegaconf import OmegaConf

    return str(OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"])


def runs_root(run_dir_template: str) -> Path:
    """Where ``resume=last`` looks: the fixed part of the run-folder template before its first
    interpolation (``outputs/${now:%Y-%m-%d}/...`` -> ``outputs``); a fixed template is the folder."""
    if "${" not in run_dir_template:
        return Path(run_dir_template)
    head = run_dir_template.split("${", 1)[0]
    return Path(head) if head.endswith("/") else Path(head).parent


def resume_folder(target: str, config: dict[str, Any], run_dir_template: str) -> Path:
    """The folder ``resume=<target>`` continues, found without writing anything: ``last`` is the
    latest run of ``config`` under :func:`runs_root` of the run-folder template (``hydra.run.dir``
    as typed, ``outputs/${now:...}`` by default); any other target must be an existing folder.
    The one place both ``python train.py``'s checks and :func:`zoft.run.run` decide it."""
    if target == "last":
        return find_last_run(runs_root(run_dir_template), config)
    folder = Path(target)
    if not folder.is_dir():
        raise RunFolderError(f"resume={target}: no such run folder (resume takes auto, true, false, last "
                             "or the folder of a run)")
    return folder


def find_last_run(root: Path, config: dict[str, Any]) -> Path:
    """The most recently written run folder under ``root`` whose run-defining config equals
    ``config`` (the keys of :data:`SAFE_TO_CHANGE`, such as the run length, may differ)."""
    matches, others = [], 0
    for results in Path(root).rglob("results.json"):
        before = read_results(results.parent).get("config")
        if before is None:
            continue
        if differences(before, config):
            others += 1
            continue
        matches.append((results.stat().st_mtime, str(results.parent)))
    if not matches:
        raise RunFolderError(f"resume=last: no run of this config under {root}/ ({others} run folder"
                             f"{'' if others == 1 else 's'} there hold other settings); start it without resume=last")
    return Path(max(matches)[1])


def plan_attempt(run_dir: Path, config: dict[str, Any], resume: str, redo: bool) -> Attempt:
    """Decide between a fresh start, a resume and a no-op; refuse a different run.

    ``config`` is the resolved config of this attempt; the folder's ``results.json`` holds the
    previous attempt's (``config`` key) and its ``status``.
    """
    previous = read_results(run_dir)
    has_checkpoint = checkpoint_path(run_dir).is_file()
    mode = str(resume).lower()
    if redo or mode == "false":
        return Attempt("fresh", previous, "starting afresh (" + ("redo=true" if redo else "resume=false") + ")")
    completed = previous.get("status") == "completed"
    if mode == "true" and not has_checkpoint:
        raise RunFolderError(f"resume=true but {checkpoint_path(run_dir)} does not exist; use resume=auto "
                             "(continue when a checkpoint exists) or resume=false")
    if resume_target(resume) is not None and not (has_checkpoint or completed):
        raise RunFolderError(f"resume={resume} but {checkpoint_path(run_dir)} does not exist (the run stopped "
                             "before its first checkpoint); start the run again without resume=")
    if not (completed or has_checkpoint):
        return Attempt("fresh", previous)  # nothing here worth keeping: an attempt that died early
    before = previous.get("config")
    if before is not None:
        changed = differences(before, config)
        if changed:
            what = "a completed run" if completed else "an unfinished run"
            flag = "redo=true" if completed else "resume=false"
            raise RunFolderError(
                f"{run_dir} holds {what} with different settings:\n    " + "\n    ".join(changed)
                + f"\n  Run into a new folder (hydra.run.dir=... or output_dir=...), or start this folder afresh "
                  f"with {flag} (its outputs are replaced)")
        if completed and same_length(before, config):
            return Attempt("done", previous, f"{run_dir} already holds this completed run; nothing to do "
                                             "(redo=true runs it again)")
    if completed and not has_checkpoint:
        raise RunFolderError(f"{run_dir} holds a completed run and {checkpoint_path(run_dir)} is missing, so it "
                             "cannot be extended; run into a new folder, or redo=true")
    return Attempt("resume", previous)


def clear_outputs(run_dir: Path) -> None:
    """Remove a previous attempt's outputs (a fresh start in a used folder)."""
    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
