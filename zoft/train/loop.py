"""The one training loop. Every optimizer moves through ``optimizer.step(closure)``:

* first-order (SGD, Adam): the closure zeroes gradients, runs forward + backward over the
  micro-batches of one batch, clips, and returns the loss; the optimizer then updates.
* zeroth-order (MeZO): the closure runs forward passes only (no graph); the optimizer calls it at
  theta + eps z and theta - eps z.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from zoft.distributed import DistributedError, Parallel
from zoft.objectives.base import EvalResult, Objective
from zoft.optim.build import is_zeroth_order
from zoft.errors import DivergenceError, Preempted
from zoft.outputs import MetricsLog, read_jsonl_tolerant, save_tensors, write_jsonl
from zoft.train.checkpoint import CHECKPOINT_NAME, LoopState, load_checkpoint, save_checkpoint
from zoft.train.precision import LossScaler, PrecisionPlan

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


AUTO_CHECKPOINT_MAX = 1000  # the auto cadence checkpoints at least this often (in steps)


def checkpoint_interval(cfg: TrainerConfig, steps: int, every_eval: int) -> int:
    """Steps between resumable checkpoints: ``checkpoint_steps`` when set (0: only on a
    signal); auto (null): at every dev evaluation, and at least every 1000 steps (every tenth of
    the run when there are no evaluations), so that a kill loses at most that stretch."""
    if cfg.checkpoint_steps is not None:
        return cfg.checkpoint_steps
    cadence = every_eval if every_eval else max(steps // 10, 1)
    return min(cadence, AUTO_CHECKPOINT_MAX)


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
    """Runs ``cfg.max_steps`` optimizer steps, evaluates on dev every :func:`eval_interval`, keeps the
    best trainable weights on disk, and restores them at the end."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        trainable: Sequence[tuple[str, torch.nn.Parameter]],
        cfg: TrainerConfig,
        run_dir: Path,
        seed: int,
        max_grad_norm: Optional[float] = None,
        on_log: Optional[Callable[[dict], None]] = None,
        parallel: Optional[Parallel] = None,
        precision: Optional[PrecisionPlan] = None,
        run_config: Optional[dict] = None,
    ) -> None:
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.trainable = list(trainable)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.on_log = on_log
        # Several processes: each evaluates its shard of every batch; only rank 0 writes files.
        self.parallel = parallel or Parallel()
        self.zeroth_order = is_zeroth_order(optimizer)
        if getattr(optimizer, "needs_loss_tensor", False) and self.parallel.active:
            raise DistributedError(f"{type(optimizer).__name__} differentiates the loss by forward-mode AD in one "
                                   "process; run it without distributed.strategy (a single process)")
        # Clipping applies to backprop gradients only (MeZO has no .grad).
        self.max_grad_norm = None if self.zeroth_order else max_grad_norm
        # Forward passes autocast when the precision plan says so (fp32 master weights, "amp");
        # fp16 autocast of backprop also needs loss scaling.
        self.precision = precision or PrecisionPlan("float32", None)
        self.device = next(iter(p for _, p in self.trainable), torch.empty(0)).device
        self.scaler = LossScaler() if self.precision.autocast_dtype == torch.float16 and not self.zeroth_order else None
        self.best_path = self.run_dir / "checkpoints" / "best_trainable.pt"
        self.last_path = self.run_dir / "checkpoints" / CHECKPOINT_NAME
        # Stored in every checkpoint: a resume with other run-defining settings is refused.
        self.run_config = run_config

    # -- closures ------------------------------------------------------------------------------
    def _micro_batches(self, batch: list) -> list[list]:
        size = len(batch) // self.cfg.grad_accum if len(batch) >= self.cfg.grad_accum else len(batch)
        return [batch[i:i + size] for i in range(0, len(batch), max(size, 1))]

    def _closure(self, batch: list) -> Callable[[], torch.Tensor]:
        par = self.parallel
        local = par.shard(batch)  # the whole batch in a single process
        micro = self._micro_batches(local)
        # Weights are relative to the GLOBAL batch, so summing them over ranks gives the same
        # example-weighted loss as one process evaluating the whole batch.
        weights = [len(mb) / len(batch) for mb in micro]
        params = [p for _, p in self.trainable]

        if self.zeroth_order and getattr(self.optimizer, "needs_loss_tensor", False):
            # Forward-mode AD (forward gradient): the loss stays a tensor for the jvp, and no
            # backward graph is recorded (no_grad; inference tensors would refuse the tangents).
            def tensor_closure() -> torch.Tensor:
                with torch.no_grad(), self.precision.autocast(self.device):
                    return sum((w * self.objective.loss(self.model, mb).float() for w, mb in zip(weights, micro)),
                               torch.zeros((), dtype=torch.float32, device=self.device))
            return tensor_closure

        if self.zeroth_order:
            def zo_closure() -> torch.Tensor:
                with torch.inference_mode(), self.precision.autocast(self.device):
                    local_loss = sum((w * self.objective.loss(self.model, mb).float().item()
                                      for w, mb in zip(weights, micro)), 0.0)
                # Data-parallel MeZO: the only communication is this scalar.
                return torch.tensor(par.all_reduce_sum(local_loss), dtype=torch.float64)
            return zo_closure

        if not micro:
            # A batch shorter than the world: DDP/FSDP still need this rank's forward/backward
            # (their collectives run inside it), with a zero weight.
            micro, weights = [batch[:1]], [0.0]
        model = par.train_model(self.model)

        def fo_closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            total = 0.0
            scale = self.scaler.scale if self.scaler else 1.0
            for i, (w, mb) in enumerate(zip(weights, micro)):
                with par.grad_sync(last_micro_batch=i == len(micro) - 1), par.autocast(), \
                        self.precision.autocast(self.device):
                    loss = self.objective.loss(model, mb) * w
                    (loss * (par.grad_scale * scale)).backward()
                total += loss.item()
            if self.scaler and not self.scaler.unscale_or_skip(params):
                log.warning("fp16 gradients overflowed; step skipped, loss scale now %g", self.scaler.scale)
            elif self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            return torch.tensor(par.all_reduce_sum(total), dtype=torch.float64)
        return fo_closure

    def _forward_passes_per_step(self) -> int:
        """Forward passes of the step just taken (one for backprop)."""
        return int(self.optimizer.forward_passes_per_step) if self.zeroth_order else 1

    # -- checkpoints of the best weights -------------------------------------------------------
    def _save_best(self) -> None:
        state = self.parallel.full_state(self.trainable)  # every rank: a collective under FSDP
        if self.parallel.is_main:
            save_tensors(self.best_path, state)

    def _restore_best(self) -> None:
        # Rank 0 reads the file and broadcasts it (the other ranks never wrote one).
        state = torch.load(self.best_path, map_location="cpu", weights_only=True) if self.parallel.is_main else None
        self.parallel.load_full_state(self.trainable, state)

    # -- the loop ------------------------------------------------------------------------------
    def evaluate_dev(self, items: Sequence) -> EvalResult:
        return self.objective.evaluate(self.model, items, self.cfg.eval_batch_size, desc="dev")

    def _checkpoint(self, state: LoopState) -> None:
        if not self.parallel.supports_resumable_checkpoints:
            log.warning("step %d: no resumable checkpoint under FSDP (sharded optimizer state)", state.step)
            return
        if self.parallel.is_main:  # all ranks hold the same weights and optimizer state
            save_checkpoint(self.last_path, self.trainable, self.optimizer, self.scheduler, state,
                            run_config=self.run_config)
        self.parallel.barrier()

    def _resume(self, metrics_path: Path) -> LoopState:
        if not self.parallel.supports_resumable_checkpoints:
            raise DistributedError(f"cannot resume {self.last_path} under distributed.strategy=fsdp; "
                                   "resume with ddp, or start afresh with resume=false")
        state = load_checkpoint(self.last_path, self.trainable, self.optimizer, self.scheduler,
                                run_config=self.run_config)
        # Rows logged after the checkpoint are redone by the resumed run: drop them.
        if metrics_path.exists() and self.parallel.is_main:
            rows = [r for r in read_jsonl_tolerant(metrics_path) if r.get("step", 0) <= state.step]
            write_jsonl(metrics_path, rows)
        log.info("resuming from %s at step %d", self.last_path, state.step)
        return state

    def _check_divergence(self, loss: float, history: list[float]) -> Optional[str]:
        if not math.isfinite(loss):
            return f"loss is {loss}"
        grads = self.optimizer.last_projected_grads if self.zeroth_order else None
        if not grads:
            return None
        g = abs(sum(grads) / len(grads))
        if not math.isfinite(g):
            return f"projected gradient is {g}"
        factor = self.cfg.divergence_factor
        if factor and len(history) >= 20:
            typical = statistics.median(history)
            if typical > 0 and g > factor * typical:
                return f"|projected gradient| {g:.3g} is over {factor:g}x its running median {typical:.3g}"
        history.append(g)
        del history[:-200]
        return None

    def _rollback(self, state: LoopState, step: int, reason: str, metrics_path: Path) -> LoopState:
        """Reload the last checkpoint and halve the LR, or raise when that is not possible.

        The best-so-far bookkeeping is kept from before the rollback: ``best_trainable.pt`` holds
        the best weights evaluated so far, possibly from the abandoned stretch. Training rows of
        that stretch leave ``metrics.jsonl``; its evaluations stay, marked ``abandoned``. The
        MeZO trajectory drops the abandoned steps, so ``zoft replay`` follows the redone ones.
        """
        if self.cfg.on_divergence != "rollback" or not self.last_path.exists() or state.rollbacks >= self.cfg.max_rollbacks:
            raise DivergenceError(step, reason)
        restored = load_checkpoint(self.last_path, self.trainable, self.optimizer, self.scheduler)
        scale = state.lr_scale * 0.5
        # The scheduler now holds the checkpoint's LRs, made at the checkpoint's own scale.
        factor = scale / restored.lr_scale
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * factor
        restored.rollbacks, restored.lr_scale = state.rollbacks + 1, scale
        restored.best_value, restored.best_step, restored.best_dev = state.best_value, state.best_step, state.best_dev
        if self.zeroth_order and self.optimizer.trajectory is not None:
            self.optimizer.trajectory.rewind()
        if self.parallel.is_main and metrics_path.exists():
            rows = []
            for r in read_jsonl_tolerant(metrics_path):
                if r.get("step", 0) <= restored.step:
                    rows.append(r)
                elif "loss" not in r:  # an evaluation of the abandoned stretch
                    rows.append({**r, "abandoned": True})
            rows.append({"step": restored.step, "rollback_from": step, "reason": reason, "lr_scale": scale})
            write_jsonl(metrics_path, rows)
        log.warning("step %d: %s; rolled back to step %d with the LR scaled x%g", step, reason, restored.step, scale)
        return restored

    def fit(self, train_items: Sequence, dev_items: Sequence, resume: bool = False,
            start_dev: Optional[EvalResult] = None) -> TrainResult:
        """Train to ``total_steps``, evaluating, checkpointing and stopping on a signal; the best
        weights by dev are restored at the end. ``start_dev``: the dev evaluation of the weights
        before the first step (a linear probe's), which then count as a candidate (step 0)."""
        run = _Run(self, train_items, dev_items, resume)
        if start_dev is not None and run.state.step == 0:
            self._keep_start(run, start_dev)
        self.model.train(not self.zeroth_order)  # MeZO runs without dropout, as the original
        with StopSignals() as signals:
            try:
                while run.state.step < run.steps:
                    step = run.state.step + 1
                    batch = [train_items[i] for i in batch_indices(step - 1, len(train_items), self.cfg.batch_size, self.seed)]
                    reason = self._take_step(run, batch)
                    if reason:
                        run.roll_back(step, reason)
                        continue
                    run.count_step(step, len(batch), self._forward_passes_per_step())
                    if run.forward_budget_spent():
                        run.steps = step  # this step is the last: evaluated as the end of training
                    self._log_step(run, step)
                    if dev_items and ((run.every and step % run.every == 0) or step == run.steps):
                        self._evaluate_and_keep_best(run, step)
                    self._checkpoint_or_stop(run, step, signals)
            finally:
                run.close()
                self.model.eval()
        state = run.state
        if state.best_step is not None and state.best_step != run.steps:
            log.info("restoring the best weights (step %d, dev %s=%.4f)", state.best_step, run.key, state.best_value)
            self._restore_best()
        # checkpoints/last.pt stays: it is the state at the last step, from which a larger
        # trainer.max_steps extends the run.
        return TrainResult(steps=run.steps, best_step=state.best_step, best_dev=state.best_dev,
                           last_loss=run.loss, forward_passes=state.forward_passes, seconds=run.seconds())

    # -- the parts of one iteration ------------------------------------------------------------
    def _take_step(self, run: "_Run", batch: list) -> Optional[str]:
        """One optimizer step; returns why it must be rolled back, or None."""
        try:
            run.loss = float(self.optimizer.step(self._closure(batch)))
        except FloatingPointError as err:  # MeZO refuses a non-finite loss (weights restored)
            return str(err)
        self.scheduler.step()
        return self._check_divergence(run.loss, run.grad_history)

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
        run.write(row)
        run.bar.set_postfix(loss=f"{run.loss:.4f}")

    def _evaluate_and_keep_best(self, run: "_Run", step: int) -> None:
        result = self.evaluate_dev(run.dev_items)
        self.model.train(not self.zeroth_order)
        value = result.metrics[run.key]
        improved = is_better(value, run.state.best_value, self.cfg.select_by)
        run.write({"step": step, **{f"dev_{k}": v for k, v in result.metrics.items()}, "best": improved})
        log.info("step %d: dev %s%s", step, _fmt(result.metrics), " (best)" if improved else "")
        if improved:
            run.state.best_value, run.state.best_step, run.state.best_dev = value, step, dict(result.metrics)
            self._save_best()

    def _keep_start(self, run: "_Run", result: EvalResult) -> None:
        """The starting weights as the first best-checkpoint candidate (step 0)."""
        run.state.best_value, run.state.best_step = result.metrics[run.key], 0
        run.state.best_dev = dict(result.metrics)
        run.write({"step": 0, **{f"dev_{k}": v for k, v in result.metrics.items()}, "best": True})
        self._save_best()

    def _checkpoint_or_stop(self, run: "_Run", step: int, signals: "StopSignals") -> None:
        """The rolling checkpoint at its interval, and the stop a signal asked for (after a
        checkpoint, so the same command resumes)."""
        if self.parallel.active and self.parallel.any(signals.received is not None):
            signals.received = signals.received or "SIGTERM (another rank)"  # stop together
        if (run.checkpoint_every and step % run.checkpoint_every == 0) or signals.received:
            run.state.seconds = run.seconds()
            self._checkpoint(run.state)
        if signals.received:
            signals.requeue_if_slurm(self.cfg.requeue_on_signal)
            raise Preempted(step, signals.received)


