"""HiZOO-L: HiZOO with a rank-1 factored diagonal Hessian (low memory).

The HiZOO paper (Zhao et al., ICLR 2025) proposes HiZOO-L, "a low-rank version" of its diagonal
Hessian that cuts the Hessian's memory to about 10% of MeZO's; the released code
(Yanjun-Zhao/HiZOO) has no HiZOO-L. zoft's reading, stated here because it could not be checked
against the authors': every weight matrix (a tensor with 2+ dimensions, viewed as
(shape[0], numel / shape[0]) = m x n) keeps H as Adafactor's rank-1 factorisation of a
non-negative matrix, a row vector R (m) and a column vector C (n)::

    H_hat = R C^T / sum(R)                                       (m + n floats instead of m n)

and per step applies HiZOO's current rule (:mod:`zoft.optim.estimators.hizoo`) to the factored
H, with HiZOO's scalars g and h::

    L+- = L(theta +- eps * z / sqrt(H_hat))
    T      = (1 - alpha) * H_hat + alpha * h * H_hat * z^2          (HiZOO's EMA, elementwise)
    R, C   = row sums of T, column sums of T                        (the rank-1 projection)
    theta <- theta - lr * (g * z / sqrt(H_hat_new) + weight_decay * theta)

1-D tensors (biases, norms) keep HiZOO's full diagonal (they are small). The projection keeps
the row and column sums of T, so the total sum(H_hat) follows HiZOO's EMA exactly. (Until zoft
followed the authors' current code, this module applied their first release's Sigma rule to the
factors; see hizoo.py.)

Memory: the factors (m + n floats per matrix); the update runs chunk by chunk (two passes: the
restore and the row and column sums of T, then the step with the new H_hat), so its
temporaries are chunk-sized plus one column-sum vector (n floats) per chunk. Three
forward passes per step, replayable (g and h recorded), resume exact (R, C in ``state_dict``,
float32).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from zoft.optim.directions import chunk_size
from zoft.optim.estimators.chunks import TransformedSampler, map_chunks
from zoft.optim.estimators.hizoo import HiZOO
from zoft.optim.spec import Capabilities


def _matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    return p.shape[0], p.numel() // p.shape[0]


def hessian_chunk(row: torch.Tensor, col: torch.Tensor, start: int, count: int) -> tuple[torch.Tensor, ...]:
    """H_hat at flat positions [start, start + count) of the m x n view, (R_i C_j) / sum(R),
    with the row and column index of each position."""
    flat = torch.arange(start, start + count, device=row.device)
    rows, cols = flat // col.numel(), flat % col.numel()
    return (row[rows] * col[cols]) / row.sum(), rows, cols


class _FactoredScaled(TransformedSampler):
    """Direction z / sqrt(H_hat): matrices from their factors, 1-D tensors from their diagonal."""

    def __init__(self, base, factors_of: Callable[[int], tuple], diagonal_of: Callable[[int], torch.Tensor]) -> None:
        super().__init__(base)
        self.factors_of = factors_of
        self.diagonal_of = diagonal_of

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        start = c * chunk_size(z.device)
        factors = self.factors_of(index)
        if factors is None:
            hessian = self.diagonal_of(index).view(-1)[start:start + z.numel()]
        else:
            hessian = hessian_chunk(*factors, start, z.numel())[0]
        return (z / hessian.sqrt()).to(x.dtype)


class HiZOOLowRank(HiZOO):
    """HiZOO with rank-1 factored Hessians of the weight matrices (``optimizer=hizoo-l``).

    Takes :class:`HiZOO`'s arguments."""

    capabilities = Capabilities(summary="HiZOO-L: HiZOO with rank-1 factored Hessians of the weight matrices "
                                "(3 forward passes)", zeroth_order=True, accumulates=False, forward_passes="3",
                                parameter_state="factors only (m + n per matrix)")

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.use_sampler(_FactoredScaled(self.sampler.base, lambda i: self.factors(self._by_index[i]),
                                         lambda i: self.hessian(self._by_index[i])))

    def describe(self) -> dict:
        return {**super().describe(), "rule": "hizoo-l-2025"}

    def factors(self, p: torch.Tensor):
        """(R, C) of a matrix ``p`` (float32; R = n, C = m at first, i.e. H_hat = 1), or
        None for a 1-D tensor (its full diagonal is :meth:`hessian`)."""
        if p.dim() < 2:
            return None
        state = self.state[p]
        if "hessian_row" not in state:
            m, n = _matrix_shape(p)
            state["hessian_row"] = torch.full((m,), float(n), dtype=torch.float32, device=p.device)
            state["hessian_col"] = torch.full((n,), float(m), dtype=torch.float32, device=p.device)
        return state["hessian_row"], state["hessian_col"]

    def _descend(self, scalars: Sequence[float]) -> None:
        """1-D tensors: HiZOO's chunked pass. Matrices, chunk by chunk: restore and the row and
        column sums of the EMA target T, then the update with the new H_hat."""
        params = self._params()
        self._diagonal_pass(scalars, [entry for entry in params if entry[2].dim() < 2])
        matrices = [(group, i, p) for group, i, p in params if p.dim() >= 2]
        if matrices:
            self._matrix_passes(scalars, matrices)
        self.weights.forget_owed_restore()

    def _matrix_passes(self, scalars: Sequence[float], matrices: Sequence) -> None:
        g, h = scalars
        step, alpha = self.step_count, self.hessian_smooth
        owed = {i: self.weights.owed_by(p) for _, i, p in matrices}
        factors = {i: self.factors(p) for _, i, p in matrices}
        partial: dict[tuple[int, int], tuple] = {}  # (tensor, chunk) -> its share of the new R and C

        def restore_and_sum(index, c, draw, theta):
            z = draw(step, 0)
            row, col = factors[index]
            hessian, rows, cols = hessian_chunk(row, col, c * chunk_size(z.device), z.numel())
            for t in owed[index]:  # undo theta - eps z / sqrt(H_hat) with the H_hat that displaced it
                theta.add_((z / hessian.sqrt()).to(theta.dtype), alpha=t.alpha)
            if alpha != 0.0:
                target = (1.0 - alpha) * hessian + (alpha * h) * (hessian * z * z)
                first = int(rows[0])  # the chunk spans rows first..rows[-1]
                row_sums = torch.zeros(int(rows[-1]) - first + 1, device=z.device).index_add_(0, rows - first, target)
                col_sums = torch.zeros(col.numel(), device=z.device).index_add_(0, cols, target)
                partial[(index, c)] = (first, row_sums, col_sums)

        map_chunks(self.sampler.base, [(i, [p]) for _, i, p in matrices], restore_and_sum)
        if alpha != 0.0:
            for _, i, _ in matrices:  # chunk order: the sums are the same whatever thread ran a chunk
                row, col = factors[i]
                row.zero_()
                col.zero_()
                for (index, c) in sorted(k for k in partial if k[0] == i):
                    first, rows_part, cols_part = partial[(index, c)]
                    row[first:first + rows_part.numel()] += rows_part
                    col += cols_part
        meta = {i: (group["lr"], group["weight_decay"]) for group, i, _ in matrices}

        def update(index, c, draw, theta):
            lr, wd = meta[index]
            z = draw(step, 0)
            hessian = hessian_chunk(*factors[index], c * chunk_size(z.device), z.numel())[0]
            if lr * wd != 0.0:
                theta.mul_(1.0 - lr * wd)
            theta.add_((z / hessian.sqrt()).to(theta.dtype), alpha=-lr * g)

        map_chunks(self.sampler.base, [(i, [p]) for _, i, p in matrices], update)

