"""The one-point (residual-feedback) estimator of the MeZO paper's ablation (Malladi et al., 2023,
Appendix; Zhang et al. 2022, "A new one-point residual-feedback oracle for black-box
learning and control"): one forward pass per step, differenced against the previous step's::

    L_t = L(theta_t + eps z_t)
    g_t = (L_t - L_{t-1}) / eps          (g_0 = 0: the first step only measures)
    theta <- theta - lr * (g_t * z_t + weight_decay * theta)

Biased and of high variance (MeZO Table 11: needs ~2x the steps of SPSA at one forward per
step). The previous loss L_{t-1} is a scalar kept in the optimizer state (resume is exact);
replayable from the recorded g_t.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from zoft.optim.directions import Term
from zoft.optim.mezo import MeZO, _f32


class OnePointZO(MeZO):
    """Residual-feedback one-point ZO-SGD (``optimizer=mezo-one-point``); one direction per step."""

    forward_passes_per_step = 1

    def __init__(self, params, **kwargs) -> None:
        if kwargs.get("n_directions", 1) != 1:
            raise ValueError("the one-point estimator uses one direction per step (n_directions=1)")
        super().__init__(params, **kwargs)
        self.previous_loss: Optional[float] = None

    def describe(self) -> dict:
        return {**super().describe(), "rule": "one-point"}

    def _update(self, step: int, grads: Sequence[float]) -> None:
        """theta <- (1 - lr wd) theta - lr g z, folding in the restore of +eps z."""
        (g,) = grads
        jobs = []
        for group, i, p in self._params():
            lr, wd = group["lr"], group["weight_decay"]
            beta = 1.0 - lr * wd
            alpha = -lr * g - (beta * self.eps if self._displaced and not self._is_shadow(p) else 0.0)
            jobs.append((p, None, i, beta, (Term(step, 0, alpha),)))
        self.sampler.apply(jobs)

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None, *,
             projected_grads: Optional[Sequence[float]] = None) -> torch.Tensor:  # type: ignore[override]
        """One step; returns L(theta + eps z). ``projected_grads=[g]`` replays a recorded step."""
        replay = projected_grads is not None
        if closure is None and not replay:
            raise ValueError("the one-point estimator needs a closure that returns the loss")
        step, eps = self.step_count, self.eps
        self._inplace([Term(step, 0, eps)])
        self._displaced = True
        loss = float("nan")
        if replay:
            g = _f32(projected_grads[0])
        else:
            with self._shadowed(step, 0, +eps):
                loss = float(closure())
            if not math.isfinite(loss):
                self._inplace([Term(step, 0, -eps)])
                self._displaced = False
                raise FloatingPointError(f"one-point ZO step {step}: non-finite loss {loss}")
            g = 0.0 if self.previous_loss is None else _f32((loss - self.previous_loss) / eps)
            self.previous_loss = loss
        self._update(step, [g])
        self._displaced = False
        if self.trajectory is not None:
            self.trajectory.record(step, self.param_groups[0]["lr"], [g])
        self.last_projected_grads = [g]
        self.step_count += 1
        return torch.tensor(loss, dtype=torch.float64)

    def _zo_state(self) -> dict:
        return {**super()._zo_state(), "previous_loss": self.previous_loss}

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        super()._load_zo_state(zo)
        if zo is not None:
            self.previous_loss = zo.get("previous_loss")
