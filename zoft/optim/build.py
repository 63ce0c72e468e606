"""Build the optimizer and LR schedule from the ``optimizer`` and ``trainer`` configs."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from zoft.config.choices import SCHEDULERS
from zoft.optim.registry import RESERVED, OptimizerRecord, optimizer_record
from zoft.optim.spec import Capabilities, capabilities_of

# Parameters whose names contain these get no weight decay (biases and normalisation weights,
# including LLaMA-style "norm" modules that the original's substring list misses).
NO_DECAY = ("bias", "layer_norm", "layernorm", "norm")


def param_groups(named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases/normalisation weights without decay."""
    decay = [p for n, p in named if not any(k in n.lower() for k in NO_DECAY)]
    no_decay = [p for n, p in named if any(k in n.lower() for k in NO_DECAY)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def optimizer_kwargs(record: OptimizerRecord, values: Mapping[str, Any], seed: int,
                     model: Optional[torch.nn.Module]) -> dict[str, Any]:
    """The constructor arguments of ``record``'s class from the option's ``values``: each setting
    to the argument it declares (zoft's loop keeps weight_decay, for the parameter groups, and
    max_grad_norm); a zeroth-order class also gets the run's seed (unless ``zo_seed`` is set) and
    the model. A key the option does not have is an error naming the option's keys."""
    unknown = sorted(set(values) - set(record.settings) - set(RESERVED))
    if unknown:
        raise ValueError(f"optimizer={record.name} has no setting {', '.join(unknown)}; "
                         f"its settings: {', '.join(record.settings)}")
    kwargs = {setting.arg or key: values[key] for key, setting in record.settings.items()
              if key in values and setting.arg != ""}
    if record.capabilities.zeroth_order:
        if kwargs.get("seed") is None:
            kwargs["seed"] = seed
        kwargs["model"] = model
    return kwargs


def build_optimizer(cfg: Mapping[str, Any], named: Sequence[tuple[str, torch.nn.Parameter]], seed: int,
                    model: Optional[torch.nn.Module] = None) -> torch.optim.Optimizer:
    """The optimizer of the option ``cfg`` (an ``optimizer`` node, or a plain mapping with
    ``name`` and any of the option's settings; absent ones keep the class's defaults), over the
    trainable (name, parameter) pairs ``named`` chosen by the method. ``model`` (the module using
    them) lets the zeroth-order ones perturb fp16/bf16 weights exactly (shadow perturbation).
    The class is the option's ``_target_`` (conf/optimizer/<name>.yaml); another class is another
    option file (docs/estimators.md, "Adding an estimator")."""
    if not named:
        raise ValueError("the method left no trainable parameters; nothing to optimise")
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    try:
        record = optimizer_record(values.get("name"))
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    factory = get_class(record.target)
    groups = param_groups(named, values.get("weight_decay", 0.0))
    return factory(groups, **optimizer_kwargs(record, values, seed, model))


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
    """What zoft's loop, checkpoints and trajectory use of a zeroth-order optimizer
    (:class:`zoft.optim.MeZO` and every estimator built on it), besides ``torch.optim.Optimizer``'s
    ``step``/``state_dict``/``param_groups``. The closure runs without a graph."""

    capabilities: Capabilities  # declared by the class (zoft.optim.spec)
    n_directions: int
    step_count: int  # steps taken (the seed stream's position)
    forward_passes_per_step: int  # forward passes the step just taken cost
    record_width: int  # scalars per step in the trajectory
    last_projected_grads: list[float]  # the projected gradients of the step (divergence check, logging)
    trajectory: Optional[Any]  # the TrajectoryWriter recording the steps, or None

    def attach_trajectory(self, writer: Any) -> None: ...

    def describe(self) -> dict: ...

    def replay(self, scalars: Sequence[float]) -> Any: ...

    def estimate(self, closure: Any, scale: float = 1.0) -> float: ...


def is_zeroth_order(optimizer: torch.optim.Optimizer) -> bool:
    """Zeroth-order optimizers evaluate the closure without building a graph."""
    return capabilities_of(optimizer).zeroth_order
