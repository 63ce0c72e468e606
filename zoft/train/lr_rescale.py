"""Scaling a run's learning rates in the middle of training (a divergence rollback halves them)."""

from __future__ import annotations

from typing import Any

import torch


class LrRescaler:
    """Scales the LR of every later step by a factor, through the two places it lives.

    zoft's schedules are ``LambdaLR``: the LR of step t is ``base_lr * lambda(t)``, recomputed from
    ``scheduler.base_lrs`` at every ``scheduler.step()``, and written into the optimizer's param
    groups, which the next ``optimizer.step()`` reads. Scaling only the param groups would last
    one step; scaling only ``base_lrs`` would miss the step about to run. Both are scaled, so the
    schedule's shape (warmup, linear decay) is kept at the new scale, and the scale is saved with
    the scheduler's state in every later checkpoint.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler

    def rescale(self, factor: float) -> None:
        """Multiply the LR of the next step and of every step after it by ``factor``."""
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        # get_last_lr(): what the last scheduler.step() (or the loaded checkpoint) set for the next step.
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * factor
