"""The contract between the training loop and an objective.

An objective owns how examples become tensors, a training loss, and evaluation. The loop only
calls ``prepare``, ``loss`` and ``evaluate``; every optimizer (SGD, Adam, MeZO) sees the same
objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from zoft.examples import Example


@dataclass
class EvalResult:
    """``metrics`` holds ``loss`` and the task metric(s); ``predictions`` one dict per example."""

    metrics: dict[str, float]
    predictions: list[dict[str, Any]] = field(default_factory=list)


class Objective(Protocol):
    metric: str  # the task metric's name (accuracy, f1, mcc, ...)

    def prepare(self, examples: Sequence[Example], train: bool) -> list[Any]:
        """Pre-encode examples once (token ids etc.); the result is what batches are made of."""

    def loss(self, model: torch.nn.Module, batch: Sequence[Any]) -> torch.Tensor:
        """A scalar training loss for a batch of prepared items."""

    def evaluate(self, model: torch.nn.Module, items: Sequence[Any], batch_size: int, desc: str = "eval") -> EvalResult:
        """Loss and metrics over prepared items (eval mode, no graph)."""
