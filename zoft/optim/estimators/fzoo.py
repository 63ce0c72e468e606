"""FZOO (ICLR 2026; reference code DKmiyan/FZOO, ``trainer.py`` ``zo_step``): N one-sided
Rademacher probes against one unperturbed loss, the step normalised by the spread of the losses.

With L0 = L(theta), L_i = L(theta + eps u_i), u_i in {-1, +1}^d, and sigma the (population)
standard deviation of L_1..L_N::

    c_i   = (L_i - L0) / (N * sigma)
    theta <- theta - lr * (sum_i c_i u_i + weight_decay * theta)

No division by eps: sigma scales like eps * |grad|, so the step is a normalised-SGD step whose
length is set by lr alone (hence FZOO's LRs, ~50x MeZO's). sigma = 0 (all losses equal) gives
no step. N + 1 forward passes per step, no state; the N coefficients c_i are what the
trajectory records (replayable).
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Iterable, Optional, Sequence

import torch

from zoft.optim.directions import Term
from zoft.optim.mezo import MeZO, _f32


def fzoo_coefficients(loss0: float, losses: Sequence[float]) -> list[float]:
    """c_i = (L_i - L0) / (N sigma) with sigma = pstdev(L_1..L_N); zeros when sigma = 0."""
    sigma = statistics.pstdev(losses)
    if sigma == 0.0:
        return [0.0] * len(losses)
    return [(loss - loss0) / (len(losses) * sigma) for loss in losses]


class FZOO(MeZO):
    """FZOO (``optimizer=fzoo``); ``n_directions`` is N (>= 2), ``direction`` defaults to
    Rademacher as in the paper. Other arguments as :class:`zoft.optim.MeZO`."""

    def __init__(self, params: Iterable, n_directions: int = 8, direction: str = "rademacher", **kwargs) -> None:
        if n_directions < 2:
            raise ValueError(f"FZOO n_directions={n_directions} must be >= 2 (sigma is the std of the N losses)")
        super().__init__(params, n_directions=n_directions, direction=direction, **kwargs)

    @property
    def forward_passes_per_step(self) -> int:
        """L0 and one one-sided probe per direction."""
        return self.n_directions + 1

    def describe(self) -> dict:
        return {**super().describe(), "rule": "fzoo"}

    def _probe(self, closure: Optional[Callable], step: int, replay: bool) -> tuple[float, list[float]]:
        """L0, then L_i at theta + eps u_i; in-place tensors are left at theta + eps u_{N-1}."""
        eps, n = self.eps, self.n_directions
        loss0 = float("nan") if replay else float(closure())
        losses = []
        for i in range(n):
            # One pass moves from theta + eps u_{i-1} to theta + eps u_i.
            self._inplace(([Term(step, i - 1, -eps)] if i else []) + [Term(step, i, eps)])
            self._displaced = True
            if not replay:
                with self._shadowed(step, i, +eps):
                    losses.append(float(closure()))
        return loss0, losses

    def _update(self, step: int, coefficients: Sequence[float]) -> None:
        """theta <- (1 - lr wd) theta - lr sum_i c_i u_i, folding in the restore of u_{N-1}."""
        jobs = []
        for group, i, p in self._params():
            lr, wd = group["lr"], group["weight_decay"]
            beta = 1.0 - lr * wd
            alphas = [-lr * c for c in coefficients]
            if self._displaced and not self._is_shadow(p):
                alphas[-1] -= beta * self.eps  # the tensor sits at theta + eps u_{N-1}
            jobs.append((p, None, i, beta, tuple(Term(step, k, a) for k, a in enumerate(alphas))))
        self.sampler.apply(jobs)

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None, *,
             projected_grads: Optional[Sequence[float]] = None) -> torch.Tensor:  # type: ignore[override]
        """One FZOO step; returns L0. ``projected_grads`` replays recorded c_i."""
        replay = projected_grads is not None
        if closure is None and not replay:
            raise ValueError("FZOO needs a closure that returns the loss")
        if replay and len(projected_grads) != self.n_directions:
            raise ValueError(f"replay got {len(projected_grads)} coefficients; FZOO uses N={self.n_directions}")
        step = self.step_count
        loss0, losses = self._probe(closure, step, replay)
        if replay:
            coefficients = [_f32(c) for c in projected_grads]
        else:
            if not all(math.isfinite(v) for v in [loss0, *losses]):
                self._inplace([Term(step, self.n_directions - 1, -self.eps)])
                self._displaced = False
                raise FloatingPointError(f"FZOO step {step}: non-finite loss (L0={loss0}, L_i={losses}); "
                                         "lower optimizer.eps or optimizer.lr")
            coefficients = [_f32(c) for c in fzoo_coefficients(loss0, losses)]
        self._update(step, coefficients)
        self._displaced = False
        if self.trajectory is not None:
            self.trajectory.record(step, self.param_groups[0]["lr"], coefficients)
        self.last_projected_grads = coefficients
        self.step_count += 1
        return torch.tensor(loss0, dtype=torch.float64)
