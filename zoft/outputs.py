"""Run outputs that survive a kill at any moment: every file is written to a temporary name in
the same folder and renamed into place (an atomic replace on POSIX)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from zoft.errors import ZoftUserError


class OutputWriteError(ZoftUserError, OSError):
    """An output could not be written (unwritable folder, failed write); the previous version of
    the file is intact."""


class DiskFullError(OutputWriteError):
    """No space left while writing an output; the previous version of the file is intact."""


LOW_SPACE = 64 << 20  # bytes: below this, a failed write is reported as a full disk

PACKAGES = ("zoft", "torch", "transformers", "tokenizers", "peft", "accelerate", "datasets",
            "hydra-core", "omegaconf", "wandb", "numpy", "scikit-learn")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputWriteError(f"cannot write {path}: {err.strerror or err} (is {path.parent} writable?)") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written"
        if _is_disk_full(err, path.parent):
            raise DiskFullError(f"no space left on the device while writing {path}; {kept}. "
                                "Free space (or point hydra.run.dir elsewhere) and rerun to resume.") from None
        if isinstance(err, RuntimeError) and "PytorchStreamWriter" in str(err):
            raise OutputWriteError(f"writing {path} failed ({err}); {kept}") from None
        raise


def _is_disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC, or torch's stream writer failing (it reports "file write failed", no errno) on a
    file system that is nearly full."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if isinstance(err, RuntimeError) and "PytorchStreamWriter" in str(err):
        try:
            return shutil.disk_usage(folder).free < LOW_SPACE
        except OSError:
            return False
    return False


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda f: json.dump(payload, f, indent=2, sort_keys=False, default=str))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write(path, lambda f: f.writelines(json.dumps(r, default=str) + "\n" for r in rows))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda f: torch.save(tensors, f), binary=True)


def read_jsonl_tolerant(path: Path) -> list[dict]:
    """Rows of a JSONL log; a truncated last line (a kill mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Append-only JSONL of per-step metrics; each line is flushed, so a kill loses at most the
    line being written (readers skip a truncated last line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, default=str) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the zoft checkout (empty when not a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
