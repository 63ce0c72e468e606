"""Where the weights stand during a zeroth-order step, and the passes that move them.

A step evaluates the loss at displaced weights ``theta + alpha z_k`` and then updates theta.
:class:`Displacement` does the moving for every estimator:

* in-place tensors (fp32/fp64 by default) are moved by a seeded pass ``theta += alpha z_k``;
* shadowed tensors (fp16/bf16 by default) never move: the modules see ``theta + alpha z_k``
  through forward hooks (:mod:`zoft.optim.shadow`), so their restore is exact.

The restore of an in-place displacement is *owed*, not done: leaving :meth:`Displacement.at`
records ``-alpha z_k`` and the next pass over the weights adds it first (the next displacement,
or the update, which folds it into its coefficients). Per chunk the arithmetic is the same as
separate passes (``add_`` in term order), with one pass over the weights fewer per step.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Optional, Sequence

import torch

from zoft.optim.directions import Job, Term
from zoft.optim.shadow import ShadowPerturbation

# (param group, global tensor index, parameter), in group order
IndexedParam = tuple[dict, int, torch.Tensor]


class Displacement:
    """The displacement of the weights from theta within one step.

    Args:
        params: returns every trainable tensor with its group and global index (called at each
            update: ``load_state_dict`` replaces the group dicts, which hold the LRs).
        sampler: draws and applies the seeded directions (a ``DirectionSampler`` or a
            transformed one, e.g. low-rank or masked).
        shadow: the hooks that displace the shadowed tensors (None: every tensor is in place).
        is_shadow: whether a tensor is shadowed.
    """

    def __init__(self, params: Callable[[], list[IndexedParam]], sampler, shadow: Optional[ShadowPerturbation],
                 is_shadow: Callable[[torch.Tensor], bool]) -> None:
        self.params = params
        self.sampler = sampler
        self.shadow = shadow
        self.inplace = [(i, p) for _, i, p in params() if not is_shadow(p)]
        self._inplace_ids = {id(p) for _, p in self.inplace}
        self.owed: list[Term] = []  # the restore the in-place tensors still need

    def use_sampler(self, sampler) -> None:
        """Draw directions from ``sampler`` from now on (an estimator's transformed directions)."""
        self.sampler = sampler
        if self.shadow is not None:
            self.shadow.sampler = sampler

    @contextmanager
    def at(self, step: int, k: int, alpha: float) -> Iterator[None]:
        """Inside, the model computes with ``theta + alpha z_k``; afterwards the restore is owed."""
        self.move([Term(step, k, alpha)])
        try:
            with self.shadow.perturbed(step, k, alpha) if self.shadow is not None else nullcontext():
                yield
        finally:
            self.owed = [Term(step, k, -alpha)]

    def move(self, terms: Sequence[Term]) -> None:
        """One pass over the in-place tensors adding the owed restore, then ``terms``.

        A term along the same direction as the owed one is merged with it (``-eps z`` owed,
        ``-eps z`` asked: one ``-2 eps z``), as Algorithm 1's ``theta - 2 eps z``.
        """
        merged = list(self.owed)
        for t in terms:
            if merged and (merged[-1].step, merged[-1].k) == (t.step, t.k):
                merged[-1] = Term(t.step, t.k, merged[-1].alpha + t.alpha)
            else:
                merged.append(t)
        self.owed = []
        if merged:
            self.sampler.apply([Job(p, None, i, 1.0, tuple(merged)) for i, p in self.inplace])

    def restore(self) -> None:
        """Pay the owed restore now (the weights are back at theta)."""
        self.move([])

    def owed_by(self, p: torch.Tensor) -> list[Term]:
        """The restore tensor ``p`` still needs (none for a shadowed tensor)."""
        return list(self.owed) if id(p) in self._inplace_ids else []

    def forget_owed_restore(self) -> None:
        """Forget the owed restore: the caller's pass has just folded it in."""
        self.owed = []

    def descend(self, step: int, coefficients: Sequence[float], divisor: int = 1,
                scale: Optional[Callable[[int], float]] = None) -> None:
        """The update with the owed restore folded in, one pass over every tensor::

            theta <- (1 - lr wd) theta - (lr s_i / divisor) sum_k c_k z_k

        (per group ``lr`` and ``weight_decay``; ``s_i = scale(i)`` per tensor, 1 by default). A
        tensor still at ``theta + a z_j`` gets ``(1 - lr wd) a`` subtracted from coefficient j,
        so it lands where the same update from theta would.
        """
        jobs = []
        for group, i, p in self.params():
            lr, wd = group["lr"], group["weight_decay"]
            beta = 1.0 - lr * wd
            s = 1.0 if scale is None else scale(i)
            alphas = [-lr * s * c / divisor for c in coefficients]
            for t in self.owed_by(p):
                alphas[t.k] += beta * t.alpha
            jobs.append(Job(p, None, i, beta, tuple(Term(step, k, a) for k, a in enumerate(alphas))))
        self.sampler.apply(jobs)
        self.forget_owed_restore()
