"""Divergence: how the loop notices it (:class:`DivergenceGuard`), and what it does about it
(:class:`Rollback`: ``trainer.on_divergence=rollback`` goes back to the last checkpoint with half
the LR, at most ``trainer.max_rollbacks`` times; otherwise the run stops as ``diverged``)."""

from __future__ import annotations

import logging
import math
import statistics
from typing import TYPE_CHECKING, Optional

from zoft.errors import DivergenceError
from zoft.train.checkpoint import LoopState
from zoft.train.checkpoint_policy import CheckpointPolicy
from zoft.train.lr_rescale import LrRescaler
from zoft.train.metrics_file import MetricsFile
from zoft.train.parts import TrainParts

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import TrainerConfig

log = logging.getLogger(__name__)

HISTORY_MIN = 20  # steps of projected gradients before their median is trusted
HISTORY_MAX = 200  # the running median looks at this many recent steps


class DivergenceGuard:
    """Says why a step diverged, or None: a non-finite loss; for zeroth-order optimizers also a
    non-finite projected gradient, or (``divergence_factor`` > 0) one over that factor times the
    median of the recent ones. A backprop step has no projected gradient: only its loss counts."""

    def __init__(self, parts: TrainParts, factor: float) -> None:
        self.optimizer = parts.optimizer if parts.zeroth_order else None
        self.factor = factor
        self.history: list[float] = []  # |projected gradient| of the recent healthy steps

    def check(self, loss: float) -> Optional[str]:
        """Judge the step just taken (and remember its gradient when it is healthy)."""
        if not math.isfinite(loss):
            return f"loss is {loss}"
        grads = self.optimizer.last_projected_grads if self.optimizer is not None else None
        if not grads:
            return None
        g = abs(sum(grads) / len(grads))
        if not math.isfinite(g):
            return f"projected gradient is {g}"
        if self.factor and len(self.history) >= HISTORY_MIN:
            typical = statistics.median(self.history)
            if typical > 0 and g > self.factor * typical:
                return f"|projected gradient| {g:.3g} is over {self.factor:g}x its running median {typical:.3g}"
        self.history.append(g)
        del self.history[:-HISTORY_MAX]
        return None

    def reset(self) -> None:
        """Forget the history (after a rollback the redone steps build their own)."""
        self.history.clear()


class Rollback:
    """Undoes a diverged stretch everywhere it left a trace: the weights, optimizer, schedule and
    RNGs (``last.pt``), the LR (halved), the ZO trajectory and ``metrics.jsonl``."""

    def __init__(self, cfg: TrainerConfig, parts: TrainParts, checkpoints: CheckpointPolicy) -> None:
        self.cfg = cfg
        self.parts = parts
        self.checkpoints = checkpoints
        self.lr = LrRescaler(parts.optimizer, parts.scheduler)

    def possible(self, state: LoopState) -> bool:
        """Rollback is on, there is a checkpoint to go back to, and rollbacks are left."""
        return (self.cfg.on_divergence == "rollback" and self.checkpoints.has_last()
                and state.rollbacks < self.cfg.max_rollbacks)

    def recover(self, state: LoopState, step: int, reason: str, metrics: MetricsFile) -> LoopState:
        """Go back to the last checkpoint with half the LR; returns the loop state to continue
        from, or raises :class:`DivergenceError` when rolling back is not :meth:`possible`.

        The best-so-far bookkeeping is kept from before the rollback: ``best_trainable.pt`` holds
        the best weights evaluated so far, possibly from the abandoned stretch; ``last.pt`` is
        rewritten with the halved LR and the rollback count. Training rows of
        that stretch leave ``metrics.jsonl``; its evaluations stay, marked ``abandoned``. The
        MeZO trajectory drops the abandoned steps, so ``zoft replay`` follows the redone ones.
        """
        if not self.possible(state):
            raise DivergenceError(step, reason)
        restored = self.checkpoints.restore_last()
        scale = state.lr_scale * 0.5
        # The scheduler now holds the checkpoint's LRs, made at the checkpoint's own scale.
        self.lr.rescale(scale / restored.lr_scale)
        restored.rollbacks, restored.lr_scale = state.rollbacks + 1, scale
        restored.best_value, restored.best_step, restored.best_dev = state.best_value, state.best_step, state.best_dev
        trajectory = self.parts.optimizer.trajectory if self.parts.zeroth_order else None
        if trajectory is not None:
            trajectory.rewind()
        metrics.abandon_after(restored.step, {"step": restored.step, "rollback_from": step, "reason": reason,
                                              "lr_scale": scale})
        log.warning("step %d: %s; rolled back to step %d with the LR scaled x%g", step, reason, restored.step, scale)
        # last.pt now records the halved LR and the rollback count: a resume from it continues the
        # redone stretch, not the abandoned one at the full LR with a fresh rollback budget.
        self.checkpoints.save(restored)
        return restored
