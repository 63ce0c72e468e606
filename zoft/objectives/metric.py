"""Non-differentiable objectives for MeZO (paper Section 3.3, Table 3; the original's large_models/trainer.py ``--non_diff``): the training loss is minus the task
metric of the batch (−F1 with greedy generation inside the loss for SQuAD/DROP, −accuracy for
classification and multiple choice). It has no gradient, so only zeroth-order optimizers can
use it; dev "loss" is likewise −metric so checkpoint selection stays consistent."""

from __future__ import annotations

from typing import Sequence

import torch

from zoft.objectives.base import EvalResult, Objective


class MetricObjective(Objective):
    """Trains on minus the task metric of ``inner`` (a candidate, generation or LM-BFF
    objective); evaluation is ``inner``'s, with ``loss`` = -metric and ``inner``'s own
    (cross-entropy) loss reported as ``ce_loss``."""

    def __init__(self, inner: Objective) -> None:
        self.inner = inner
        self.metric = inner.metric

    def prepare(self, examples, train: bool, **kwargs) -> list:
        return self.inner.prepare(examples, train, **kwargs)

    def features(self, model: torch.nn.Module, items: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.features(model, items)

    def loss(self, model: torch.nn.Module, batch: Sequence) -> torch.Tensor:
        with torch.inference_mode():
            value = self.inner.batch_metric(model, batch)
        return torch.tensor(-value, dtype=torch.float32)

    def evaluate(self, model: torch.nn.Module, items: Sequence, batch_size: int, desc: str = "eval") -> EvalResult:
        result = self.inner.evaluate(model, items, batch_size, desc=desc)
        result.metrics["ce_loss"] = result.metrics["loss"]
        result.metrics["loss"] = -result.metrics[self.inner.batch_metric_name]
        return result
