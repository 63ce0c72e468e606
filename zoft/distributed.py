"""Several processes on torch.distributed: one process per device, launched by ``torchrun`` (or
``accelerate launch``), all running the same ``train.py``.

What each strategy means here (``distributed.strategy``; ``auto`` picks the natural one):

* ``ddp`` (first-order): torch's DistributedDataParallel; each rank runs forward/backward on its
  shard of the global batch and DDP all-reduces the gradients.
* ``fsdp`` (first-order): torch's FSDP2 (``fully_shard``) around every decoder layer (the model's
  ``_no_split_modules``) and the root; parameters, gradients and optimizer state are sharded.
* ``zo-dp`` (zeroth-order; what ``auto``/``ddp`` mean for MeZO): no wrapper. Every rank holds the
  same weights and the same perturbation seed, hence the same z; each rank evaluates its shard of
  the batch and the closure all-reduces one loss scalar, so a MeZO step exchanges a few bytes per
  forward pass. All ranks then apply the identical update.

Only rank 0 writes files (results, metrics, predictions, checkpoints); the others write nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from zoft.config.choices import BACKENDS, MIXED_PRECISION, STRATEGIES  # noqa: F401 - re-exported vocabulary
from zoft.errors import ZoftUserError

log = logging.getLogger(__name__)


Named = list[tuple[str, torch.nn.Parameter]]


class DistributedError(ZoftUserError, ValueError):
    """A distributed setting that cannot work (named, with what would)."""


def env_world_size() -> int:
    """Processes in the job as torchrun/accelerate announce them (``WORLD_SIZE``), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_rank() == 0


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of ``rank``'s contiguous share of ``n`` items; shares differ by at most one
    item and the first ``n % world`` ranks get the larger ones."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class Parallel:
    """This process's place in the job and the few collective operations the loop needs.

    The single-process default makes every method a no-op, so the loop has one code path.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"  # resolved: none | ddp | fsdp | zo-dp
    mixed_precision: str = "no"
    device_type: str = "cpu"
    initialized_here: bool = False
    ddp: Optional[torch.nn.Module] = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def supports_resumable_checkpoints(self) -> bool:
        # FSDP's optimizer state is sharded (DTensors): a resumable checkpoint would need
        # torch.distributed.checkpoint, which zoft does not use yet.
        return self.strategy != "fsdp"

    # -- the batch -----------------------------------------------------------------------------
    def shard(self, batch: Sequence) -> list:
        """This rank's contiguous share of the global batch (possibly empty when the batch is
        shorter than the world)."""
        start, end = shard_bounds(len(batch), self.rank, self.world_size)
        return list(batch[start:end])

    @property
    def grad_scale(self) -> float:
        """DDP and FSDP average gradients over ranks; the loop multiplies each rank's loss by
        this so the average becomes the sum of per-shard contributions (weighted by shard size),
        i.e. exactly the gradient of the global-batch loss, also when shards differ in size."""
        return float(self.world_size) if self.strategy in ("ddp", "fsdp") else 1.0

    def train_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training forward goes through (the DDP wrapper under DDP)."""
        return self.ddp if self.ddp is not None else model

    @contextlib.contextmanager
    def grad_sync(self, last_micro_batch: bool) -> Iterator[None]:
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if self.ddp is not None and not last_micro_batch:
            with self.ddp.no_sync():
                yield
        else:
            yield

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for DDP (FSDP casts through its MixedPrecisionPolicy instead)."""
        if self.strategy == "ddp" and self.mixed_precision == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- collectives on scalars ----------------------------------------------------------------
    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, value: float) -> float:
        """Sum of ``value`` over ranks (float64 on the wire: 8 bytes)."""
        if not self.active:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on some rank (e.g. a SIGTERM seen by one rank)."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    # -- weights -------------------------------------------------------------------------------
    def full_state(self, trainable: Named) -> dict[str, torch.Tensor]:
        """Full (unsharded) CPU copies of the trainable tensors; a collective under FSDP, so
        every rank must call it."""
        out = {}
        for n, p in trainable:
            t = p.detach()
            if hasattr(t, "full_tensor"):  # an FSDP2 DTensor shard
                t = t.full_tensor()
            out[n] = t.cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state(self, trainable: Named, state: Optional[dict[str, torch.Tensor]]) -> None:
        """Inverse of :meth:`full_state`. Only rank 0 needs ``state`` (others pass None): the
        tensors are broadcast from it, so ranks need not share a filesystem; under FSDP each rank
        then keeps its own shard."""
        for n, p in trainable:
            if not self.active:
                p.copy_(state[n].to(p.device))
                continue
            full = state[n] if self.is_main else torch.empty(p.shape, dtype=p.dtype)
            full = full.to(self._comm_device(), p.dtype).contiguous()
            dist.broadcast(full, src=0)
            if hasattr(p, "device_mesh"):  # an FSDP2 DTensor: keep this rank's shard
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full.to(p.to_local().device), p.device_mesh, p.placements)
            p.copy_(full.to(p.device) if not hasattr(full, "device_mesh") else full)

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def resolve_strategy(requested: str, world_size: int, zeroth_order: bool) -> str:
    """The strategy actually used for ``requested`` (``auto``/``ddp``/``fsdp``)."""
    if requested not in STRATEGIES:
        raise DistributedError(f"distributed.strategy={requested!r} is not valid; choose one of {', '.join(STRATEGIES)}")
    if world_size <= 1:
        return "none"
    if zeroth_order:
        if requested == "fsdp":
            raise DistributedError(
                "distributed.strategy=fsdp needs a first-order optimizer; MeZO runs data-parallel "
                "by exchanging loss scalars (distributed.strategy=auto or ddp), or model-parallel "
                "in one process with model.device_map=auto")
        return "zo-dp"
    return "ddp" if requested == "auto" else requested


def setup(cfg: Any) -> Parallel:
    """Join the process group announced by torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a single process gets the no-op default."""
    dcfg = cfg.get("distributed") if hasattr(cfg, "get") else getattr(cfg, "distributed", None)
    world = env_world_size()
    if world <= 1:
        return Parallel()
    backend = dcfg.backend if dcfg is not None else "auto"
    if backend not in BACKENDS:
        raise DistributedError(f"distributed.backend={backend!r} is not valid; choose one of {', '.join(BACKENDS)}")
    use_cuda = torch.cuda.is_available() and str(cfg.model.device) != "cpu"
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise DistributedError("distributed.backend=nccl needs CUDA GPUs; on CPU use distributed.backend=gloo (or auto)")
    if cfg.model.device_map:
        raise DistributedError(
            f"model.device_map={cfg.model.device_map!r} (model parallel in one process) cannot be combined "
            f"with {world} data-parallel processes; launch one process (python train.py ...) for device_map=auto")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)  # so model.device=auto/"cuda" means this rank's GPU
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        here = True
    parallel = Parallel(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                        mixed_precision=dcfg.mixed_precision if dcfg is not None else "no",
                        device_type="cuda" if use_cuda else "cpu", initialized_here=here)
    log.info("rank %d of %d (local rank %d, backend %s)", parallel.rank, parallel.world_size, local_rank, backend)
    return parallel


def wrap(parallel: Parallel, model: torch.nn.Module, named: Named, cfg: Any, zeroth_order: bool) -> Named:
    """Resolve the strategy and wrap ``model`` for it; returns the trainable (name, parameter)
    pairs to optimise (new DTensor parameters under FSDP, so build the optimizer after this)."""
    dcfg = cfg.distributed
    parallel.strategy = resolve_strategy(dcfg.strategy, parallel.world_size, zeroth_order)
    if parallel.mixed_precision not in MIXED_PRECISION:
        raise DistributedError(
            f"distributed.mixed_precision={parallel.mixed_precision!r} is not valid; choose one of "
            f"{', '.join(MIXED_PRECISION)} (fp16 needs loss scaling, which the closure-based loop does not do)")
    if parallel.strategy == "none":
        return named
    if not named:
        raise DistributedError("nothing trains (no trainable parameters): launch evaluation-only methods as one process")
    if parallel.strategy == "zo-dp":
        _broadcast_parameters(model)
        return named
    if parallel.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [parallel.local_rank] if parallel.device_type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        # The objectives inspect ``model.forward``'s signature (position_ids, logits_to_keep);
        # DDP's forward is (*inputs, **kwargs), so expose the wrapped model's signature.
        inner_forward, ddp_forward = model.forward, ddp.forward

        @functools.wraps(inner_forward)
        def forward(*args, **kwargs):
            return ddp_forward(*args, **kwargs)

        ddp.forward = forward
        parallel.ddp = ddp
        return named
    return _fully_shard(model, named, dcfg, parallel)


@torch.no_grad()
def _broadcast_parameters(model: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights (MeZO's shared-z argument needs identical
    weights; a one-time cost, like DDP's own broadcast at construction)."""
    for p in model.parameters():
        dist.broadcast(p.data, src=0)
    for b in model.buffers():
        dist.broadcast(b, src=0)


def _fully_shard(model: torch.nn.Module, named: Named, dcfg: Any, parallel: Parallel) -> Named:
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if parallel.mixed_precision == "bf16" else MixedPrecisionPolicy())
    kwargs = dict(mp_policy=mp, reshard_after_forward=dcfg.fsdp_reshard_after_forward,
                  offload_policy=CPUOffloadPolicy() if dcfg.fsdp_cpu_offload else OffloadPolicy())
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    log.info("FSDP: %d %s units + the root, %d ranks", len(layers), "/".join(sorted(layer_classes)) or "layer",
             parallel.world_size)
    names = {n for n, _ in named}
    # fully_shard swaps every parameter for a DTensor shard under the same name.
    return [(n, p) for n, p in model.named_parameters() if n in names]
