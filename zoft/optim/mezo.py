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
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from zoft.optim.batched import BatchedProbes
from zoft.optim.directions import ACCEL_CHUNK, CHUNK, DirectionSampler, Job, Term
from zoft.optim.displacement import Displacement, IndexedParam
from zoft.optim.shadow import ShadowPerturbation
from zoft.optim.spec import Capabilities, Setting, passes_per_step

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
        probe_batch: probes of one step evaluated in one batched forward (1: one after another;
            > 1 needs ``model`` and uses shadow perturbation, see :mod:`zoft.optim.batched`).

    The estimators in :mod:`zoft.optim.estimators` subclass it and replace :meth:`_probe`
    (which losses, which scalars) and :meth:`_descend` (the update from those scalars).
    """

    # The option's record (zoft.optim.spec), read by the config layer from this source.
    # accumulates: estimate() sums micro-batches (two-point SPSA); estimators with their own probe
    # (FZOO, HiZOO, one-point, ZO-SGD-Cons) say false and take whole batches through step().
    # batches_probes: _probe can evaluate its probes as one batched forward (probe_batch > 1).
    capabilities = Capabilities(summary="MeZO: zeroth-order SGD with seeded in-place perturbations",
                                zeroth_order=True, batches_probes=True, forward_passes="2n")
    # The engine's settings, shared by every zeroth-order option (its subclasses add their own).
    settings = {
        "lr": Setting("float", ">=0", "the learning rate"),
        "eps": Setting("float", ">0", "the perturbation scale; the paper uses 1e-3 (1e-1 for prefix)"),
        "weight_decay": Setting("float", ">=0", "the weight decay", arg=""),
        "n_directions": Setting("int", ">=1", "directions per step"),
        "direction": Setting("str", ("gaussian", "rademacher"), "the distribution of z"),
        "perturbation": Setting("str", ("auto", "inplace", "shadow"), "how theta +- eps z is applied"),
        "probe_batch": Setting("int", ">=1", "probes per batched forward (1: one after another)"),
        "zo_seed": Setting("int?", ">=0", "the seed of z (null: the run's seed)", arg="seed"),
    }

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
        probe_batch: int = 1,
    ) -> None:
        _check_arguments(lr, eps, n_directions, direction, perturbation)
        perturbation = self._batching_perturbation(probe_batch, perturbation, model)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.eps = float(eps)
        self.n_directions = int(n_directions)
        self.direction = direction
        self.seed = int(seed)
        self.perturbation = perturbation
        self.step_count = 0
        self.last_projected_grads: list[float] = []
        self.last_record: Optional[tuple[int, float, list[float]]] = None  # (step, lr, scalars) of the last step
        self.sampler = DirectionSampler(direction, self.seed, threads)
        self.trajectory = None  # a zoft.optim.trajectory.TrajectoryWriter, when recording
        self._trajectory_hook = None
        self._pending: Optional[list[float]] = None  # micro-batch sums of this step's estimates
        shadow = {id(p): (i, p) for _, i, p in self._params() if self._is_shadow(p)}
        if shadow and model is None:
            raise ValueError("MeZO: exact (shadow) perturbation of fp16/bf16 parameters needs the model: "
                             "MeZO(params, model=model, ...), or perturbation='inplace' to accept an "
                             "inexact restore")
        shadowing = ShadowPerturbation(model, shadow, self.sampler) if shadow else None
        self.weights = Displacement(self._params, self.sampler, shadowing, self._is_shadow)
        self.batched = BatchedProbes(model, shadowing, probe_batch) if probe_batch > 1 and shadowing else None

    def _batching_perturbation(self, probe_batch: int, perturbation: str, model: Optional[torch.nn.Module]) -> str:
        """Batched probes perturb through the shadow hooks: every tensor is shadowed."""
        if probe_batch < 1:
            raise ValueError(f"{type(self).__name__} probe_batch={probe_batch} must be >= 1")
        if probe_batch == 1:
            return perturbation
        if not self.capabilities.batches_probes:
            raise ValueError(f"{type(self).__name__} does not batch its probes; probe_batch={probe_batch} must be 1")
        if perturbation == "inplace" or model is None:
            raise ValueError(f"{type(self).__name__} probe_batch={probe_batch} perturbs through forward hooks: "
                             "it needs the model and perturbation='shadow' (or 'auto')")
        return "shadow"

    @property
    def forward_passes_per_step(self) -> int:
        """Forward passes of the step just taken: the declared formula (two-point SPSA: 2n;
        FZOO: n+1; HiZOO: 3; one-point: 1) at this step's n; estimators whose count depends on
        more than n (layer groups) override it."""
        passes = passes_per_step(self.capabilities.forward_passes, self.n_directions)
        if passes is None:
            raise NotImplementedError(f"{type(self).__name__} declares forward_passes="
                                      f"{self.capabilities.forward_passes!r}, not a formula in n; override "
                                      "forward_passes_per_step")
        return passes

    @property
    def record_width(self) -> int:
        """Scalars per step in the trajectory: one projected gradient per direction (HiZOO adds
        its curvature term; scheduled n-SPSA pads to its largest n)."""
        return self.n_directions

    def _is_shadow(self, p: torch.Tensor) -> bool:
        return self.perturbation == "shadow" or (self.perturbation == "auto" and p.dtype in LOW_PRECISION)

    def _params(self) -> list[IndexedParam]:
        """(group, global tensor index, parameter) for every parameter, in group order."""
        out, index = [], 0
        for group in self.param_groups:
            for p in group["params"]:
                out.append((group, index, p))
                index += 1
        return out

    def use_sampler(self, sampler) -> None:
        """Draw directions from ``sampler`` (an estimator's transformed directions)."""
        self.sampler = sampler
        self.weights.use_sampler(sampler)

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

    # -- the step: Algorithm 1 -------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor | float]] = None) -> torch.Tensor:  # type: ignore[override]
        """One step; ``closure`` evaluates the loss (any scalar) at the current weights.

        Per direction z_k: L+ at theta + eps z_k, L- at theta - eps z_k,
        g_k = (L+ - L-) / (2 eps); then theta <- theta - lr (mean_k g_k z_k + wd theta), with the
        restore of the last displacement folded into that pass. Returns L+ of the first direction.
        Without a closure, applies what :meth:`estimate` calls accumulated; a recorded step is
        applied by :meth:`replay`.
        """
        if closure is None:
            return self._step_accumulated()
        if self._pending is not None:
            raise ValueError("MeZO.step(closure) with an estimate pending; call step() to apply it")
        self._begin_step()
        loss, scalars = self._probe(closure)
        self._descend(scalars)
        return self._end_step(scalars, loss)

    @torch.no_grad()
    def replay(self, projected_grads: Sequence[float]) -> torch.Tensor:
        """Apply a recorded step: the weights go through exactly the passes of :meth:`step`
        (displacements included, so in-place rounding is the same), with the recorded scalars
        instead of losses. Returns NaN (no loss is evaluated)."""
        scalars = [_f32(v) for v in projected_grads]
        self._begin_step()
        self._check_record(scalars)
        self._probe(None)
        self._descend(scalars)
        return self._end_step(scalars, float("nan"))

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """Two-point SPSA along each direction: (L+ of the first, [g_k]); ``closure=None`` only
        moves the weights (replay)."""
        step, losses, grads = self.step_count, [], []
        if self.batched is not None and closure is not None:  # the 2n probes in batched forwards
            values = self.batched.losses(closure, [(step, k, a) for k in range(self.n_directions)
                                                   for a in (self.eps, -self.eps)])
            for k in range(self.n_directions):
                self._check_finite(step, values[2 * k], values[2 * k + 1])
            pairs = list(zip(values[0::2], values[1::2]))
        else:
            pairs = [self._two_point(closure, step, k) for k in range(self.n_directions)]
        for loss_pos, loss_neg in pairs:
            grads.append(_f32((loss_pos - loss_neg) / (2 * self.eps)))
            losses.append(loss_pos)
        return losses[0], grads

    def _two_point(self, closure: Optional[Callable], step: int, k: int) -> tuple[float, float]:
        """(L(theta + eps z_k), L(theta - eps z_k)); the weights owe the restore afterwards."""
        with self.weights.at(step, k, +self.eps):
            loss_pos = _loss(closure)
        with self.weights.at(step, k, -self.eps):
            loss_neg = _loss(closure)
        if closure is not None:
            self._check_finite(step, loss_pos, loss_neg)
        return loss_pos, loss_neg

    def _check_finite(self, step: int, loss_pos: float, loss_neg: float) -> None:
        if not (math.isfinite(loss_pos) and math.isfinite(loss_neg)):
            self.weights.restore()
            self._pending = None
            raise FloatingPointError(f"{type(self).__name__} step {step}: non-finite loss (L+={loss_pos}, "
                                     f"L-={loss_neg}); lower optimizer.eps or optimizer.lr")

    def _descend(self, grads: Sequence[float]) -> None:
        """theta <- (1 - lr wd) theta - lr/n sum_k g_k z_k (the owed restore folded in)."""
        self.weights.descend(self.step_count, grads, divisor=len(grads))

    def _begin_step(self) -> None:
        """Anything an estimator decides once per step, before probing (a mask, n_t)."""

    def _check_record(self, scalars: Sequence[float]) -> None:
        if len(scalars) != self.scalars_per_step():
            raise ValueError(f"replay got {len(scalars)} projected gradients; {type(self).__name__} records "
                             f"{self.scalars_per_step()} per step (n_directions={self.n_directions})")

    def scalars_per_step(self) -> int:
        """Scalars :meth:`replay` takes per step (the trajectory's ``record_width`` may be larger:
        scheduled n-SPSA pads its records to the largest n)."""
        return self.n_directions

    def trajectory_record(self, scalars: Sequence[float]) -> list[float]:
        """What the trajectory stores for a step whose update used ``scalars``."""
        return list(scalars)

    def projected_grads_of(self, scalars: Sequence[float]) -> list[float]:
        """The projected gradients among a step's scalars (logged, and watched for divergence)."""
        return list(scalars)

    def _end_step(self, scalars: Sequence[float], loss: float) -> torch.Tensor:
        self.last_record = (self.step_count, self.param_groups[0]["lr"], self.trajectory_record(scalars))
        self.last_projected_grads = self.projected_grads_of(scalars)
        self.step_count += 1
        return torch.tensor(loss, dtype=torch.float64)

    # -- micro-batches: estimates accumulated over several closures --------------------------
    @torch.no_grad()
    def estimate(self, closure: Callable[[], torch.Tensor | float], scale: float = 1.0) -> float:
        """Add ``scale * g_k`` for this micro-batch's closure to the pending estimate of this
        step (the micro-batches share the directions); returns ``scale * L+``. Then
        :meth:`step` without a closure applies the update."""
        if closure is None:
            raise ValueError("MeZO needs a closure that returns the loss")
        if not self.capabilities.accumulates:
            raise ValueError(f"{type(self).__name__} does not accumulate micro-batches with estimate(); call "
                             "step(closure) with a closure that evaluates the whole batch")
        if self._pending is not None and self.trajectory is not None:
            raise ValueError("a recorded trajectory replays one estimate per step; accumulate "
                             "micro-batches inside the closure instead")
        if self._pending is None:
            self._begin_step()
        pending = self._pending or [0.0] * self.n_directions
        first_loss = float("nan")
        for k in range(self.n_directions):
            loss_pos, loss_neg = self._two_point(closure, self.step_count, k)
            pending[k] += _f32(scale * (loss_pos - loss_neg) / (2 * self.eps))
            if k == 0:
                first_loss = scale * loss_pos
        self._pending = pending
        return first_loss

    def _step_accumulated(self) -> torch.Tensor:
        if self._pending is None:
            raise ValueError("MeZO.step needs a closure that returns the loss (or a prior estimate())")
        grads = [_f32(g) for g in self._pending]
        self._pending = None
        self._descend(grads)
        return self._end_step(grads, float("nan"))

    # -- recording -------------------------------------------------------------------------
    def attach_trajectory(self, writer) -> None:
        """Append (step, lr, recorded scalars) of every following :meth:`step` to ``writer``: a
        step post-hook (``torch.optim.Optimizer.register_step_post_hook``); replayed steps are
        not recorded."""
        if self._trajectory_hook is not None:  # one writer at a time
            self._trajectory_hook.remove()
        self.trajectory = writer
        self._trajectory_hook = self.register_step_post_hook(
            lambda optimizer, args, kwargs: writer.record(*optimizer.last_record))

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
        self._pending = None  # states are saved between steps
        self.weights.forget_owed_restore()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["zo"] = self._zo_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        super().load_state_dict(state_dict)
        self._load_zo_state(zo)


def _loss(closure: Optional[Callable]) -> float:
    """The closure's loss as a float (NaN when replaying: nothing is evaluated)."""
    return float("nan") if closure is None else float(closure())


def _check_arguments(lr: float, eps: float, n_directions: int, direction: str, perturbation: str) -> None:
    if lr < 0:
        raise ValueError(f"MeZO lr={lr} must be >= 0")
    if not eps > 0:
        raise ValueError(f"MeZO eps={eps} must be > 0")
    if n_directions < 1:
        raise ValueError(f"MeZO n_directions={n_directions} must be >= 1")
    for key, value in (("direction", direction), ("perturbation", perturbation)):
        valid = MeZO.settings[key].valid
        if value not in valid:
            raise ValueError(f"MeZO {key}={value!r}; valid: {', '.join(valid)}")


class ZOFirstOrder(MeZO):
    """The ZO estimate written into ``.grad`` and consumed by a first-order optimizer
    (the original's medium_models/src/trainer.py, "ZO with trainer optimizer"): MeZO-Adam (``inner="adam"``, AdamW) or
    zeroth-order SGD with momentum (``inner="sgd"``).

    Per step: estimate g_k along each direction (same passes as :class:`MeZO`), restore theta,
    set ``p.grad = (1/n) sum_k g_k z_k`` and call the inner optimizer's ``step()``. Built by
    composition: the inner optimizer has its own param groups (copies of these), and before its
    step takes each group's LR from this optimizer's, which an LR scheduler drives. Weight decay
    is the inner optimizer's (decoupled for AdamW, L2 for SGD). Memory: the gradient and the inner
    optimizer's state are parameter-sized, as for any first-order optimizer.
    """

    def __init__(self, params: Iterable, inner: str = "adam", lr: float = 1e-6,
                 betas: Sequence[float] = (0.9, 0.999), adam_eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, **kwargs) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, **kwargs)
        groups = [{**g, "params": list(g["params"])} for g in self.param_groups]  # copies, not aliases
        if inner == "adam":
            self.inner = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=adam_eps, weight_decay=weight_decay)
        elif inner == "sgd":
            self.inner = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            raise ValueError(f"ZOFirstOrder inner={inner!r}; valid: adam, sgd")
        self.inner_name = inner

    def describe(self) -> dict:
        # "class": this engine's name for MeZO-Adam and MeZO-SGD (``inner`` says which), as
        # recorded before they were classes of their own: their trajectories replay either way.
        return {**super().describe(), "class": "ZOFirstOrder", "inner": self.inner_name,
                "inner_defaults": {k: v for k, v in self.inner.defaults.items() if isinstance(v, (int, float, tuple, list, bool))}}

    def _descend(self, grads: Sequence[float]) -> None:
        """Back to theta, ``p.grad = (1/n) sum_k g_k z_k``, then the inner optimizer's step."""
        n, step = len(grads), self.step_count
        self.weights.restore()
        jobs = []
        for _, i, p in self._params():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            jobs.append(Job(p.grad, None, i, 0.0, tuple(Term(step, k, g / n) for k, g in enumerate(grads))))
        self.sampler.apply(jobs)
        self._sync_lr()
        with torch.enable_grad():
            self.inner.step()

    def _sync_lr(self) -> None:
        for outer, group in zip(self.param_groups, self.inner.param_groups):
            group["lr"] = outer["lr"]  # the schedule acts on this optimizer's groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        self._sync_lr()  # the LR the next step will use, as for any optimizer
        return {"inner": self.inner.state_dict(), "zo": self._zo_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        for outer, group in zip(self.param_groups, self.inner.param_groups):
            outer["lr"] = group["lr"]
        self._load_zo_state(state_dict.get("zo"))


class MeZOAdam(ZOFirstOrder):
    """``optimizer=mezo-adam``: the MeZO estimate fed to AdamW (the paper's Table 7)."""

    capabilities = Capabilities(summary="the MeZO estimate fed to AdamW (paper Table 7)", zeroth_order=True,
                                batches_probes=True, forward_passes="2n", parameter_state="gradient + two moments")
    settings = {"betas": Setting("floats", "", "AdamW's (beta1, beta2)"),
                "adam_eps": Setting("float", ">0", "Adam's denominator epsilon")}

    def __init__(self, params: Iterable, betas: Sequence[float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 **kwargs) -> None:
        super().__init__(params, inner="adam", betas=betas, adam_eps=adam_eps, **kwargs)


class MeZOSGD(ZOFirstOrder):
    """``optimizer=mezo-sgd``: the MeZO estimate fed to SGD with momentum."""

    capabilities = Capabilities(summary="the MeZO estimate fed to SGD with momentum", zeroth_order=True,
                                batches_probes=True, forward_passes="2n", parameter_state="gradient + momentum buffer")
    settings = {"momentum": Setting("float", "[0,1)", "the momentum")}

    def __init__(self, params: Iterable, momentum: float = 0.0, **kwargs) -> None:
        super().__init__(params, inner="sgd", momentum=momentum, **kwargs)
