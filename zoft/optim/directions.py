"""Seeded random directions, generated chunk by chunk and applied in place.

A direction z is never stored. Tensor ``index`` at ``step`` for direction ``k`` is cut into
fixed-size chunks (``chunk_size(device)`` elements, flattened order); chunk ``c`` is drawn from a private
generator seeded with ``mix(seed, step, k, index, c)``. So

* z is reproducible from (seed, step, k, tensor index) alone, whatever order tensors, chunks or
  threads are visited in, and the global RNG is never touched;
* the extra memory is one chunk-sized scratch buffer per worker thread, not a tensor;
* chunks are independent, so several threads can draw and apply them at once (a CPU Gaussian
  draw is single-threaded, and the draws dominate a MeZO step).

Every update has the form ``dst = beta * src + sum_j alpha_j * z_j`` over a chunk, with
``dst == src`` (in place) or ``dst`` a scratch copy (the exact "shadow" perturbation).
The arithmetic per chunk is fixed (float32 z, ``mul_`` then ``add_`` in term order), which is
what makes a trajectory replay bit-identical.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch

# The distributions of z this sampler draws (MeZO's ``direction`` setting declares the same two).
DIRECTIONS = ("gaussian", "rademacher")
CHUNK = 1 << 18  # CPU chunk: 1 MiB of float32, stays in cache while it is applied
ACCEL_CHUNK = 1 << 22  # GPU chunk (16 MiB of float32): fewer kernel launches, still tiny next to the weights


def chunk_size(device: torch.device) -> int:
    """Elements per chunk on ``device`` (part of the definition of z, like the seed)."""
    return CHUNK if device.type == "cpu" else ACCEL_CHUNK
_MASK64 = (1 << 64) - 1
_SIGN = -(1 << 31)  # int32 sign bit
_ONE = 0x3F800000  # float32 1.0


def mix(*values: int) -> int:
    """SplitMix64-style hash of integers to a 63-bit seed (stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) & _MASK64
        h = (h * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 29
    return h & ((1 << 63) - 1)


@dataclass(frozen=True)
class Term:
    """``alpha * z`` for direction ``k`` of step ``step``."""

    step: int
    k: int
    alpha: float


class Job(NamedTuple):
    """One tensor's pass: ``dst = beta * (src or dst) + sum_j alpha_j z_j`` over ``terms``, with
    z the directions of tensor ``index`` (``src`` None: in place)."""

    dst: torch.Tensor
    src: Optional[torch.Tensor]
    index: int
    beta: float
    terms: Sequence[Term]


class _Scratch(threading.local):
    """Per-thread reusable buffers (one chunk each) and generators, keyed by device."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.generators: dict[torch.device, torch.Generator] = {}

    def buffer(self, device: torch.device, dtype: torch.dtype, n: int) -> torch.Tensor:
        key = (device, dtype)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = self.buffers[key] = torch.empty(max(n, CHUNK), device=device, dtype=dtype)
        return buf[:n]

    def generator(self, device: torch.device) -> torch.Generator:
        gen = self.generators.get(device)
        if gen is None:
            gen = self.generators[device] = torch.Generator(device=device)
        return gen


class DirectionSampler:
    """Draws seeded directions chunk by chunk and applies ``beta*src + sum alpha z``.

    Args:
        kind: ``gaussian`` (N(0, 1) entries, the paper's) or ``rademacher`` (+-1 entries).
        seed: the perturbation stream's seed.
        threads: worker threads for CPU tensors (0: ``torch.get_num_threads()``).
    """

    def __init__(self, kind: str = "gaussian", seed: int = 0, threads: int = 0) -> None:
        if kind not in DIRECTIONS:
            raise ValueError(f"direction={kind!r} is not valid; choose one of {', '.join(DIRECTIONS)}")
        self.kind = kind
        self.seed = int(seed)
        self.threads = threads or max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
        self._local = _Scratch()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._shifts: dict[torch.device, torch.Tensor] = {}

    # -- drawing ---------------------------------------------------------------------------
    def _draw(self, n: int, step: int, k: int, index: int, chunk: int, device: torch.device) -> torch.Tensor:
        """z for one chunk as float32 (a view of this thread's scratch buffer)."""
        gen = self._local.generator(device)
        gen.manual_seed(mix(self.seed, step, k, index, chunk))
        if self.kind == "gaussian":
            out = self._local.buffer(device, torch.float32, n)
            return torch.randn(n, generator=gen, device=device, dtype=torch.float32, out=out)
        # Rademacher: 32 signs per random 32-bit word. The low halves of int64 draws are uniform
        # 32-bit words (int64 random_ yields 63 random bits); each sign bit is shifted into the
        # float32 sign position and OR-ed with the bits of 1.0, giving exactly +-1.0.
        words = (n + 31) // 32
        raw = self._local.buffer(device, torch.int64, words)
        raw.random_(generator=gen)
        low = raw.view(torch.int32)[0::2]  # little-endian low words, shape [words]
        bits = self._local.buffer(device, torch.int32, words * 32)
        shifts = self._shifts.get(device)
        if shifts is None:
            shifts = self._shifts[device] = torch.arange(32, dtype=torch.int32, device=device)
        torch.bitwise_left_shift(low.unsqueeze(1), shifts, out=bits.view(words, 32))
        bits.bitwise_and_(_SIGN).bitwise_or_(_ONE)
        return bits[:n].view(torch.float32)

    def direction(self, shape: Sequence[int], step: int, k: int, index: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole direction z of one tensor as a new tensor (for tests and analysis)."""
        numel = 1
        for s in shape:
            numel *= int(s)
        device = torch.device(device)
        out = torch.empty(numel, dtype=dtype, device=device)
        size = chunk_size(device)
        for c, start in enumerate(range(0, numel, size)):
            n = min(size, numel - start)
            out[start:start + n].copy_(self._draw(n, step, k, index, c, device))
        return out.view(tuple(shape))

    # -- applying --------------------------------------------------------------------------
    def _apply_chunk(self, dst: torch.Tensor, src: Optional[torch.Tensor], index: int, c: int,
                     beta: float, terms: Sequence[Term]) -> None:
        if src is not None:
            dst.copy_(src)
        if beta == 0.0:
            dst.zero_()
        elif beta != 1.0:
            dst.mul_(beta)
        for t in terms:
            if t.alpha != 0.0:
                dst.add_(self._draw(dst.numel(), t.step, t.k, index, c, dst.device), alpha=t.alpha)

    def apply(self, jobs: Sequence[Job]) -> None:
        """Run ``dst = beta * (src or dst) + sum alpha z`` for each job ``(dst, src, index, beta, terms)``.

        ``dst``/``src`` are tensors of equal size (``src`` None: in place). Chunks of CPU tensors
        are spread over the worker threads; chunk results do not depend on the thread.
        """
        work = []
        for dst, src, index, beta, terms in jobs:
            if beta == 1.0 and all(t.alpha == 0.0 for t in terms) and src is None:
                continue
            for c, views in enumerate(chunked([dst] if src is None else [dst, src])):
                work.append((views[0], views[1] if src is not None else None, index, c, beta, terms))
        on_cpu = all(w[0].device.type == "cpu" for w in work)
        self.run_chunks(work, lambda w: self._apply_chunk(*w), on_cpu)

    def run_chunks(self, work: Sequence, fn, on_cpu: bool) -> None:
        """``fn(item)`` for every item of ``work`` (one chunk each): on the worker threads when
        the chunks are on the CPU, else in order. Results do not depend on the thread."""
        if not work:
            return
        if len(work) > 1 and on_cpu:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="zoft-z")
            # Each worker takes every ``threads``-th chunk; torch kernels release the GIL. Even
            # with one worker this runs off the main thread: measured on a loaded 2-core machine,
            # chunk kernels issued from the main thread (inside its OpenMP team) were 5-30x slower.
            list(self._pool.map(lambda i: [fn(w) for w in work[i::self.threads]], range(self.threads)))
        else:
            for w in work:
                fn(w)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self):  # thread pools and thread-locals are not picklable
        return {"kind": self.kind, "seed": self.seed, "threads": self.threads}

    def __setstate__(self, state):
        self.__init__(state["kind"], state["seed"], state["threads"])


def flat_view(t: torch.Tensor) -> torch.Tensor:
    """A flat view sharing storage (detached: updates must not be recorded by autograd)."""
    t = t.detach()
    if not t.is_contiguous():
        raise ValueError(f"zeroth-order optimizers need contiguous parameters; got a tensor of shape "
                         f"{tuple(t.shape)} with strides {t.stride()} (call .contiguous() on it before training)")
    return t.view(-1)


def chunked(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors of one parameter's size cut at the chunk boundaries of its device: per chunk c,
    the flat view of chunk c of each tensor (chunk c is drawn from the seed of chunk c)."""
    flats = [flat_view(t) for t in tensors]
    numel, size = flats[0].numel(), chunk_size(flats[0].device)
    return [[f[start:min(start + size, numel)] for f in flats] for start in range(0, numel, size)]
