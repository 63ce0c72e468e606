"""ZO-SGD-Sign (ZO-Bench, Zhang et al., ICML 2024, Appendix A): sign descent on the SPSA estimate.

With the MeZO estimate g_hat = (1/n) sum_k g_k z_k, g_k = (L(theta + eps z_k) - L(theta - eps z_k)) / (2 eps)::

    theta <- theta - lr * (sign(g_hat) + weight_decay * theta)

Each coordinate moves by exactly lr, whatever the scale of the losses. Same forward passes and
memory as MeZO (two per direction, no state); the estimate is biased (it is the sign of an
unbiased estimate), so its LR is the size of a per-coordinate step, not MeZO's.
"""

from __future__ import annotations

from typing import Sequence

import torch

from zoft.optim.estimators.chunks import map_chunks
from zoft.optim.mezo import MeZO


class ZOSign(MeZO):
    """MeZO's two-sided estimate, applied as a sign step (``optimizer=zo-sgd-sign``).

    Takes the arguments of :class:`zoft.optim.MeZO`. Replayable from its trajectory (the update
    is a function of the recorded g_k and the seeds).
    """


    def _descend(self, grads: Sequence[float]) -> None:
        n, step = len(grads), self.step_count
        params = self._params()
        meta = {i: (group["lr"], group["weight_decay"], self.weights.owed_by(p)) for group, i, p in params}

        def fn(index, c, draw, theta):
            lr, wd, owed = meta[index]
            for t in owed:  # the tensor still sits at theta - eps z_last
                theta.add_(draw(t.step, t.k), alpha=t.alpha)
            acc = torch.zeros(theta.shape, dtype=torch.float32, device=theta.device)  # g_hat chunk
            for k, g in enumerate(grads):
                if g != 0.0:
                    acc.add_(draw(step, k), alpha=g / n)
            if lr * wd != 0.0:
                theta.mul_(1.0 - lr * wd)
            theta.add_(torch.sign(acc).to(theta.dtype), alpha=-lr)

        map_chunks(self.sampler, [(i, [p]) for _, i, p in params], fn)
        self.weights.settle()
