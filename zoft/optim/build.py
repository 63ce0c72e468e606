"""Build the optimizer and LR schedule from the ``optimizer`` and ``trainer`` configs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch.optim.lr_scheduler import LambdaLR

from zoft.config.choices import SCHEDULERS
from zoft.optim.estimators import (FZOO, ForwardGradient, HiZOO, HiZOOLowRank, LowRankZO, NormScaledZO, OnePointZO,
                                   ScheduledSPSA, SparseMeZO, ZOConservative, ZOMomentum, ZOSign)
from zoft.optim.mezo import MeZO, ZOFirstOrder
from zoft.optim.registry import OPTIMIZERS


if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import OptimizerConfig
# Parameters whose names contain these get no weight decay (biases and normalisation weights,
# including LLaMA-style "norm" modules that the original's substring list misses).
NO_DECAY = ("bias", "layer_norm", "layernorm", "norm")


def param_groups(named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases/normalisation weights without decay."""
    decay = [p for n, p in named if not any(k in n.lower() for k in NO_DECAY)]
    no_decay = [p for n, p in named if any(k in n.lower() for k in NO_DECAY)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _zo_settings(cfg: OptimizerConfig, seed: int, model: Optional[torch.nn.Module]) -> dict:
    """The seeded-direction engine's settings shared by every zeroth-order optimizer."""
    return dict(eps=cfg.eps, n_directions=cfg.n_directions, direction=cfg.direction,
                seed=cfg.zo_seed if cfg.zo_seed is not None else seed, perturbation=cfg.perturbation, model=model,
                probe_batch=cfg.probe_batch)


def _sgd(cfg, groups, seed, model):
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def _adam(cfg, groups, seed, model):
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)


def _mezo(cfg, groups, seed, model):
    return MeZO(groups, lr=cfg.lr, **_zo_settings(cfg, seed, model))


def _zo_first_order(cfg, groups, seed, model):
    # MeZO-Adam / ZO-SGD with momentum: the ZO estimate goes through .grad (medium_models'
    # --zero_order_use_trainer_optim).
    return ZOFirstOrder(groups, inner=cfg.name.split("-", 1)[1], lr=cfg.lr, betas=tuple(cfg.betas),
                        adam_eps=cfg.adam_eps, momentum=cfg.momentum, **_zo_settings(cfg, seed, model))


def _zo_sign(cfg, groups, seed, model):
    return ZOSign(groups, lr=cfg.lr, sign_of=cfg.sign_of, **_zo_settings(cfg, seed, model))


def _zo_momentum(cfg, groups, seed, model):
    return ZOMomentum(groups, lr=cfg.lr, momentum=cfg.momentum, **_zo_settings(cfg, seed, model))


def _zo_conservative(cfg, groups, seed, model):
    return ZOConservative(groups, lr=cfg.lr, **_zo_settings(cfg, seed, model))


def _fzoo(cfg, groups, seed, model):
    return FZOO(groups, lr=cfg.lr, **_zo_settings(cfg, seed, model))


def _hizoo(cfg, groups, seed, model):
    return HiZOO(groups, lr=cfg.lr, hessian_smooth=cfg.hessian_smooth, **_zo_settings(cfg, seed, model))


def _hizoo_low_rank(cfg, groups, seed, model):
    return HiZOOLowRank(groups, lr=cfg.lr, hessian_smooth=cfg.hessian_smooth, **_zo_settings(cfg, seed, model))


def _sparse_mezo(cfg, groups, seed, model):
    return SparseMeZO(groups, lr=cfg.lr, sparsity=cfg.sparsity, threshold_update=cfg.threshold_update,
                      **_zo_settings(cfg, seed, model))


def _one_point(cfg, groups, seed, model):
    return OnePointZO(groups, lr=cfg.lr, **_zo_settings(cfg, seed, model))


