"""What an optimizer class declares about itself: its settings and its capabilities.

Each optimizer class of zoft (:class:`zoft.optim.MeZO`, the estimators, the backprop optimizers
of :mod:`zoft.optim.first_order`) writes, in its class body and with literal values only::

    capabilities = Capabilities(zeroth_order=True, forward_passes="3", ...)
    settings = {"hessian_smooth": Setting("float", "[0,1)", "the Hessian moving-average weight")}

``settings`` adds to (or narrows) the settings of the classes it derives from. These two
declarations are the one record of an ``optimizer=<name>`` option: the config layer reads them
from the source without importing torch (:mod:`zoft.optim.registry`), the training loop reads
them from the class. This module holds only the two record types, so that both sides can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Union

# A setting's kind -> the Python types its value may have (None: also null).
KINDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "float": ((float, int), False),
    "float?": ((float, int), True),
    "int": ((int,), False),
    "int?": ((int,), True),
    "str": ((str,), False),
    "bool": ((bool,), False),
    "floats": ((list, tuple), False),
}


@dataclass(frozen=True)
class Setting:
    """One ``optimizer.<key>`` of an option: its kind (a key of :data:`KINDS`), what values are
    valid (a range such as ``>=0``, ``>0``, ``[0,1)``, or a tuple of the allowed strings; ``""``:
    any value of the kind), what it is (shown in errors), and the constructor argument it feeds
    (None: the argument of the same name; ``""``: zoft's loop consumes it, not the constructor)."""

    kind: str
    valid: Union[str, tuple[str, ...]]
    what: str
    arg: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Setting kind={self.kind!r}; valid: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Capabilities:
    """What the loop, the config checks and the docs need to know about an optimizer.

    ``zeroth_order``: the update uses loss values only, evaluated without an autograd graph.
    ``forward_mode``: the update differentiates the loss by forward-mode AD (a jvp): forward
    passes only, but the objective must be differentiable (``task.objective=metric`` is refused).
    ``accumulates``: a step can be estimated over micro-batches (``trainer.grad_accum``) and summed.
    ``batches_probes``: the probes of a step can run as one batched forward (``probe_batch`` > 1).
    ``needs_loss_tensor``: the closure must return the loss as a tensor (not a float).
    ``forward_passes``: forward passes per step, as a formula in n (``optimizer.n_directions``).
    ``parameter_state``: parameter-sized tensors kept besides the weights ("none": inference memory).
    ``summary``: one line for the optimizer tables.
    """

    summary: str
    zeroth_order: bool = False
    forward_mode: bool = False
    accumulates: bool = True
    batches_probes: bool = False
    needs_loss_tensor: bool = False
    forward_passes: str = "1 + backward"
    parameter_state: str = "none"


def passes_per_step(formula: str, n: int) -> Optional[int]:
    """The forward passes of ``formula`` (``2n``, ``n+1``, ``2n+3``, ``3``) at n directions; None
    for a formula that depends on more than n (a schedule, layer groups)."""
    match = re.fullmatch(r"(?:(\d*)n)?(?:\+?(\d+))?", formula.replace(" ", ""))
    if not formula.strip() or match is None:
        return None
    scale, offset = match.groups()
    has_n = "n" in formula
    return (int(scale or 1) * n if has_n else 0) + int(offset or 0)


def declared_settings(cls: type) -> dict[str, Setting]:
    """``cls``'s settings: the ``settings`` of every class it derives from, the base's first, a
    subclass's entry replacing a base's of the same key."""
    merged: dict[str, Setting] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("settings", {}))
    return merged


def capabilities_of(optimizer: Any) -> Capabilities:
    """The capabilities an optimizer (instance or class) declares; an optimizer from outside zoft
    (a plain ``torch.optim`` one) is taken as a backprop optimizer."""
    declared = getattr(optimizer, "capabilities", None)
    return declared if isinstance(declared, Capabilities) else Capabilities(summary=type(optimizer).__name__)
