"""Training rows sharded over torch.distributed ranks and gathered back (the original's medium_models/src/kernel_trainer.py, multi-GPU).

The original's SequentialDistributedSampler pads the outer set to a multiple of the world size,
so its gathered kernels can hold duplicated rows. Here shards are contiguous and never padded,
so the gathered kernel has exactly N_train rows in order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(local: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every rank's ``local`` along ``dim`` in rank order (sizes may differ).

    Variable-size all-gather: pad each shard to the largest along ``dim``, all_gather, then cut
    each back to its true size. Returns ``local`` itself when not distributed.
    """
    rank, world = rank_and_world()
    if world == 1:
        return local
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    size = torch.tensor([local.shape[dim]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    biggest = max(sizes)
    pad_shape = list(local.shape)
    pad_shape[dim] = biggest - local.shape[dim]
    padded = torch.cat([local, local.new_zeros(pad_shape)], dim=dim).to(device).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p.narrow(dim, 0, s).to(local.device) for p, s in zip(parts, sizes)], dim=dim)
