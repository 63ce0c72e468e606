"""The contract between the training loop and an objective, and the one evaluation loop.

An objective owns how examples become tensors (``prepare``), a training loss (``loss``), the
scoring of one evaluation batch (``evaluate_batch``) and the metrics of a split (``metrics``).
:meth:`Objective.evaluate` is the same loop for every objective: eval mode, no graph, batches,
a progress bar, the mean loss, the task metrics and one prediction row per example. Every
optimizer (SGD, Adam, MeZO) sees the same objective. Linear probing reads ``features``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from zoft.errors import MethodError
from zoft.examples import Example


@dataclass
class EvalResult:
    """``metrics`` holds ``loss`` and the task metric(s); ``predictions`` one dict per example."""

    metrics: dict[str, float]
    predictions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BatchEval:
    """One evaluation batch: the summed loss, a prediction row per example, and per example
    what :meth:`Objective.metrics` needs (a hit, an (F1, EM) pair, a (prediction, gold) pair)."""

    loss_sum: float
    rows: list[dict[str, Any]]
    stats: list[Any]


def batches(items: Sequence, size: int):
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Objective:
    """Base class of every objective (candidates, generation, LM-BFF prompt / cls head, metric)."""

    metric: str = "accuracy"  # the task metric's name (accuracy, f1, mcc, ...)
    show_progress: bool = True

    def prepare(self, examples: Sequence[Example], train: bool) -> list[Any]:
        """Pre-encode examples once (token ids etc.); the result is what batches are made of."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Sequence[Any]) -> torch.Tensor:
        """A scalar training loss for a batch of prepared items."""
        raise NotImplementedError

    def evaluate_batch(self, model: torch.nn.Module, chunk: Sequence[Any]) -> BatchEval:
        """Score one evaluation batch (called without a graph, in eval mode)."""
        raise NotImplementedError

    def metrics(self, stats: Sequence[Any]) -> dict[str, float]:
        """The task metrics from the per-example ``stats`` of a whole split."""
        raise NotImplementedError

    def features(self, model: torch.nn.Module, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear probing's data: the input of the probed head Linear, (N, hidden), and the row of
        that Linear each example's answer is scored by, (N,)."""
        raise MethodError(f"method.name=linear-probe needs a classification or multiple-choice objective; "
                          f"{type(self).__name__} has no head features")

    @property
    def batch_metric_name(self) -> str:
        """Which of the split metrics :meth:`batch_metric` computes per batch."""
        return self.metric

    def batch_metric(self, model: torch.nn.Module, batch: Sequence[Any]) -> float:
        """The task metric of one batch (the non-differentiable objective of MeZO)."""
        raise NotImplementedError(f"{type(self).__name__} has no batch metric")

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module, items: Sequence[Any], batch_size: int, desc: str = "eval") -> EvalResult:
        """Mean loss, metrics and prediction rows over prepared items (eval mode, no graph)."""
        was_training = model.training
        model.eval()
        total_loss, rows, stats = 0.0, [], []
        progress = tqdm(total=len(items), desc=desc, leave=False, disable=not self.show_progress)
        for chunk in batches(items, batch_size):
            scored = self.evaluate_batch(model, chunk)
            total_loss += scored.loss_sum
            rows.extend(scored.rows)
            stats.extend(scored.stats)
            progress.update(len(chunk))
        progress.close()
        model.train(was_training)
        return EvalResult(metrics={"loss": total_loss / max(len(items), 1), **self.metrics(stats)}, predictions=rows)
