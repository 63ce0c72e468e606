"""Training precision: which dtype the weights live in, and whether forward passes autocast.

``trainer.precision`` (set by the protocol table):

* ``pure``: the weights train in ``model.dtype`` as loaded. The paper's MeZO loads OPT in fp16
  this way (large_models/mezo.sh ``--load_float16``): no master copy, inference-level memory.
* ``amp``: fp32 master weights; forward passes autocast to a half ``model.dtype`` on devices
  that support it (CUDA), as the original's ``--fp16`` did for backprop. fp16 autocast uses
  dynamic loss scaling (:class:`LossScaler`). On a CPU the run trains plain fp32 and says so.
* ``fp32``: fp32 weights, no autocast (the paper's head tuning).

A first-order optimizer with ``pure`` half weights is refused by config validation.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class PrecisionPlan:
    """How a run holds and evaluates its weights."""

    load_dtype: str  # the dtype the model is loaded (and trained) in
    autocast_dtype: Optional[torch.dtype]  # forward autocast on the device, or None
    notice: Optional[str] = None  # one line for the log when the plan differs from model.dtype

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward-pass context: autocast when planned, else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def plan_precision(precision: str, model_dtype: str, device: torch.device) -> PrecisionPlan:
    """The plan for ``trainer.precision`` with weights of ``model.dtype`` on ``device``."""
    if precision == "pure" or model_dtype not in HALF:  # full-precision weights are kept as they are
        return PrecisionPlan(model_dtype, None)
    if precision == "fp32":
        return PrecisionPlan("float32", None, f"model.dtype={model_dtype} with trainer.precision=fp32: "
                                              "training fp32 weights")
    if device.type == "cuda":
        return PrecisionPlan("float32", HALF[model_dtype])
    return PrecisionPlan("float32", None, f"model.dtype={model_dtype} with trainer.precision=amp on {device.type}: "
                                          f"training fp32 master weights without {model_dtype} autocast "
                                          "(autocast is used on CUDA devices)")


class LossScaler:
    """Dynamic loss scaling for fp16 autocast: multiply the loss before backward, divide the
    gradients after it, and skip the update (gradients set to None, which every torch optimizer
    skips) when they overflowed, halving the scale; the scale doubles after ``growth_interval``
    clean steps. The same rule as ``torch.amp.GradScaler``, written for closure-style steps."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_interval: int = 2000) -> None:
        self.scale = init_scale
        self.growth_interval = growth_interval
        self._clean_steps = 0

    def unscale_or_skip(self, params: Iterable[torch.nn.Parameter]) -> bool:
        """Divide the gradients by the scale; True when they are finite (the step may proceed)."""
        params = [p for p in params if p.grad is not None]
        finite = all(bool(torch.isfinite(p.grad).all()) for p in params)
        if not finite:
            for p in params:
                p.grad = None
            self.scale = max(self.scale / 2.0, 1.0)
            self._clean_steps = 0
            return False
        for p in params:
            p.grad.div_(self.scale)
        self._clean_steps += 1
        if self._clean_steps % self.growth_interval == 0 and math.isfinite(self.scale * 2.0):
            self.scale *= 2.0
        return True
