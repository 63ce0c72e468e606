"""The method registry: ``apply_method(model, cfg)`` adapts the model in place and returns the
trainable (name, parameter) pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from zoft.config.choices import METHOD_FAMILIES  # the method vocabulary and the families each supports
from zoft.errors import MethodError

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig

Named = list[tuple[str, torch.nn.Parameter]]
# The implementation of each name of zoft.config.choices.METHOD_FAMILIES, which also says the model
# families a method supports (read by zoft.config.validate before anything loads, and below).
METHODS: dict[str, Callable[[torch.nn.Module, MethodConfig, str], Named]] = {}
# Methods that add new tensors (adapters): ``save_model`` writes those tensors next to a record
# of the method instead of a full Hugging Face model (see zoft.methods.io).
ADAPTER_METHODS: set[str] = set()


@dataclass(frozen=True)
class ClosedFormFit:
    """A fit that runs once before (or instead of) the loop, e.g. linear probing.

    ``fit(loaded, objective, train_items, method_cfg)`` adapts the model and returns its report
    for results.json; ``trains_after(method_cfg)`` says whether the training loop follows
    (LP-then-MeZO) or the run goes straight to the final evaluation.
    """

    fit: Callable[..., dict]
    trains_after: Callable[[MethodConfig], bool]


CLOSED_FORM_FITS: dict[str, ClosedFormFit] = {}


def register_method(name: str, adapter: bool = False):
    """Register the implementation of method ``name``, a name of ``METHOD_FAMILIES``."""
    if name not in METHOD_FAMILIES:
        raise ValueError(f"method {name!r} is not in zoft.config.choices.METHOD_FAMILIES; add it there "
                         "(with the model families it supports) so that the config checks know it")

    def wrap(fn):
        METHODS[name] = fn
        if adapter:
            ADAPTER_METHODS.add(name)
        return fn

    return wrap


def trainable(model: torch.nn.Module) -> Named:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@register_method("ft")
def full_finetuning(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Every parameter trains (tied weights appear once)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return trainable(model)


@register_method("zero-shot")
@register_method("icl")
def zero_shot(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Nothing trains (zero-shot and in-context learning only evaluate)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return []


def apply_method(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Adapt ``model`` in place for ``cfg.name`` and return its trainable (name, param) pairs."""
    if cfg.name not in METHODS:
        raise ValueError(f"method.name={cfg.name!r} is not valid; choose one of {', '.join(sorted(METHODS))}")
    families = METHOD_FAMILIES.get(cfg.name)
    if families is not None and family not in families:

        raise MethodError(
            f"method.name={cfg.name!r} does not support model.family={family!r}; "
            f"supported families: {', '.join(families)}"
        )
    return METHODS[cfg.name](model, cfg, family)
