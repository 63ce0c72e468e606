"""MeZO: memory-efficient zeroth-order SGD (Malladi et al., 2023, Algorithm 1; the original's large_models/trainer.py ``zo_step`` and
medium_models/src/trainer.py).

``MeZO.step(closure)`` evaluates the loss at theta + eps*z and theta - eps*z, where z is a random
direction regenerated from a seed (never stored), and moves theta along z by the projected
gradient g = (L+ - L-) / (2 eps)::

    theta <- theta - lr * (g * z + weight_decay * theta)

With ``n_directions = n`` the n estimates are averaged: theta <- theta - lr/n * sum_k g_k z_k.

How a step touches the weights (per direction, z drawn chunk by chunk, see
:mod:`zoft.optim.directions`):

* in place (fp32/fp64 parameters by default): +eps z, forward, -2 eps z, forward, then ONE pass
  that restores and updates, theta <- (1 - lr wd) (theta + eps z) - lr g z. Three draws of z and
  three in-place passes per step (the original: four draws, out-of-place copies).
* shadow (fp16/bf16 parameters by default, or ``perturbation="shadow"``): modules see
  theta +- eps z through forward hooks (:mod:`zoft.optim.shadow`) and theta changes only in the
  update, so the restore is exact (MeZO issue #42).

Differences from the original, on purpose:
* z comes from private generators seeded with hash(seed, step, direction, tensor, chunk): the
  global RNG is untouched and z is reproducible whatever order tensors are visited in;
* the learning rate comes from the param groups, so LR schedules apply;
* weight decay is excluded from biases and normalisation weights by the parameter groups that
  :func:`zoft.optim.build.build_optimizer` makes;
* g is rounded to float32 before use, so the trajectory file stores exactly what was applied.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from zoft.optim.directions import ACCEL_CHUNK, CHUNK, DIRECTIONS, DirectionSampler, Term, mix
from zoft.optim.shadow import ShadowPerturbation

from zoft.config.choices import PERTURBATIONS  # noqa: E402 - one vocabulary
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _f32(x: float) -> float:
    """Round to float32 (the precision stored in the trajectory file)."""
    return float(np.float32(x))


class MeZO(torch.optim.Optimizer):
    """Zeroth-order SGD with seeded, chunked perturbations (inference-level memory).

    Args:
        params: parameters or parameter groups (each group may set ``lr``/``weight_decay``).
        lr: learning rate.
        eps: perturbation scale (> 0).
        weight_decay: L2 term applied with the update (theta <- theta - lr * wd * theta).
        n_directions: directions per step (n-SPSA); their estimates are averaged.
        direction: ``gaussian`` (the paper's) or ``rademacher`` (+-1 entries, cheaper to draw).
        seed: seed of the perturbation stream (independent of every global RNG).
        perturbation: ``auto`` (shadow for fp16/bf16 parameters, in place otherwise),
            ``inplace`` or ``shadow`` (exact restore; needs ``model``).
        model: the module that uses the parameters (needed for shadow perturbation).
        threads: CPU threads drawing z (0: ``torch.get_num_threads()``).
    """

    zeroth_order = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-6,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        n_directions: int = 1,
        direction: str = "gaussian",
        seed: int = 0,
        perturbation: str = "auto",
        model: Optional[torch.nn.Module] = None,
        threads: int = 0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"MeZO lr={lr} must be >= 0")
        if not eps > 0:
            raise ValueError(f"MeZO eps={eps} must be > 0")
        if n_directions < 1:
            raise ValueError(f"MeZO n_directions={n_directions} must be >= 1")
        if direction not in DIRECTIONS:
            raise ValueError(f"MeZO direction={direction!r}; valid: {', '.join(DIRECTIONS)}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"MeZO perturbation={perturbation!r}; valid: {', '.join(PERTURBATIONS)}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.eps = float(eps)
        self.n_directions = int(n_directions)
        self.direction = direction
        self.seed = int(seed)
        self.perturbation = perturbation
        self.step_count = 0
        self.last_projected_grads: list[float] = []
        self.sampler = DirectionSampler(direction, self.seed, threads)
        self.trajectory = None  # a zoft.optim.trajectory.TrajectoryWriter, when recording
        self._pending: Optional[list[float]] = None  # sum of estimates of the current step, per direction
        self._displaced = False  # in-place tensors sit at theta - eps z_last
        shadow = {id(p): (i, p) for _, i, p in self._params() if self._is_shadow(p)}
        if shadow and model is None:
            raise ValueError("MeZO: exact (shadow) perturbation of fp16/bf16 parameters needs the model: "
                             "MeZO(params, model=model, ...), or perturbation='inplace' to accept an "
                             "inexact restore")
        self._shadow = ShadowPerturbation(model, shadow, self.sampler) if shadow else None

    @property
    def forward_passes_per_step(self) -> int:
        """Forward passes of one step: two per direction (two-point SPSA); estimators that
        differ (FZOO's N+1, HiZOO's 3, one-point's 1) override it."""
        return 2 * self.n_directions

    def _is_shadow(self, p: torch.Tensor) -> bool:
        return self.perturbation == "shadow" or (self.perturbation == "auto" and p.dtype in LOW_PRECISION)

    def _params(self) -> list[tuple[dict, int, torch.Tensor]]:
        """(group, global tensor index, parameter) for every parameter, in group order."""
        out, index = [], 0
        for group in self.param_groups:
            for p in group["params"]:
                out.append((group, index, p))
                index += 1
        return out

    def describe(self) -> dict:
        """Everything that determines the arithmetic of a step (written in trajectory headers)."""
        return {"class": type(self).__name__, "seed": self.seed, "eps": self.eps,
                "n_directions": self.n_directions, "direction": self.direction, "chunk": [CHUNK, ACCEL_CHUNK],
                "perturbation": self.perturbation,
                "shadow": [self._is_shadow(p) for _, _, p in self._params()],
                "weight_decay": [g["weight_decay"] for g in self.param_groups],
                "group_sizes": [len(g["params"]) for g in self.param_groups]}

    def direction_of(self, index: int, step: int, k: int = 0) -> torch.Tensor:
        """z of tensor ``index`` for direction ``k`` at ``step`` (float32; for tests/analysis)."""
        p = self._params()[index][2]
        return self.sampler.direction(p.shape, step, k, index, p.device)

    # -- passes over the weights -----------------------------------------------------------
    def _inplace(self, terms: Sequence[Term]) -> None:
        """One pass over the in-place tensors adding ``sum alpha z`` (several draws, one pass)."""
        self.sampler.apply([(p, None, i, 1.0, tuple(terms))
                            for _, i, p in self._params() if not self._is_shadow(p)])

    def _shadowed(self, step: int, k: int, alpha: float):
        return self._shadow.perturbed(step, k, alpha) if self._shadow else nullcontext()

    def _update(self, step: int, grads: Sequence[float]) -> None:
        """Restore the displaced direction (in-place tensors) and apply the averaged update, one pass."""
        n = len(grads)
        jobs = []
        for group, i, p in self._params():
            lr, wd = group["lr"], group["weight_decay"]
            beta = 1.0 - lr * wd
            alphas = [-lr * g / n for g in grads]
            if self._displaced and not self._is_shadow(p):
                # (1 - lr wd) * (theta'' + eps z_last) - lr/n sum g_k z_k, with theta'' = theta - eps z_last
                alphas[-1] += beta * self.eps
            jobs.append((p, None, i, beta, tuple(Term(step, k, a) for k, a in enumerate(alphas))))
        self.sampler.apply(jobs)

    # -- the step --------------------------------------------------------------------------
    @torch.no_grad()
    def estimate(self, closure: Optional[Callable[[], torch.Tensor | float]] = None, scale: float = 1.0, *,
                 projected_grads: Optional[Sequence[float]] = None) -> float:
        """Evaluate the closure at theta +- eps z_k for each direction and add ``scale * g_k`` to
        the pending estimate of this step; returns the first loss L+ (times ``scale``).

        Call it once per micro-batch to accumulate (the micro-batches share the directions),
        then :meth:`step` without a closure applies the update. The in-place tensors are left at
        theta - eps z_last; the next pass (another estimate or the update) folds the restore in.
        ``projected_grads`` replays recorded values instead of calling the closure.
        """
        replay = projected_grads is not None
        if closure is None and not replay:
            raise ValueError("MeZO needs a closure that returns the loss")
        if replay and len(projected_grads) != self.n_directions:
            raise ValueError(f"replay got {len(projected_grads)} projected gradients; this optimizer "
                             f"uses n_directions={self.n_directions}")
        if self._pending is not None and self.trajectory is not None:
            raise ValueError("a recorded trajectory replays one estimate per step; accumulate "
                             "micro-batches inside the closure instead")
        step, eps, n = self.step_count, self.eps, self.n_directions
        pending = self._pending or [0.0] * n
        first_loss = float("nan")
        for k in range(n):
            terms = [Term(step, k, eps)]
            if k == 0 and self._displaced:  # still at theta - eps z_last from the previous estimate
                terms = [Term(step, n - 1, eps)] + terms if n > 1 else [Term(step, 0, 2 * eps)]
            self._inplace(terms)
            if not replay:
                with self._shadowed(step, k, +eps):
                    loss_pos = float(closure())
            self._inplace([Term(step, k, -2 * eps)])
            self._displaced = True
            if not replay:
                with self._shadowed(step, k, -eps):
                    loss_neg = float(closure())
                if not (math.isfinite(loss_pos) and math.isfinite(loss_neg)):
                    self._inplace([Term(step, k, eps)])
                    self._displaced, self._pending = False, None
                    raise FloatingPointError(f"MeZO step {step}: non-finite loss (L+={loss_pos}, "
                                             f"L-={loss_neg}); lower optimizer.eps or optimizer.lr")
                pending[k] += _f32(scale * (loss_pos - loss_neg) / (2 * eps))
                if k == 0:
                    first_loss = scale * loss_pos
            else:
                pending[k] += _f32(projected_grads[k])
            if k < n - 1:
                self._inplace([Term(step, k, eps)])  # restore before the next direction
                self._displaced = False
        self._pending = pending
        return first_loss

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor | float]] = None, *,
             projected_grads: Optional[Sequence[float]] = None) -> torch.Tensor:  # type: ignore[override]
        """One MeZO step; ``closure`` evaluates the loss (any scalar) at the current weights.

        Without a closure, applies the estimate accumulated by :meth:`estimate` calls.
        ``projected_grads`` (one per direction) replays a recorded step: the weights go through
        exactly the same arithmetic, without calling a closure.
        """
        first_loss = float("nan")
        if closure is not None or projected_grads is not None:
            if self._pending is not None:
                raise ValueError("MeZO.step(closure) with an estimate pending; call step() to apply it")
            first_loss = self.estimate(closure, projected_grads=projected_grads)
        elif self._pending is None:
            raise ValueError("MeZO.step needs a closure that returns the loss (or a prior estimate())")
        step = self.step_count
        grads = [_f32(g) for g in self._pending]
        self._update(step, grads)
        self._displaced, self._pending = False, None
        if self.trajectory is not None:
            self.trajectory.record(step, self.param_groups[0]["lr"], grads)
        self.last_projected_grads = grads
        self.step_count += 1
        return torch.tensor(first_loss)

    # -- recording -------------------------------------------------------------------------
    def attach_trajectory(self, writer) -> None:
        """Append (step, lr, projected gradients) of every following step to ``writer``."""
        self.trajectory = writer

    # -- state -----------------------------------------------------------------------------
    def _zo_state(self) -> dict:
        return {"seed": self.seed, "step_count": self.step_count, "eps": self.eps,
                "n_directions": self.n_directions, "direction": self.direction}

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        if zo is None:
            return
        if zo.get("direction", self.direction) != self.direction:
            raise ValueError(f"saved MeZO state uses direction={zo['direction']!r}, this optimizer "
                             f"{self.direction!r}")
        self.seed, self.step_count = int(zo["seed"]), int(zo["step_count"])
        self.sampler.seed = self.seed
        self._pending, self._displaced = None, False  # states are saved between steps

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["zo"] = self._zo_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        super().load_state_dict(state_dict)
        self._load_zo_state(zo)


