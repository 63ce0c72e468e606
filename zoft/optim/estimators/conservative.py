"""ZO-SGD-Cons (ZO-Bench, Zhang et al., ICML 2024, Appendix A): take the ZO-SGD step only if it
lowers the loss on the batch.

With L0 = L(theta) and the MeZO estimate g_hat = (1/n) sum_k g_k z_k, the two candidate points
theta -+ lr g_hat are evaluated and the lowest of the three losses wins::

    s = argmin over {0: L0, +1: L(theta - lr g_hat), -1: L(theta + lr g_hat)}
    theta <- theta - s * lr * (g_hat + weight_decay * theta)          (no decay when s = 0)

A candidate wins only when its loss is strictly below L0; between the two candidates the descent
side (s = +1) wins ties. 2n + 3 forward passes per step. The candidates are evaluated through the
exact shadow perturbation (theta is never moved to a rejected point), so it needs the model, and
the step is replayable: the trajectory records s * g_k.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch

from zoft.optim.directions import DirectionSampler, Job, Term
from zoft.optim.mezo import MeZO, _f32, _loss
from zoft.optim.spec import Capabilities, Setting
from zoft.optim.shadow import ShadowPerturbation

COMBINED = -1  # Term.k standing for sum_k c_k z_k (the candidate step direction)


class _CombinedSampler:
    """Expands ``Term(step, COMBINED, alpha)`` into ``sum_k alpha * c_k z_k`` for the shadow hooks."""

    def __init__(self, base: DirectionSampler) -> None:
        self.base = base
        self.coefficients: Sequence[float] = ()

    def apply(self, jobs: Sequence[Job]) -> None:
        expanded = []
        for dst, src, index, beta, terms in jobs:
            out = []
            for t in terms:
                if t.k == COMBINED:
                    out.extend(Term(t.step, k, t.alpha * c) for k, c in enumerate(self.coefficients))
                else:
                    out.append(t)
            expanded.append(Job(dst, src, index, beta, tuple(out)))
        self.base.apply(expanded)


class ZOConservative(MeZO):
    """Conservative zeroth-order SGD (``optimizer=zo-sgd-cons``); needs ``model``.

    Takes the arguments of :class:`zoft.optim.MeZO`. ``step`` returns L0 = L(theta).
    ``last_step_sign`` is s of the last step (1 descent, -1 ascent side, 0 rejected).
    """

    capabilities = Capabilities(summary="ZO-SGD-Cons (ZO-Bench): the MeZO step only if it lowers the batch loss "
                                "(2n+3 forward passes)", zeroth_order=True, accumulates=False, forward_passes="2n+3")

    def __init__(self, params: Iterable, model: Optional[torch.nn.Module] = None, **kwargs) -> None:
        super().__init__(params, model=model, **kwargs)
        if model is None:
            raise ValueError("ZO-SGD-Cons evaluates its candidate steps through exact (shadow) "
                             "perturbation and needs the model: ZOConservative(params, model=model, ...)")
        self._combined = _CombinedSampler(self.sampler)
        everything = {id(p): (i, p) for _, i, p in self._params()}
        self._candidates = ShadowPerturbation(model, everything, self._combined)
        self.last_step_sign = 0
        self._estimate: Optional[list[float]] = None

    def describe(self) -> dict:
        return {**super().describe(), "rule": "conservative"}

    def _candidate_loss(self, closure: Callable, step: int, grads: Sequence[float], lr: float) -> float:
        # The module sees theta + lr * sum_k (grads_k / n) z_k (lr of the first group: the
        # candidates are a line search, per-group LRs scale with it).
        self._combined.coefficients = [g / len(grads) for g in grads]
        with self._candidates.perturbed(step, COMBINED, lr):
            return float(closure())

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """L0, the two-point estimate from theta, then the loss at theta -+ lr g_hat: the step
        keeps the better candidate (s = +1: descend, -1: ascend) or none (s = 0); returns s * g_k."""
        step = self.step_count
        loss0 = _loss(closure)
        _, grads = super()._probe(closure)
        self.weights.restore()  # back to theta: the candidates are measured from it
        if closure is None:
            return loss0, []
        lr = self.param_groups[0]["lr"]
        down = self._candidate_loss(closure, step, grads, -lr)
        up = self._candidate_loss(closure, step, grads, +lr)
        if not all(math.isfinite(v) for v in (loss0, down, up)):
            raise FloatingPointError(f"ZO-SGD-Cons step {step}: non-finite loss (L0={loss0}, "
                                     f"L(theta - lr g)={down}, L(theta + lr g)={up})")
        sign = 1 if (down < loss0 and down <= up) else (-1 if up < loss0 else 0)
        self.last_step_sign, self._estimate = sign, grads
        return loss0, [_f32(sign * g) for g in grads]

    def projected_grads_of(self, scalars: Sequence[float]) -> list[float]:
        """The estimate g_k before the sign (a replayed step only knows s * g_k)."""
        estimate, self._estimate = self._estimate, None
        return list(scalars) if estimate is None else estimate

    def _descend(self, signed: Sequence[float]) -> None:
        if any(g != 0.0 for g in signed):
            super()._descend(signed)
        else:
            self.weights.restore()  # no step (s = 0): the weights must still be back at theta
