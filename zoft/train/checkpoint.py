"""Resumable training state: one file, written atomically, holding everything the loop needs to
continue bit-identically (trainable weights, optimizer incl. the ZO seed stream, LR schedule,
loop position, RNG states, best-so-far bookkeeping).

It is read back with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers
only, plus the few numpy types of numpy's RNG state (:data:`ALLOWED_GLOBALS`). A file holding
any other pickled object (one copied from a shared disk or downloaded) is refused before
anything in it runs: an arbitrary pickle can execute code when loaded."""

from __future__ import annotations

import pickle
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from zoft.outputs import save_tensors
from zoft.rundir import RunFolderError, differences

CHECKPOINT_NAME = "last.pt"
# What the payload holds besides torch's own types: ``np.random.get_state()`` is a tuple with a
# uint32 ndarray. Nothing else is unpickled (the optimizer's and scheduler's state dicts hold
# tensors, numbers and containers; the RNG states of python and torch are tuples and tensors).
ALLOWED_GLOBALS = [
    getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct,  # numpy 2: np._core
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),  # numpy.dtypes.UInt32DType
]


@dataclass
class LoopState:
    """Bookkeeping of the loop that must survive a restart."""

    step: int = 0  # optimizer steps completed
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    best_dev: dict[str, float] = field(default_factory=dict)
    forward_passes: int = 0
    examples_seen: int = 0
    lr_scale: float = 1.0  # lowered by divergence rollbacks
    rollbacks: int = 0
    seconds: float = 0.0  # training time up to this checkpoint, over every attempt


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    trainable: Sequence[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop: LoopState,
    run_config: Optional[dict] = None,
) -> None:
    """Write the resumable state to ``path`` (temporary file + rename: never half-written),
    with the run's resolved config, which a resume compares against its own."""
    payload = {
        "config": run_config,
        "weights": {n: p.detach().cpu().clone() for n, p in trainable},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": asdict(loop),
        "rng": rng_state(),
    }
    save_tensors(path, payload)


def load_checkpoint(
    path: Path,
    trainable: Sequence[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    run_config: Optional[dict] = None,
) -> LoopState:
    """Restore what :func:`save_checkpoint` wrote; returns the loop bookkeeping.

    With ``run_config``, a checkpoint written under different run-defining settings
    (:func:`zoft.rundir.differences`) is refused before anything is restored.
    """
    payload = read_checkpoint(path)
    if run_config is not None and payload.get("config") is not None:
        changed = differences(payload["config"], run_config)
        if changed:
            raise RunFolderError(f"{path} was written by a run with different settings:\n    "
                                 + "\n    ".join(changed)
                                 + "\n  Run into a new folder, or start afresh with resume=false")
    missing = [n for n, _ in trainable if n not in payload["weights"]]
    if missing:
        raise ValueError(f"checkpoint {path} does not match the model: missing {missing[:3]}")
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(payload["weights"][n].to(p.device))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    return LoopState(**payload["loop"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's payload; a truncated file, a foreign file, or one holding pickled objects
    a zoft checkpoint never contains is a clear error, not a traceback (and nothing in it runs)."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise RunFolderError(_unreadable(path, err)) from None
        raise RunFolderError(
            f"{path} holds a pickled object that a zoft checkpoint never contains ({_refused_global(err)}); "
            "refused to load it, since unpickling it could run code. If the file is not yours, delete it; "
            "start afresh with resume=false") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RunFolderError(_unreadable(path, err)) from None
    if not isinstance(payload, dict) or not {"weights", "optimizer", "scheduler", "loop"} <= set(payload):
        raise RunFolderError(f"{path} is not a zoft checkpoint (no weights/optimizer/scheduler/loop entries)")
    return payload


def _unreadable(path: Path, err: BaseException) -> str:
    return (f"{path} is not a readable zoft checkpoint ({type(err).__name__}: {err}); "
            "it may be truncated. Start afresh with resume=false, or delete it")


def _refused_global(err: BaseException) -> str:
    """The name torch's weights-only unpickler refused, from its message ("Unsupported global:
    GLOBAL os.system ...")."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f"it refers to {found.group(1)}" if found else "a type outside the allow-list"
