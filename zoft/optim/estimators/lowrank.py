"""Low-rank perturbations of weight matrices: LOZO and SubZero.

Both perturb every matrix W (a tensor with 2+ dimensions, viewed as m x n with m = shape[0])
along a rank-r direction D = A B^T instead of a dense z, and keep MeZO's two-point estimate and
update (other tensors, biases and norms, get MeZO's dense Gaussian z)::

    g = (L(theta + eps D) - L(theta - eps D)) / (2 eps),   theta <- theta - lr * (g * D + weight_decay * theta)

* LOZO (Chen et al., ICLR 2025, "Enhancing Zeroth-order Fine-tuning for Language Models with
  Low-rank Structures"; optsuite/LOZO ``LOZOtrainer.py``): D = U V^T, U in R^{m x r} Gaussian,
  redrawn every step; V in R^{n x r} Gaussian, redrawn every ``interval`` (nu) steps (lazy).
  As in the authors' code the step is not divided by r (their issue #1: the effective LR is r x).
* SubZero (Yu et al., ICCV 2025, "Zeroth-Order Fine-Tuning of LLMs in Random Subspaces";
  zimingyy/SubZero): D = sqrt(m n / r^2) * U Z V^T with U in R^{m x r}, V in R^{n x r}
  column-orthonormal (QR of Gaussians), redrawn every ``interval`` steps, and Z in R^{r x r}
  Gaussian, redrawn every step; r = min(rank, m, n).

D is never stored: it is rebuilt from seeded factors (r (m + n) numbers per matrix) block of rows
by block of rows, so the extra memory is the factors plus one chunk. Replayable (a function of the
seeds and the recorded g).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch

from zoft.optim.directions import CHUNK, DirectionSampler, Job, flat_view, mix
from zoft.optim.estimators.chunks import TransformedSampler
from zoft.optim.mezo import MeZO
from zoft.optim.spec import Capabilities, Setting

_TAG_U, _TAG_V, _TAG_Z = 0x4C4F5A4F, 0x4C4F5A50, 0x5355425A  # separate seed streams per factor
KINDS = ("lozo", "subzero")


def matrix_shape(p: torch.Tensor) -> Optional[tuple[int, int]]:
    """(m, n) of a tensor perturbed in low rank (2+ dimensions), else None."""
    if p.dim() < 2:
        return None
    return int(p.shape[0]), p.numel() // int(p.shape[0])


class LowRankSampler(TransformedSampler):
    """The direction engine of :class:`LowRankZO`: ``apply`` jobs on matrices use D = A B^T."""

    def __init__(self, base: DirectionSampler, shapes: dict[int, tuple[int, int]], kind: str, rank: int,
                 interval: int) -> None:
        super().__init__(base)
        self.shapes, self.kind_of_rank, self.rank, self.interval = shapes, kind, rank, interval
        self._bases: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _gaussian(self, rows: int, cols: int, device: torch.device, *key: int) -> torch.Tensor:
        gen = torch.Generator(device=device)
        gen.manual_seed(mix(self.seed, *key))
        return torch.randn(rows, cols, generator=gen, device=device, dtype=torch.float32)

    def _window(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors that change every ``interval`` steps (cached for the current window)."""
        raise NotImplementedError

    def factors(self, index: int, step: int, k: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B), float32, with D = A @ B.T the direction of matrix ``index`` (m x n)."""
        device = torch.device(device)
        m, n = self.shapes[index]
        window = step // self.interval
        key = (index, window, device)
        if key not in self._bases:
            self._bases = {k2: v for k2, v in self._bases.items() if k2[1] == window}  # drop old windows
            self._bases[key] = self._make_window(index, window, m, n, device)
        left, right = self._bases[key]
        if self.kind_of_rank == "lozo":
            return self._gaussian(m, self.rank, device, _TAG_U, step, k, index), right  # U fresh, V lazy
        r = left.shape[1]
        z = self._gaussian(r, r, device, _TAG_Z, step, k, index)
        return left @ z * math.sqrt(m * n / (r * r)), right  # sqrt(mn/r^2) U Z, V

    def _make_window(self, index: int, window: int, m: int, n: int, device: torch.device):
        if self.kind_of_rank == "lozo":
            return None, self._gaussian(n, self.rank, device, _TAG_V, window, index)
        r = min(self.rank, m, n)
        u, _ = torch.linalg.qr(self._gaussian(m, r, device, _TAG_U, window, index))
        v, _ = torch.linalg.qr(self._gaussian(n, r, device, _TAG_V, window, index))
        return u, v

    def apply(self, jobs: Sequence[Job]) -> None:
        """``dst = beta * (src or dst) + sum alpha D``; dense tensors go to the base sampler."""
        self.base.apply([j for j in jobs if j.index not in self.shapes])
        for dst, src, index, beta, terms in jobs:
            if index not in self.shapes:
                continue
            live = [t for t in terms if t.alpha != 0.0]
            if src is None and beta == 1.0 and not live:
                continue
            m, n = self.shapes[index]
            out = flat_view(dst).view(m, n)
            source = None if src is None else flat_view(src).view(m, n)
            factors = [(t.alpha, *self.factors(index, t.step, t.k, dst.device)) for t in live]
            rows = max(1, CHUNK // n)  # a block of rows of D: one chunk of scratch
            for a in range(0, m, rows):
                block = out[a:a + rows]
                if source is not None:
                    block.copy_(source[a:a + rows])
                if beta == 0.0:
                    block.zero_()
                elif beta != 1.0:
                    block.mul_(beta)
                for alpha, left, right in factors:
                    block.add_((left[a:a + rows] @ right.T).to(block.dtype), alpha=alpha)

    def direction(self, shape: Sequence[int], step: int, k: int, index: int, device="cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole direction of one tensor: D for matrices, z otherwise (tests/analysis)."""
        if index not in self.shapes:
            return self.base.direction(shape, step, k, index, device, dtype)
        left, right = self.factors(index, step, k, device)
        return (left @ right.T).reshape(tuple(shape)).to(dtype)


