"""HiZOO (Zhao et al., ICLR 2025, "Second-Order Fine-Tuning without Pain for LLMs: a Hessian
Informed Zeroth-Order Optimizer"), as the authors' current code defines it: Yanjun-Zhao/HiZOO at
4f99055 (2025-02-11), trainer.py ``zo_Hessian_step_update`` and ``efficient_Hessian_perturb_parameters``.

A diagonal Hessian estimate H (state ``"hessian"``, float32, initialised to 1) shapes the
perturbation and preconditions the step. Per step, with one Gaussian z (all elementwise)::

    L0 = L(theta),  L+- = L(theta +- eps * z / sqrt(H))          (L0 first, then L+, then L-)
    h  = |L+ + L- - 2 L0| / (2 eps^2)
    H  <- (1 - alpha) * H + alpha * h * H * z^2                   (the old H on the right)
    theta <- theta - lr * (g * z / sqrt(H) + weight_decay * theta),   g = (L+ - L-) / (2 eps)

with the new H in the step and alpha = ``hessian_smooth``. In the code's order: the weights are
restored with the H that displaced them, then H is updated, then the step is taken; zoft does
the three in one chunked pass, in that order. Three forward passes per step.

What the authors' first release (Feb. 2024, ``large_models/trainer.py``) did instead, and what
zoft implemented until this module followed the current code: it kept Sigma (read as the
inverse Hessian), perturbed along Sigma^{1/2} z, updated
Sigma <- (1 - alpha) Sigma + alpha * h * z^2 / Sigma and stepped along g * Sigma^{1/2} z. That
EMA mixes Sigma with an estimate of its own inverse, so Sigma grows where the curvature is large:
on a diagonal quadratic it learns the opposite of a preconditioner. The current code keeps H
itself; its fixed point is H proportional to the curvature (H_i = (d + 2)/2 a_i on a quadratic
with curvatures a_i in d dimensions), so steps shrink where the curvature is large.

Left out of the authors' code on purpose: its fourth forward pass after the step (a loss for
logging only; zoft returns L0); H in the weights' dtype (fp16 in their scripts; zoft keeps
float32); weight decay on biases and norms (zoft's parameter groups exclude them, as for MeZO).

``hessian_smooth``: the authors use constant alpha = 1e-8 (current README, OPT-13B full
fine-tuning), 1e-10 (first release: full and prefix) and 1e-6 (first release: LoRA). The step
multiplies H by (1 - alpha + alpha h z^2), so what matters is alpha * h; zoft's rule for another
model size is alpha * median(h) ~ 1e-3 with h measured at H = 1 (docs/estimators.md).

Memory: H is parameter-sized (float32), i.e. fp32 weights x2 on full-parameter runs; it is saved
in ``state_dict`` as float32 whatever the weights' dtype (resume is exact). Replayable: the
trajectory records two scalars per step, g and h.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch

from zoft.optim.directions import chunk_size
from zoft.optim.estimators.chunks import TransformedSampler, map_chunks
from zoft.optim.mezo import MeZO, _f32, _loss
from zoft.optim.spec import Capabilities, Setting

# Optimizer-state entries kept in float32 whatever the parameter's dtype.
FLOAT32_STATE = ("hessian", "hessian_row", "hessian_col")


class _HessianScaled(TransformedSampler):
    """Direction z / sqrt(H) (H looked up chunk by chunk)."""

    def __init__(self, base, hessian_of: Callable[[int], torch.Tensor]) -> None:
        super().__init__(base)
        self.hessian_of = hessian_of

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        size = chunk_size(z.device)
        hessian = self.hessian_of(index).view(-1)[c * size:c * size + z.numel()]
        return (z / hessian.sqrt()).to(x.dtype)


class HiZOO(MeZO):
    """Hessian-informed zeroth-order SGD (``optimizer=hizoo``).

    Args (besides :class:`zoft.optim.MeZO`'s, with ``n_directions`` fixed to 1 as in the paper):
        hessian_smooth: alpha, the EMA rate of the diagonal Hessian.
    """

    capabilities = Capabilities(summary="HiZOO: diagonal-Hessian-shaped perturbation and preconditioned step "
                                "(3 forward passes)", zeroth_order=True, accumulates=False, forward_passes="3",
                                parameter_state="diagonal Hessian (float32)")
    settings = {
        "hessian_smooth": Setting("float", "[0,1)", "the Hessian moving-average weight"),
        "n_directions": Setting("int", "[1,1]", "directions per step; HiZOO uses one"),
    }
    record_width = 2  # (g, h) per step in the trajectory

    def __init__(self, params: Iterable, hessian_smooth: float = 1e-8, **kwargs) -> None:
        if kwargs.get("n_directions", 1) != 1:
            raise ValueError("HiZOO uses one direction per step (n_directions=1)")
        # The setting's range, declared above and checked by the config first; kept for code that
        # builds the optimizer directly. At 1 the EMA forgets H entirely
        # (H <- h H z^2), which is 0 wherever z or h is, and the step divides by sqrt(H).
        if not 0.0 <= hessian_smooth < 1.0:
            raise ValueError(f"hessian_smooth={hessian_smooth} must be in [0, 1) (the Hessian moving-average weight)")
        super().__init__(params, **kwargs)
        self.hessian_smooth = float(hessian_smooth)
        self._by_index = {i: p for _, i, p in self._params()}
        self.use_sampler(_HessianScaled(self.sampler, lambda i: self.hessian(self._by_index[i])))

    def describe(self) -> dict:
        # "hizoo-2025": the rule of the authors' current code (H kept, z / sqrt(H)); trajectories
        # recorded with the first release's rule ("hizoo") are refused on replay.
        return {**super().describe(), "rule": "hizoo-2025", "hessian_smooth": self.hessian_smooth}

    def hessian(self, p: torch.Tensor) -> torch.Tensor:
        """H of parameter ``p`` (float32, created as ones on first use)."""
        state = self.state[p]
        if "hessian" not in state:
            state["hessian"] = torch.ones(p.shape, dtype=torch.float32, device=p.device)
        return state["hessian"]

    def scalars_per_step(self) -> int:
        return self.record_width  # (g, h), as recorded

    def projected_grads_of(self, scalars: Sequence[float]) -> list[float]:
        return list(scalars[:1])  # g; h is the curvature term

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """L0, L+, L- along z / sqrt(H); g = (L+ - L-) / (2 eps), h = |L+ + L- - 2 L0| / (2 eps^2)."""
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
        """H <- (1 - alpha) H + alpha h H z^2, then theta <- theta - lr g z / sqrt(H)
        (after (1 - lr wd) theta), chunk by chunk, the owed restore first."""
        self._diagonal_pass(scalars, self._params())
        self.weights.forget_owed_restore()

    def _diagonal_pass(self, scalars: Sequence[float], params: Sequence) -> None:
        """The chunked restore, EMA and update of ``params`` (the restore they owe included)."""
        g, h = scalars
        step, alpha = self.step_count, self.hessian_smooth
        meta = {i: (group["lr"], group["weight_decay"], self.weights.owed_by(p)) for group, i, p in params}

        def fn(index, c, draw, theta, hessian):
            lr, wd, owed = meta[index]
            z = draw(step, 0)
            for t in owed:  # undo theta - eps z / sqrt(H) with the H that displaced it
                theta.add_((z / hessian.sqrt()).to(theta.dtype), alpha=t.alpha)
            if alpha != 0.0:
                hessian.copy_((1.0 - alpha) * hessian + (alpha * h) * (hessian * z * z))
            if lr * wd != 0.0:
                theta.mul_(1.0 - lr * wd)
            theta.add_((z / hessian.sqrt()).to(theta.dtype), alpha=-lr * g)

        map_chunks(self.sampler.base, [(i, [p, self.hessian(p)]) for _, i, p in params], fn)

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but H stays float32: torch casts floating-point state to the parameter's
        dtype, which would round a bf16 model's H to bf16 and break exact resume."""
        state_dict = dict(state_dict)
        saved = {pid: {k: v.clone() for k, v in entry.items() if k in FLOAT32_STATE}
                 for pid, entry in state_dict.get("state", {}).items()}
        super().load_state_dict(state_dict)
        ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            for key, value in saved.get(pid, {}).items():
                self.state[p][key] = value.to(device=p.device, dtype=torch.float32)
