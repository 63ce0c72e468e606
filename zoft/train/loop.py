"""The one training loop. Every optimizer moves through ``optimizer.step(closure)``:

* first-order (SGD, Adam): the closure zeroes gradients, runs forward + backward over the
  micro-batches of one batch, clips, and returns the loss; the optimizer then updates.
* zeroth-order (MeZO): the closure runs forward passes only (no graph); the optimizer calls it at
  theta + eps z and theta - eps z.

The closures are built in :mod:`zoft.train.closures`; checkpoints, resume and the best weights
are :mod:`zoft.train.checkpoint_policy`'s; divergence and rollback :mod:`zoft.train.rollback`'s.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from zoft.distributed import Parallel
from zoft.errors import Preempted
from zoft.objectives.base import EvalResult
from zoft.train.checkpoint import LoopState
from zoft.train.checkpoint_policy import CheckpointPolicy
from zoft.train.closures import StepClosures
from zoft.train.metrics_file import MetricsFile
from zoft.train.parts import TrainParts
from zoft.train.rollback import DivergenceGuard, Rollback

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import TrainerConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    best_step: Optional[int]
    best_dev: dict[str, float] = field(default_factory=dict)
    last_loss: float = float("nan")
    forward_passes: int = 0
    seconds: float = 0.0


def total_steps(cfg: TrainerConfig, num_train: int) -> int:
    """``num_epochs`` (if set) times batches per epoch, else ``max_steps``."""
    if cfg.num_epochs is not None:
        return math.ceil(cfg.num_epochs * math.ceil(num_train / cfg.batch_size))
    return cfg.max_steps


def eval_interval(cfg: TrainerConfig, steps: int) -> int:
    """Steps between dev evaluations (0: only at the end): ``eval_steps`` when set, else
    ``num_evals`` evaluations spread evenly over the ``steps`` of training. With ``num_epochs``
    epochs and ``num_evals == num_epochs`` that is exactly once per epoch."""
    if cfg.eval_steps is not None:
        return cfg.eval_steps
    return math.ceil(steps / cfg.num_evals) if cfg.num_evals and steps else 0


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the batch of 0-based ``step``: epoch ``e`` is a permutation seeded by
    (seed, e), cut into batches (the last one short). A pure function of the step, so a resumed
    run sees exactly the batches the uninterrupted run would have seen."""
    per_epoch = math.ceil(num_items / batch_size)
    epoch, index = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=gen)
    return order[index * batch_size:(index + 1) * batch_size].tolist()


def is_better(value: float, best: Optional[float], select_by: str) -> bool:
    if best is None:
        return True
    return value < best if select_by == "loss" else value > best