class LowRankZO(MeZO):
    """MeZO with rank-r matrix perturbations (``optimizer=lozo`` or ``optimizer=subzero``).

    Args (besides :class:`zoft.optim.MeZO`'s): kind: ``lozo`` or ``subzero``; rank: r;
    interval: steps between redraws of the lazy factors (LOZO's nu, SubZero's T0).
    """

    # The settings of both options (optimizer=lozo, optimizer=subzero), read by the config.
    settings = {
        "lowrank_rank": Setting("int", ">=1", "the rank r of the perturbation", arg="rank"),
        "lowrank_interval": Setting("int", ">=1", "steps between redraws of the factors (LOZO: V, nu; "
                                    "SubZero: U and V, T0)", arg="interval"),
        "direction": Setting("str", ("gaussian",), "the distribution of the factors (Gaussian)"),
    }

    def __init__(self, params: Iterable, kind: str = "lozo", rank: int = 2, interval: int = 50, **kwargs) -> None:
        if kind not in KINDS:
            raise ValueError(f"low-rank kind={kind!r}; valid: {', '.join(KINDS)}")
        if rank < 1 or interval < 1:
            raise ValueError(f"{kind}: rank={rank} and interval={interval} must be >= 1")
        if kwargs.get("direction", "gaussian") != "gaussian":
            raise ValueError(f"{kind} draws Gaussian factors (direction='gaussian')")
        super().__init__(params, **kwargs)
        self.kind, self.rank, self.interval = kind, int(rank), int(interval)
        shapes = {i: s for _, i, p in self._params() if (s := matrix_shape(p)) is not None}
        self.use_sampler(LowRankSampler(self.sampler, shapes, kind, self.rank, self.interval))

    def describe(self) -> dict:
        # "class": this engine's name for both options (the rule says which), as recorded before
        # LOZO and SubZero were classes of their own: their trajectories replay either way.
        return {**super().describe(), "class": "LowRankZO", "rule": self.kind, "rank": self.rank,
                "interval": self.interval}


class LOZO(LowRankZO):
    """``optimizer=lozo``: rank-r perturbations U V^T of each matrix, V redrawn every nu steps."""

    capabilities = Capabilities(summary="LOZO: rank-r perturbations U V^T of each matrix, V redrawn every nu steps",
                                zeroth_order=True, batches_probes=True, forward_passes="2n",
                                parameter_state="factors only (r (m + n) per matrix)")

    def __init__(self, params: Iterable, **kwargs) -> None:
        super().__init__(params, kind="lozo", **kwargs)


class SubZero(LowRankZO):
    """``optimizer=subzero``: perturbations U Z V^T in random orthonormal subspaces redrawn every T0 steps."""

    capabilities = Capabilities(summary="SubZero: perturbations U Z V^T in random orthonormal subspaces redrawn "
                                "every T0 steps", zeroth_order=True, batches_probes=True, forward_passes="2n",
                                parameter_state="factors only (r (m + n) per matrix)")

    def __init__(self, params: Iterable, **kwargs) -> None:
        super().__init__(params, kind="subzero", **kwargs)
