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

from zoft.optim.mezo import MeZO, _f32, _loss
from zoft.optim.spec import Capabilities, Setting


def fzoo_coefficients(loss0: float, losses: Sequence[float]) -> list[float]:
    """c_i = (L_i - L0) / (N sigma) with sigma = pstdev(L_1..L_N); zeros when sigma = 0."""
    sigma = statistics.pstdev(losses)
    if sigma == 0.0:
        return [0.0] * len(losses)
    return [(loss - loss0) / (len(losses) * sigma) for loss in losses]


class FZOO(MeZO):
    """FZOO (``optimizer=fzoo``); ``n_directions`` is N (>= 2), ``direction`` defaults to
    Rademacher as in the paper. Other arguments as :class:`zoft.optim.MeZO`."""

    capabilities = Capabilities(summary="FZOO: N one-sided Rademacher probes, step normalised by the std of the "
                                "N losses (N+1 forward passes)", zeroth_order=True, accumulates=False,
                                batches_probes=True, forward_passes="n+1")
    settings = {"n_directions": Setting("int", ">=2", "N, the probes per step; the step is normalised by the "
                                        "std of the N losses")}

    def __init__(self, params: Iterable, n_directions: int = 8, direction: str = "rademacher", **kwargs) -> None:
        if n_directions < 2:
            raise ValueError(f"FZOO n_directions={n_directions} must be >= 2 (sigma is the std of the N losses)")
        super().__init__(params, n_directions=n_directions, direction=direction, **kwargs)

    def describe(self) -> dict:
        return {**super().describe(), "rule": "fzoo"}

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """L0, then L_i at theta + eps u_i (one pass moves from u_{i-1} to u_i); the c_i."""
        step = self.step_count
        if self.batched is not None and closure is not None:  # L0 and the N probes, batched
            loss0, *losses = self.batched.losses(closure, [(step, 0, 0.0)] + [(step, i, self.eps)
                                                                             for i in range(self.n_directions)])
        else:
            loss0 = _loss(closure)
            losses = []
            for i in range(self.n_directions):
                with self.weights.at(step, i, +self.eps):
                    losses.append(_loss(closure))
        if closure is None:
            return loss0, []
        if not all(math.isfinite(v) for v in [loss0, *losses]):
            self.weights.restore()
            raise FloatingPointError(f"FZOO step {step}: non-finite loss (L0={loss0}, L_i={losses}); "
                                     "lower optimizer.eps or optimizer.lr")
        return loss0, [_f32(c) for c in fzoo_coefficients(loss0, losses)]

    def _descend(self, coefficients: Sequence[float]) -> None:
        """theta <- (1 - lr wd) theta - lr sum_i c_i u_i, folding in the restore of u_{N-1}."""
        self.weights.descend(self.step_count, coefficients)