class ZOFirstOrder(MeZO):
    """The ZO estimate written into ``.grad`` and consumed by a first-order optimizer
    (the original's medium_models/src/trainer.py, "ZO with trainer optimizer"): MeZO-Adam (``inner="adam"``, AdamW) or
    zeroth-order SGD with momentum (``inner="sgd"``).

    Per step: estimate g_k along each direction (same passes as :class:`MeZO`), restore theta,
    set ``p.grad = (1/n) sum_k g_k z_k`` and call the inner optimizer's ``step()``. Weight decay
    is the inner optimizer's (decoupled for AdamW, L2 for SGD). Memory: the gradient and the inner
    optimizer's state are parameter-sized, as for any first-order optimizer.
    """

    def __init__(self, params: Iterable, inner: str = "adam", lr: float = 1e-6,
                 betas: Sequence[float] = (0.9, 0.999), adam_eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, **kwargs) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, **kwargs)
        if inner == "adam":
            self.inner = torch.optim.AdamW(self.param_groups, lr=lr, betas=tuple(betas), eps=adam_eps,
                                           weight_decay=weight_decay)
        elif inner == "sgd":
            self.inner = torch.optim.SGD(self.param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            raise ValueError(f"ZOFirstOrder inner={inner!r}; valid: adam, sgd")
        self.inner_name = inner
        self._link()

    def _link(self) -> None:
        # One list of group dicts: an LR scheduler on this optimizer drives the inner one.
        self.param_groups = self.inner.param_groups
        self.state = self.inner.state

    def describe(self) -> dict:
        return {**super().describe(), "inner": self.inner_name,
                "inner_defaults": {k: v for k, v in self.inner.defaults.items() if isinstance(v, (int, float, tuple, list, bool))}}

    def _update(self, step: int, grads: Sequence[float]) -> None:
        n = len(grads)
        if self._displaced:
            self._inplace([Term(step, n - 1, self.eps)])
        jobs = []
        for _, i, p in self._params():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            jobs.append((p.grad, None, i, 0.0, tuple(Term(step, k, g / n) for k, g in enumerate(grads))))
        self.sampler.apply(jobs)
        with torch.enable_grad():
            self.inner.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "zo": self._zo_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        self._link()
        self._load_zo_state(state_dict.get("zo"))
