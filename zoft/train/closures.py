"""The closures that ``optimizer.step(closure)`` calls, all built here.

Every optimizer moves through one call, so what differs between backprop and zeroth-order
training is only what the closure does with the loss:

* backprop (SGD, Adam): zero the gradients, forward + backward over the micro-batches, unscale
  (fp16) or clip, return the loss; the optimizer then updates.
* zeroth-order (MeZO and the estimators built on it): forward passes only, without a graph; the
  optimizer calls it at theta + eps z and theta - eps z.
* forward-mode AD (forward gradient): forward passes whose loss stays a tensor, for the jvp.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from zoft.distributed import DistributedError, Parallel
from zoft.train.parts import TrainParts
from zoft.train.precision import LossScaler, PrecisionPlan

log = logging.getLogger(__name__)

Closure = Callable[[], torch.Tensor]


class StepClosures:
    """Builds the closure of one batch, and owns what only the closures read: the split into
    ``grad_accum`` micro-batches, autocast, fp16 loss scaling and gradient clipping."""

    def __init__(self, parts: TrainParts, grad_accum: int = 1, parallel: Optional[Parallel] = None,
                 precision: Optional[PrecisionPlan] = None, max_grad_norm: Optional[float] = None) -> None:
        self.parts = parts
        self.grad_accum = grad_accum
        # Several processes: each evaluates its shard of every batch.
        self.parallel = parallel or Parallel()
        self.zeroth_order = parts.zeroth_order
        # Forward-mode AD (forward gradient) differentiates the loss itself: it needs it as a
        # tensor of this process's forward, which no all-reduced scalar can stand in for.
        self.needs_loss_tensor = parts.capabilities.needs_loss_tensor
        if self.needs_loss_tensor and self.parallel.active:
            raise DistributedError(f"{type(parts.optimizer).__name__} differentiates the loss by forward-mode AD "
                                   "in one process; run it without distributed.strategy (a single process)")
        # Forward passes autocast when the precision plan says so (fp32 master weights, "amp").
        self.precision = precision or PrecisionPlan("float32", None)
        self.device = parts.device
        # Clipping and loss scaling apply to backprop gradients only (MeZO has no .grad); fp16
        # autocast of backprop needs the scaling, or small gradients underflow to zero.
        self.max_grad_norm = None if self.zeroth_order else max_grad_norm
        fp16 = self.precision.autocast_dtype == torch.float16
        self.scaler = LossScaler() if fp16 and not self.zeroth_order else None

    def for_batch(self, batch: list) -> Closure:
        """The closure of one optimizer step on ``batch`` (this rank's shard of it)."""
        local = self.parallel.shard(batch)  # the whole batch in a single process
        micro = self.micro_batches(local)
        # Weights are relative to the GLOBAL batch, so summing them over ranks gives the same
        # example-weighted loss as one process evaluating the whole batch.
        weights = [len(mb) / len(batch) for mb in micro]
        if self.needs_loss_tensor:
            return self._forward_ad(micro, weights)
        if self.zeroth_order:
            return self._forward_only(micro, weights)
        return self._backprop(batch, micro, weights)

    def micro_batches(self, batch: list) -> list[list]:
        """``batch`` cut into ``grad_accum`` pieces (fewer when it is shorter than that)."""
        size = len(batch) // self.grad_accum if len(batch) >= self.grad_accum else len(batch)
        return [batch[i:i + size] for i in range(0, len(batch), max(size, 1))]

    def _forward_ad(self, micro: list[list], weights: list[float]) -> Closure:
        """Forward gradient: the loss stays a tensor for the jvp, and no backward graph is
        recorded (no_grad; inference tensors would refuse the tangents)."""
        model, objective, device, precision = self.parts.model, self.parts.objective, self.device, self.precision

        def tensor_closure() -> torch.Tensor:
            with torch.no_grad(), precision.autocast(device):
                return sum((w * objective.loss(model, mb).float() for w, mb in zip(weights, micro)),
                           torch.zeros((), dtype=torch.float32, device=device))
        return tensor_closure

    def _forward_only(self, micro: list[list], weights: list[float]) -> Closure:
        """Zeroth-order: forward passes under inference mode, the loss a float64 scalar."""
        model, objective, device, precision, par = (self.parts.model, self.parts.objective, self.device,
                                                    self.precision, self.parallel)

        def zo_closure() -> torch.Tensor:
            with torch.inference_mode(), precision.autocast(device):
                local_loss = sum((w * objective.loss(model, mb).float().item() for w, mb in zip(weights, micro)), 0.0)
            # Data-parallel MeZO: the only communication is this scalar.
            return torch.tensor(par.all_reduce_sum(local_loss), dtype=torch.float64)
        return zo_closure

    def _backprop(self, batch: list, micro: list[list], weights: list[float]) -> Closure:
        """Backprop: gradients accumulated over the micro-batches, then unscaled or clipped."""
        par, optimizer, objective = self.parallel, self.parts.optimizer, self.parts.objective
        if not micro:
            # A batch shorter than the world: DDP/FSDP still need this rank's forward/backward
            # (their collectives run inside it), with a zero weight.
            micro, weights = [batch[:1]], [0.0]
        model = par.train_model(self.parts.model)
        params = self.parts.params

        def fo_closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            scale = self.scaler.scale if self.scaler else 1.0
            for i, (w, mb) in enumerate(zip(weights, micro)):
                with par.grad_sync(last_micro_batch=i == len(micro) - 1), par.autocast(), \
                        self.precision.autocast(self.device):
                    loss = objective.loss(model, mb) * w
                    (loss * (par.grad_scale * scale)).backward()
                total += loss.item()
            if self.scaler and not self.scaler.unscale_or_skip(params):
                log.warning("fp16 gradients overflowed; step skipped, loss scale now %g", self.scaler.scale)
            elif self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            return torch.tensor(par.all_reduce_sum(total), dtype=torch.float64)
        return fo_closure
