"""Kernel files (as the original's medium_models/src/kernel_trainer.py saves and loads them) and the cache that keeps them apart.

A kernel file ``{mode}_kernels_{task}.pt`` (mode in train/dev/test) is ``torch.save`` of the
tuple (kernel, targets): kernel float [N_train, C, N_X, C] ("training examples, training logits,
X examples, X logits"), or [2, N_train, C, N_X, C] for asymmetric SignGD (standard, flipped);
targets are the labels of the X set. ``{mode}_logits_{task}.pt`` holds (f0 [N_X, C], targets) of
the pre-trained model. These are the names and layout of the published pre-computed kernels, so
a folder of them can be passed as ``kernel.load_dir``.

zoft's own cache adds a key to the name, ``{mode}_kernels_{task}.{key}.pt``, where key hashes
everything the kernel depends on (model identity and a fingerprint of its weights, the encoded
inputs — so data, template and label words — the formula, the binary flag and the parameter
subset); a sidecar ``.json`` lists those inputs. A changed input gives a new key, never a stale
file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from zoft.errors import ZoftUserError
from zoft.outputs import atomic_write, write_json

MODES = ("train", "dev", "test")


class KernelFileError(ZoftUserError, ValueError):
    """A kernel file is missing or does not have the expected layout."""


def kernel_file(folder: Path, mode: str, task: str, key: str | None = None, kind: str = "kernels") -> Path:
    """``{mode}_{kind}_{task}[.{key}].pt`` in ``folder`` (kind: kernels | logits)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; valid: {', '.join(MODES)}")
    return Path(folder) / f"{mode}_{kind}_{task}{'.' + key if key else ''}.pt"


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable description of the kernel's inputs."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """Cheap fingerprint of model weights: per-tensor shape, sum and sum of squares in float64."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if not t.is_floating_point():
            t = t.double()
        h.update(f"{name}{tuple(t.shape)}{t.double().sum().item():.12e}{t.double().square().sum().item():.12e}".encode())
    return h.hexdigest()[:16]


def save_kernel(path: Path, kernel: torch.Tensor, targets: torch.Tensor, sidecar: dict[str, Any] | None = None) -> None:
    """Write (kernel, targets) atomically; with ``sidecar``, also ``<path>.json`` describing it."""
    atomic_write(Path(path), lambda f: torch.save((kernel, targets), f), binary=True)
    if sidecar is not None:
        write_json(Path(str(path) + ".json"), sidecar)


def load_kernel(path: Path, asymmetric: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, targets) from a kernel file, checked for the documented layout."""
    path = Path(path)
    if not path.is_file():
        raise KernelFileError(f"kernel file {path} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj)):
        raise KernelFileError(f"{path} does not hold a (kernel, targets) pair of tensors")
    kernel, targets = obj
    want = (5,) if asymmetric else (4,) if asymmetric is False else (4, 5)
    if kernel.dim() not in want or (kernel.dim() == 5 and kernel.shape[0] != 2):
        raise KernelFileError(f"{path}: kernel has shape {tuple(kernel.shape)}; expected [N_train, C, N_X, C]"
                              + (" or [2, N_train, C, N_X, C]" if asymmetric is None else "")
                              + (" with a leading 2 (asymmetric SignGD)" if asymmetric else ""))
    if kernel.shape[-2] != targets.shape[0] or kernel.shape[-1] != kernel.shape[-3]:
        raise KernelFileError(f"{path}: kernel {tuple(kernel.shape)} does not match {targets.shape[0]} targets "
                              "or its logit axes differ")
    return kernel, targets