class _Run:
    """The bookkeeping of one :meth:`Trainer.fit` call: schedule, state, logs, progress bar."""

    def __init__(self, trainer: Trainer, train_items: Sequence, dev_items: Sequence, resume: bool) -> None:
        cfg = trainer.cfg
        self.trainer = trainer
        self.dev_items = dev_items
        self.steps = total_steps(cfg, len(train_items))
        self.every = eval_interval(cfg, self.steps)
        self.checkpoint_every = checkpoint_interval(cfg, self.steps, self.every)
        self.metrics_path = trainer.run_dir / "metrics.jsonl"
        self.state = trainer._resume(self.metrics_path) if resume else LoopState()
        # A zeroth-order forward-pass budget (trainer.max_zo_forward_steps) ends the run early.
        self.forward_budget = cfg.max_zo_forward_steps if trainer.zeroth_order else 0
        if self.forward_budget_spent():  # resumed after the budget ran out: nothing left to do
            self.steps = self.state.step
        self.metrics_log = self._open_log()
        self.key = "loss" if cfg.select_by == "loss" else trainer.objective.metric
        self.grad_history: list[float] = []
        self.start = time.perf_counter()
        self.seconds_before = self.state.seconds  # training time of earlier attempts, up to their checkpoint
        self.loss = float("nan")
        self.bar = tqdm(total=self.steps, initial=self.state.step, desc="train", dynamic_ncols=True,
                        disable=not (cfg.progress_bar and trainer.parallel.is_main))

    def _open_log(self):
        return MetricsLog(self.metrics_path) if self.trainer.parallel.is_main else _NoLog()

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def write(self, row: dict) -> None:
        self.metrics_log.write(row)
        if self.trainer.on_log:
            self.trainer.on_log(row)

    def forward_budget_spent(self) -> bool:
        return bool(self.forward_budget) and self.state.forward_passes >= self.forward_budget

    def count_step(self, step: int, examples: int, forward_passes: int) -> None:
        self.state.step = step
        self.state.forward_passes += forward_passes
        self.state.examples_seen += examples
        self.bar.update(1)

    def roll_back(self, step: int, reason: str) -> None:
        self.metrics_log.close()
        self.state = self.trainer._rollback(self.state, step, reason, self.metrics_path)
        self.metrics_log = self._open_log()
        self.grad_history.clear()
        self.bar.n = self.state.step

    def close(self) -> None:
        self.bar.close()
        self.metrics_log.close()


class _NoLog:
    """What ranks other than 0 log to: nothing."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


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
