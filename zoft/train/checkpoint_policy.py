"""When the loop checkpoints, and the two files it keeps in ``<run>/checkpoints/``:

* ``last.pt``: the resumable state (:mod:`zoft.train.checkpoint`), rewritten at the cadence of
  :func:`checkpoint_interval` and before a stop on a signal; a resume and a rollback read it back.
  It stays after the run: a larger ``trainer.max_steps`` extends the run from it.
* ``best_trainable.pt``: the trainable weights of the best dev evaluation so far, restored at
  the end of training.

Under several processes every rank holds the same weights and optimizer state, so rank 0 alone
writes the files; FSDP shards the optimizer state, so it gets no resumable checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from zoft.distributed import DistributedError, Parallel
from zoft.outputs import save_tensors
from zoft.train.checkpoint import CHECKPOINT_NAME, LoopState, load_checkpoint, save_checkpoint
from zoft.train.parts import TrainParts

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import TrainerConfig

log = logging.getLogger(__name__)

AUTO_CHECKPOINT_MAX = 1000  # the auto cadence checkpoints at least this often (in steps)
BEST_NAME = "best_trainable.pt"


def checkpoint_interval(cfg: TrainerConfig, steps: int, every_eval: int) -> int:
    """Steps between resumable checkpoints: ``checkpoint_steps`` when set (0: only on a
    signal); auto (null): at every dev evaluation, and at least every 1000 steps (every tenth of
    the run when there are no evaluations), so that a kill loses at most that stretch."""
    if cfg.checkpoint_steps is not None:
        return cfg.checkpoint_steps
    cadence = every_eval if every_eval else max(steps // 10, 1)
    return min(cadence, AUTO_CHECKPOINT_MAX)


class CheckpointPolicy:
    """Saves and restores ``last.pt`` and ``best_trainable.pt`` of one run, and says at which
    steps the loop saves ``last.pt`` (:meth:`plan`, then :meth:`is_due`)."""

    def __init__(self, parts: TrainParts, cfg: TrainerConfig, folder: Path, parallel: Optional[Parallel] = None,
                 run_config: Optional[dict] = None) -> None:
        self.parts = parts
        self.cfg = cfg
        self.last_path = Path(folder) / CHECKPOINT_NAME
        self.best_path = Path(folder) / BEST_NAME
        self.parallel = parallel or Parallel()
        # Stored in every checkpoint: a resume with other run-defining settings is refused.
        self.run_config = run_config
        self.every = 0  # set by plan()

    # -- when ----------------------------------------------------------------------------------
    def plan(self, steps: int, every_eval: int) -> None:
        """Fix the cadence for a fit of ``steps`` steps with a dev evaluation every ``every_eval``."""
        self.every = checkpoint_interval(self.cfg, steps, every_eval)

    def is_due(self, step: int, stopping: bool) -> bool:
        """``last.pt`` is written at the cadence, and before every stop on a signal, so that the
        same command resumes where the stop happened."""
        return bool(self.every and step % self.every == 0) or stopping

    # -- last.pt: the resumable state ------------------------------------------------------------
    def save(self, state: LoopState) -> None:
        """Write ``last.pt`` (every rank calls this: the ranks wait for rank 0's write)."""
        if not self.parallel.supports_resumable_checkpoints:
            log.warning("step %d: no resumable checkpoint under FSDP (sharded optimizer state)", state.step)
            return
        if self.parallel.is_main:  # all ranks hold the same weights and optimizer state
            p = self.parts
            save_checkpoint(self.last_path, p.trainable, p.optimizer, p.scheduler, state, run_config=self.run_config)
        self.parallel.barrier()

    def resume(self) -> LoopState:
        """Load ``last.pt`` into the weights, optimizer, schedule and RNGs for a resumed run; a
        checkpoint written under other run-defining settings is refused."""
        if not self.parallel.supports_resumable_checkpoints:
            raise DistributedError(f"cannot resume {self.last_path} under distributed.strategy=fsdp; "
                                   "resume with ddp, or start afresh with resume=false")
        p = self.parts
        state = load_checkpoint(self.last_path, p.trainable, p.optimizer, p.scheduler, run_config=self.run_config)
        log.info("resuming from %s at step %d", self.last_path, state.step)
        return state

    def has_last(self) -> bool:
        """Whether there is a ``last.pt`` to go back to."""
        return self.last_path.exists()

    def restore_last(self) -> LoopState:
        """Go back to ``last.pt`` within this run (a rollback): same settings by construction,
        so nothing is compared."""
        p = self.parts
        return load_checkpoint(self.last_path, p.trainable, p.optimizer, p.scheduler)

    # -- best_trainable.pt: the best weights by dev ------------------------------------------------
    def save_best(self) -> None:
        """Keep the current trainable weights as the best so far."""
        state = self.parallel.full_state(self.parts.trainable)  # every rank: a collective under FSDP
        if self.parallel.is_main:
            save_tensors(self.best_path, state)

    def restore_best(self) -> None:
        """Load the best weights back into the model."""
        # Rank 0 reads the file and broadcasts it (the other ranks never wrote one).
        state = torch.load(self.best_path, map_location="cpu", weights_only=True) if self.parallel.is_main else None
        self.parallel.load_full_state(self.parts.trainable, state)
