"""What a training run moves and measures, in one record that the loop and its collaborators
(:mod:`~zoft.train.closures`, :mod:`~zoft.train.checkpoint_policy`, :mod:`~zoft.train.rollback`)
share, so that each of them takes one argument for it instead of five."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from zoft.objectives.base import Objective
from zoft.optim.spec import Capabilities, capabilities_of


@dataclass
class TrainParts:
    """The model, what it is scored by, and what updates it."""

    model: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a LambdaLR (zoft.optim.build.build_scheduler)
    # The (name, parameter) pairs the optimizer updates, in the optimizer's order: the names key
    # the checkpoints, the order is the order of the ZO seed stream.
    trainable: Sequence[tuple[str, torch.nn.Parameter]]

    def __post_init__(self) -> None:
        self.trainable = list(self.trainable)

    @property
    def capabilities(self) -> Capabilities:
        """What the optimizer's class declares (zoft.optim.spec): zeroth-order, accumulation, ..."""
        return capabilities_of(self.optimizer)

    @property
    def zeroth_order(self) -> bool:
        """Whether the optimizer steps on forward passes only (MeZO and the estimators)."""
        return self.capabilities.zeroth_order

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.trainable]

    @property
    def device(self) -> torch.device:
        """Where the trainable weights live (the CPU when there are none)."""
        return next(iter(self.params), torch.empty(0)).device