class Trainer:
    """Runs ``cfg.max_steps`` optimizer steps (or the epochs' worth), evaluates on dev every
    :func:`eval_interval`, keeps the best trainable weights on disk, and restores them at the end.

    What the loop does not decide itself, it asks a collaborator:

    * :class:`~zoft.train.closures.StepClosures`: the closure of each step's batch;
    * :class:`~zoft.train.checkpoint_policy.CheckpointPolicy`: when ``last.pt`` is written, the
      resume from it, the best weights;
    * :class:`~zoft.train.rollback.Rollback`: going back to ``last.pt`` after a divergence.

    ``closures`` and ``checkpoints`` default to fp32 closures without clipping and checkpoints in
    ``run_dir/checkpoints`` that record no run config.
    """

    def __init__(
        self,
        parts: TrainParts,
        cfg: TrainerConfig,
        run_dir: Path,
        seed: int,
        *,
        closures: Optional[StepClosures] = None,
        checkpoints: Optional[CheckpointPolicy] = None,
        parallel: Optional[Parallel] = None,
        on_log: Optional[Callable[[dict], None]] = None,
    ) -> None:
        self.parts = parts
        self.model, self.objective, self.optimizer, self.scheduler = (parts.model, parts.objective, parts.optimizer,
                                                                      parts.scheduler)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seed = seed  # of the batch order (batch_indices)
        self.on_log = on_log
        # Several processes: each evaluates its shard of every batch; only rank 0 writes files.
        self.parallel = parallel or Parallel()
        self.zeroth_order = parts.zeroth_order
        self.closures = closures or StepClosures(parts, cfg.grad_accum, self.parallel)
        self.checkpoints = checkpoints or CheckpointPolicy(parts, cfg, self.run_dir / "checkpoints", self.parallel)
        self.rollback = Rollback(cfg, parts, self.checkpoints)

    def evaluate_dev(self, items: Sequence) -> EvalResult:
        return self.objective.evaluate(self.model, items, self.cfg.eval_batch_size, desc="dev")

    def fit(self, train_items: Sequence, dev_items: Sequence, resume: bool = False,
            start_dev: Optional[EvalResult] = None) -> TrainResult:
        """Train to ``total_steps``, evaluating, checkpointing and stopping on a signal; the best
        weights by dev are restored at the end. ``start_dev``: the dev evaluation of the weights
        before the first step (a linear probe's), which then count as a candidate (step 0)."""
        run = _Run(self, train_items, dev_items, self.checkpoints.resume() if resume else None)
        if start_dev is not None and run.state.step == 0:
            self._keep_start(run, start_dev)
        self.model.train(not self.zeroth_order)  # MeZO runs without dropout, as the original
        with StopSignals() as signals:
            try:
                while run.state.step < run.steps:
                    self._iteration(run, signals)
            finally:
                run.close()
                self.model.eval()
        return self._finish(run)

    # -- the parts of one iteration ------------------------------------------------------------
    def _iteration(self, run: "_Run", signals: "StopSignals") -> None:
        """One step (or, when it diverged, a rollback in its place), then its log row and the
        evaluation and checkpoint that are due at it."""
        step = run.state.step + 1
        items = run.train_items
        batch = [items[i] for i in batch_indices(step - 1, len(items), self.cfg.batch_size, self.seed)]
        reason = self._take_step(run, batch)
        if reason:
            run.continue_from(self.rollback.recover(run.state, step, reason, run.metrics))
            return
        run.count_step(step, len(batch), self._forward_passes_per_step())
        if run.forward_budget_spent():
            run.steps = step  # this step is the last: evaluated as the end of training
        self._log_step(run, step)
        if run.dev_items and ((run.every and step % run.every == 0) or step == run.steps):
            self._evaluate_and_keep_best(run, step)
        self._checkpoint_or_stop(run, step, signals)

    def _take_step(self, run: "_Run", batch: list) -> Optional[str]:
        """One optimizer step; returns why it must be rolled back, or None."""
        try:
            run.loss = float(self.optimizer.step(self.closures.for_batch(batch)))
        except FloatingPointError as err:  # MeZO refuses a non-finite loss (weights restored)
            return str(err)
        self.scheduler.step()
        return run.guard.check(run.loss)

    def _forward_passes_per_step(self) -> int:
        """Forward passes of the step just taken (one for backprop)."""
        return int(self.optimizer.forward_passes_per_step) if self.zeroth_order else 1

    def _log_step(self, run: "_Run", step: int) -> None:
        if step % max(self.cfg.log_steps, 1) and step != run.steps:
            return
        elapsed = time.perf_counter() - run.start
        row = {"step": step, "loss": run.loss, "lr": self.scheduler.get_last_lr()[0],
               "forward_passes": run.state.forward_passes,
               "examples_per_s": run.state.examples_seen / max(elapsed, 1e-9), "elapsed_s": elapsed}
        grads = self.optimizer.last_projected_grads if self.zeroth_order else None
        if grads:
            row["projected_grad"] = sum(grads) / len(grads)
        run.metrics.write(row)
        run.bar.set_postfix(loss=f"{run.loss:.4f}")

    def _evaluate_and_keep_best(self, run: "_Run", step: int) -> None:
        result = self.evaluate_dev(run.dev_items)
        self.model.train(not self.zeroth_order)
        value = result.metrics[run.key]
        improved = is_better(value, run.state.best_value, self.cfg.select_by)
        run.metrics.write({"step": step, **{f"dev_{k}": v for k, v in result.metrics.items()}, "best": improved})
        log.info("step %d: dev %s%s", step, _fmt(result.metrics), " (best)" if improved else "")
        if improved:
            run.state.best_value, run.state.best_step, run.state.best_dev = value, step, dict(result.metrics)
            self.checkpoints.save_best()

    def _keep_start(self, run: "_Run", result: EvalResult) -> None:
        """The starting weights as the first best-checkpoint candidate (step 0)."""
        run.state.best_value, run.state.best_step = result.metrics[run.key], 0
        run.state.best_dev = dict(result.metrics)
        run.metrics.write({"step": 0, **{f"dev_{k}": v for k, v in result.metrics.items()}, "best": True})
        self.checkpoints.save_best()

    def _checkpoint_or_stop(self, run: "_Run", step: int, signals: "StopSignals") -> None:
        """The rolling checkpoint when due, and the stop a signal asked for (after a checkpoint,
        so the same command resumes)."""
        if self.parallel.active and self.parallel.any(signals.received is not None):
            signals.received = signals.received or "SIGTERM (another rank)"  # stop together
        if self.checkpoints.is_due(step, stopping=signals.received is not None):
            run.state.seconds = run.seconds()
            self.checkpoints.save(run.state)
        if signals.received:
            signals.requeue_if_slurm(self.cfg.requeue_on_signal)
            raise Preempted(step, signals.received)

    def _finish(self, run: "_Run") -> TrainResult:
        """The best weights by dev back in the model, and the result."""
        state = run.state
        if state.best_step is not None and state.best_step != run.steps:
            log.info("restoring the best weights (step %d, dev %s=%.4f)", state.best_step, run.key, state.best_value)
            self.checkpoints.restore_best()
        # checkpoints/last.pt stays: the last checkpoint (the last step's, as checkpoints follow
        # the evaluations, unless a forward-pass budget ended the run between two), from which a
        # larger trainer.max_steps extends the run.
        return TrainResult(steps=run.steps, best_step=state.best_step, best_dev=state.best_dev,
                           last_loss=run.loss, forward_passes=state.forward_passes, seconds=run.seconds())