def _nspsa(cfg, groups, seed, model):
    return ScheduledSPSA(groups, lr=cfg.lr, sample_scheduler=cfg.sample_scheduler, total_steps=cfg.sample_steps,
                         scale_lr_with_samples=cfg.scale_lr_with_samples, **_zo_settings(cfg, seed, model))


def _low_rank(cfg, groups, seed, model):
    return LowRankZO(groups, kind=cfg.name, rank=cfg.lowrank_rank, interval=cfg.lowrank_interval, lr=cfg.lr,
                     **_zo_settings(cfg, seed, model))


def _norm_scaled(cfg, groups, seed, model):
    return NormScaledZO(groups, lr=cfg.lr, variant=cfg.zo_variant, by_layer=cfg.zo_by_layer,
                        recompute_every=cfg.recompute_norms, change_grad_estimate=cfg.change_grad_estimate,
                        scale_by_num_params=cfg.scale_norm_by_num_params, running_update=cfg.norm_running_update,
                        **_zo_settings(cfg, seed, model))


def _forward_grad(cfg, groups, seed, model):
    return ForwardGradient(groups, lr=cfg.lr, **_zo_settings(cfg, seed, model))


# One constructor per registered optimizer (zoft.optim.registry), called as
# fn(cfg, param_groups, seed, model).
BUILDERS: dict[str, Callable] = {"sgd": _sgd, "adam": _adam, "mezo": _mezo,
                                 "mezo-adam": _zo_first_order, "mezo-sgd": _zo_first_order,
                                 "zo-sgd-sign": _zo_sign, "zo-sgd-mmt": _zo_momentum,
                                 "zo-sgd-cons": _zo_conservative, "fzoo": _fzoo, "hizoo": _hizoo,
                                 "sparse-mezo": _sparse_mezo, "mezo-one-point": _one_point,
                                 "mezo-nspsa": _nspsa, "lozo": _low_rank, "subzero": _low_rank,
                                 "forward-grad": _forward_grad, "mezo-norm": _norm_scaled,
                                 "hizoo-l": _hizoo_low_rank}


def build_optimizer(cfg: OptimizerConfig, named: Sequence[tuple[str, torch.nn.Parameter]], seed: int,
                    model: Optional[torch.nn.Module] = None) -> torch.optim.Optimizer:
    """``named`` are the trainable (name, parameter) pairs chosen by the method; ``model`` (the
    module using them) lets MeZO perturb fp16/bf16 weights exactly (shadow perturbation)."""
    if not named:
        raise ValueError("the method left no trainable parameters; nothing to optimise")
    if cfg.name not in BUILDERS:
        raise ValueError(f"optimizer.name={cfg.name!r} is not valid; choose one of {', '.join(OPTIMIZERS)}")
    return BUILDERS[cfg.name](cfg, param_groups(named, cfg.weight_decay), seed, model)


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """``constant`` (after optional warmup) or ``linear`` decay to zero at ``total_steps``."""
    if kind not in SCHEDULERS:
        raise ValueError(f"trainer.lr_scheduler={kind!r} is not valid; choose one of {', '.join(SCHEDULERS)}")

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


@runtime_checkable
class ZerothOrderOptimizer(Protocol):
    """What the training loop reads from a zeroth-order optimizer (:class:`zoft.optim.MeZO` and
    every estimator built on it): the closure runs without a graph, and after ``step``:"""

    zeroth_order: bool
    forward_passes_per_step: int  # forward passes the step just taken cost
    last_projected_grads: list[float]  # the scalars of the step (divergence check, logging)
    trajectory: Optional[Any]  # the TrajectoryWriter recording the steps, or None

    def attach_trajectory(self, writer: Any) -> None: ...


def is_zeroth_order(optimizer: torch.optim.Optimizer) -> bool:
    """Zeroth-order optimizers evaluate the closure without building a graph."""
    return isinstance(optimizer, ZerothOrderOptimizer) and bool(optimizer.zeroth_order)
