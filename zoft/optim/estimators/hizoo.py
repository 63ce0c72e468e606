"""HiZOO (Zhao et al., ICLR 2025, "Second-Order Fine-Tuning without Pain for LLMs: a Hessian
Informed Zeroth-Order Optimizer"; reference code Yanjun-Zhao/HiZOO ``zo_Hessian_step_update``).

A diagonal matrix Sigma (state ``"hessian"``, initialised to 1) shapes the perturbation and
preconditions the step. Per step, with one Gaussian z::

    L0 = L(theta),  L+- = L(theta +- eps * Sigma^{1/2} z)
    Sigma <- (1 - alpha) * Sigma + alpha * |L+ + L- - 2 L0| / (2 eps^2) * z^2 / Sigma
    theta <- theta - lr * ((L+ - L-) / (2 eps) * Sigma^{1/2} z + weight_decay * theta)

with the new Sigma in the update and alpha = ``hessian_smooth`` (the authors: 1e-10 for full
fine-tuning and prefix, 1e-6 for LoRA on OPT-13B). Three forward passes per step.

Memory: Sigma is parameter-sized (float32), i.e. fp32 weights x2 on full-parameter runs;
it is saved in ``state_dict`` (resume is exact). Replayable: the trajectory records two scalars
per step, g = (L+ - L-)/(2 eps) and h = |L+ + L- - 2 L0| / (2 eps^2).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch

from zoft.optim.directions import chunk_size
from zoft.optim.estimators.chunks import TransformedSampler, map_chunks
from zoft.optim.mezo import MeZO, _f32, _loss


class _HessianScaled(TransformedSampler):
    """Direction Sigma^{1/2} z (Sigma looked up chunk by chunk)."""

    def __init__(self, base, hessian_of: Callable[[int], torch.Tensor]) -> None:
        super().__init__(base)
        self.hessian_of = hessian_of

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        size = chunk_size(z.device)
        sigma = self.hessian_of(index).view(-1)[c * size:c * size + z.numel()]
        return (z * sigma.sqrt()).to(x.dtype)


class HiZOO(MeZO):
    """Hessian-informed zeroth-order SGD (``optimizer=hizoo``).

    Args (besides :class:`zoft.optim.MeZO`'s, with ``n_directions`` fixed to 1 as in the paper):
        hessian_smooth: alpha, the EMA rate of the diagonal Hessian.
    """

    accumulates = False  # its own probe: whole batches through step()
    batches_probes = False

    record_width = 2  # (g, h) per step in the trajectory
    forward_passes_per_step = 3

    def __init__(self, params: Iterable, hessian_smooth: float = 1e-8, **kwargs) -> None:
        if kwargs.get("n_directions", 1) != 1:
            raise ValueError("HiZOO uses one direction per step (n_directions=1)")
        if not 0.0 <= hessian_smooth <= 1.0:
            raise ValueError(f"HiZOO hessian_smooth={hessian_smooth} must be in [0, 1]")
        super().__init__(params, **kwargs)
        self.hessian_smooth = float(hessian_smooth)
        self._by_index = {i: p for _, i, p in self._params()}
        self.use_sampler(_HessianScaled(self.sampler, lambda i: self.hessian(self._by_index[i])))

    def describe(self) -> dict:
        return {**super().describe(), "rule": "hizoo", "hessian_smooth": self.hessian_smooth}

    def hessian(self, p: torch.Tensor) -> torch.Tensor:
        """Sigma of parameter ``p`` (float32, created as ones on first use)."""
        state = self.state[p]
        if "hessian" not in state:
            state["hessian"] = torch.ones(p.shape, dtype=torch.float32, device=p.device)
        return state["hessian"]

    def scalars_per_step(self) -> int:
        return self.record_width  # (g, h), as recorded

    def projected_grads_of(self, scalars: Sequence[float]) -> list[float]:
        return list(scalars[:1])  # g; h is the curvature term

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """L0, L+, L- along Sigma^{1/2} z; g = (L+ - L-) / (2 eps), h = |L+ + L- - 2 L0| / (2 eps^2)."""
        step, eps = self.step_count, self.eps
        loss0 = _loss(closure)
        loss_pos, loss_neg = self._two_point(closure, step, 0)
        if closure is None:
            return loss0, []
        if not math.isfinite(loss0):
            self.weights.restore()
            raise FloatingPointError(f"HiZOO step {step}: non-finite loss L0={loss0}; lower optimizer.eps or optimizer.lr")
        g = _f32((loss_pos - loss_neg) / (2 * eps))
        h = _f32(abs(loss_pos + loss_neg - 2 * loss0) / (2 * eps * eps))
        return loss0, [g, h]

    def _descend(self, scalars: Sequence[float]) -> None:
        """Sigma <- (1 - alpha) Sigma + alpha h z^2 / Sigma, then theta <- theta - lr g Sigma^{1/2} z
        (after (1 - lr wd) theta), chunk by chunk, the owed restore first."""
        self._diagonal_pass(scalars, self._params())
        self.weights.settle()

    def _diagonal_pass(self, scalars: Sequence[float], params: Sequence) -> None:
        """The chunked restore, EMA and update of ``params`` (the restore they owe included)."""
        g, h = scalars
        step, alpha = self.step_count, self.hessian_smooth
        meta = {i: (group["lr"], group["weight_decay"], self.weights.owed_by(p)) for group, i, p in params}

        def fn(index, c, draw, theta, sigma):
            lr, wd, owed = meta[index]
            z = draw(step, 0)
            for t in owed:  # undo theta - eps Sigma^{1/2} z with the Sigma that displaced it
                theta.add_((z * sigma.sqrt()).to(theta.dtype), alpha=t.alpha)
            if alpha != 0.0:
                sigma.copy_((1.0 - alpha) * sigma + (alpha * h) * z * z / sigma)
            if lr * wd != 0.0:
                theta.mul_(1.0 - lr * wd)
            theta.add_((z * sigma.sqrt()).to(theta.dtype), alpha=-lr * g)

        map_chunks(self.sampler.base, [(i, [p, self.hessian(p)]) for _, i, p in params], fn)