class _Run:
    """The bookkeeping of one :meth:`Trainer.fit` call: schedule, state, logs, progress bar.
    ``start``: the state a resume loaded from ``last.pt`` (None: a fresh start)."""

    def __init__(self, trainer: Trainer, train_items: Sequence, dev_items: Sequence,
                 start: Optional[LoopState]) -> None:
        cfg = trainer.cfg
        self.train_items = train_items
        self.dev_items = dev_items
        self.steps = total_steps(cfg, len(train_items))
        self.every = eval_interval(cfg, self.steps)
        trainer.checkpoints.plan(self.steps, self.every)
        self.metrics = MetricsFile(trainer.run_dir / "metrics.jsonl", writes=trainer.parallel.is_main,
                                   on_log=trainer.on_log)
        self.state = start or LoopState()
        if start is not None:
            self.metrics.keep_until(start.step)  # the rows after the checkpoint are redone
        # A zeroth-order forward-pass budget (trainer.max_zo_forward_steps) ends the run early.
        self.forward_budget = cfg.max_zo_forward_steps if trainer.zeroth_order else 0
        if self.forward_budget_spent():  # resumed after the budget ran out: nothing left to do
            self.steps = self.state.step
        self.metrics.open()
        self.key = "loss" if cfg.select_by == "loss" else trainer.objective.metric
        self.guard = DivergenceGuard(trainer.parts, cfg.divergence_factor)
        self.start = time.perf_counter()
        self.seconds_before = self.state.seconds  # training time of earlier attempts, up to their checkpoint
        self.loss = float("nan")
        self.bar = tqdm(total=self.steps, initial=self.state.step, desc="train", dynamic_ncols=True,
                        disable=not (cfg.progress_bar and trainer.parallel.is_main))

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def forward_budget_spent(self) -> bool:
        return bool(self.forward_budget) and self.state.forward_passes >= self.forward_budget

    def count_step(self, step: int, examples: int, forward_passes: int) -> None:
        self.state.step = step
        self.state.forward_passes += forward_passes
        self.state.examples_seen += examples
        self.bar.update(1)

    def continue_from(self, state: LoopState) -> None:
        """Carry on from a rolled-back ``state``: the divergence history starts again."""
        self.state = state
        self.guard.reset()
        self.bar.n = self.state.step

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()


class StopSignals:
    """Turns SIGTERM/SIGUSR1 (Slurm's preemption warnings) and SIGINT (Ctrl-C) into a flag
    checked at step ends: the loop checkpoints and stops. A second SIGINT stops at once."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt  # asked twice: do not wait for the step to end
        self.received = name
        log.warning("received %s: will checkpoint and stop after the current step", self.received)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @staticmethod
    def requeue_if_slurm(enabled: bool) -> None:
        job = os.environ.get("SLURM_JOB_ID")
        if enabled and job:
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=30)
            log.warning("requeued Slurm job %s; it resumes from the checkpoint", job)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
