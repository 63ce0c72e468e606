"""Chunk passes for estimators whose update is not ``beta*theta + sum alpha z``.

:class:`zoft.optim.directions.DirectionSampler` applies linear combinations of seeded
directions. Some estimators need a per-element function of z (the sign of the estimate,
a Hessian-scaled direction, a magnitude mask). :func:`map_chunks` runs such a function over the
same chunks (same sizes, same seeds) that the sampler uses, on its worker threads, so z is
bit-identical to MeZO's and nothing parameter-sized is allocated.

:class:`TransformedSampler` is a drop-in for a ``DirectionSampler`` (same ``apply`` job format)
whose direction for tensor ``index`` is ``transform(z)``; MeZO's in-place passes and its exact
shadow perturbation (:mod:`zoft.optim.shadow`) then perturb along the transformed direction
without any change to them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from zoft.optim.directions import DirectionSampler, Job, chunked

# fn(index, chunk, draw, *views): ``draw(step, k)`` returns the float32 z of this chunk (a view of
# the thread's scratch buffer, valid until the next draw in that thread); views: the chunk of each
# tensor of the job, flat.
ChunkFn = Callable[..., None]


def map_chunks(sampler: DirectionSampler, jobs: Sequence[tuple[int, Sequence[torch.Tensor]]], fn: ChunkFn) -> None:
    """Call ``fn(index, c, draw, *chunks)`` for every chunk ``c`` of every job ``(index, tensors)``.

    The tensors of one job have the parameter's size (e.g. the parameter and its Hessian
    state); they are cut at the sampler's chunk boundaries, so ``draw`` yields exactly the z that
    MeZO would use for that chunk. CPU chunks run on the sampler's worker threads.
    """
    work = [(index, c, views) for index, tensors in jobs for c, views in enumerate(chunked(tensors))]

    def run(item) -> None:
        index, c, views = item
        device, n = views[0].device, views[0].numel()

        def draw(step: int, k: int) -> torch.Tensor:
            return sampler._draw(n, step, k, index, c, device)
        fn(index, c, draw, *views)

    sampler.run_chunks(work, run, on_cpu=all(views[0].device.type == "cpu" for _, _, views in work))


class TransformedSampler:
    """A ``DirectionSampler`` whose direction of tensor ``index`` is ``transform(index, c, z, x)``.

    ``x`` is the chunk of the tensor being perturbed *before* this pass (the source weights), so a
    transform may depend on the current weights (Sparse MeZO's mask) or on per-tensor state looked
    up by ``index`` and chunk (HiZOO's diagonal Hessian). Subclasses implement :meth:`transform`.
    """

    uses_weights = False  # transform reads x (then each chunk's weights are copied before the pass)

    def __init__(self, base: DirectionSampler) -> None:
        self.base = base

    # The attributes MeZO reads or sets on its sampler.
    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def seed(self) -> int:
        return self.base.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.base.seed = int(value)

    @property
    def threads(self) -> int:
        return self.base.threads

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, jobs: Sequence[Job]) -> None:
        """``dst = beta * (src or dst) + sum alpha * transform(z)``, chunk by chunk (the
        :meth:`DirectionSampler.apply` contract)."""
        live = [(dst, src, index, beta, tuple(terms)) for dst, src, index, beta, terms in jobs
                if not (src is None and beta == 1.0 and all(t.alpha == 0.0 for t in terms))]
        meta = {index: (beta, terms) for _, _, index, beta, terms in live}  # one job per tensor

        def fn(index, c, draw, dst, *src):
            beta, terms = meta[index]
            if src:
                dst.copy_(src[0])
            # the weights before the pass (a chunk-sized copy, only for transforms that read them)
            x = dst.clone() if self.uses_weights and any(t.alpha != 0.0 for t in terms) else dst
            if beta == 0.0:
                dst.zero_()
            elif beta != 1.0:
                dst.mul_(beta)
            for t in terms:
                if t.alpha != 0.0:
                    dst.add_(self.transform(index, c, draw(t.step, t.k), x), alpha=t.alpha)

        map_chunks(self.base, [(index, [dst] if src is None else [dst, src]) for dst, src, index, _, _ in live], fn)

    def direction(self, shape: Sequence[int], step: int, k: int, index: int, device="cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The raw seeded z of one tensor (before the transform; for tests and analysis)."""
        return self.base.direction(shape, step, k, index, device, dtype)

    def close(self) -> None:
        self.base.close()
