"""ZO-SGD-Sign (ZO-Bench, Zhang et al., ICML 2024, Appendix A): sign descent on the SPSA estimate.

With the MeZO estimate g_hat = (1/n) sum_k g_k z_k, g_k = (L(theta + eps z_k) - L(theta - eps z_k)) / (2 eps),
the paper's update (``sign_of="estimate"``, the default) is elementwise::

    theta <- theta - lr * (sign(g_hat) + weight_decay * theta)

Each coordinate moves by exactly lr, whatever the scale of the losses; the estimate is biased
(it is the sign of an unbiased estimate), so its LR is the size of a per-coordinate step, not
MeZO's.

ZO-Bench's released code (ZO-Bench/ZO-LLM, zo-bench/trainer.py, ``zo_sign_opt``) takes the sign
of the projected gradient instead and steps along z (``sign_of="projected_grad"``)::

    theta <- theta - lr * ((1/n) sum_k sign(g_k) z_k + weight_decay * theta)

i.e. MeZO with g_k replaced by sign(g_k): the step length follows |z|, not lr alone. (For n > 1
the code keeps only the last direction's term, which zoft does not copy: it averages, as MeZO.)
Both: the same forward passes and memory as MeZO (two per direction, no state), replayable
from the recorded g_k.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from zoft.optim.estimators.chunks import map_chunks
from zoft.optim.mezo import MeZO
from zoft.optim.spec import Capabilities, Setting


class ZOSign(MeZO):
    """MeZO's two-sided estimate, applied as a sign step (``optimizer=zo-sgd-sign``).

    Takes the arguments of :class:`zoft.optim.MeZO`, and ``sign_of``: ``estimate`` (the
    paper: sign of g_hat, elementwise) or ``projected_grad`` (ZO-Bench's code: sign(g_k) z_k).
    Replayable from its trajectory (the update is a function of the recorded g_k and the seeds).
    """

    capabilities = Capabilities(summary="ZO-SGD-Sign (ZO-Bench): sign step on the MeZO estimate "
                                "(sign_of=projected_grad: ZO-Bench's code, sign(g) z)", zeroth_order=True,
                                batches_probes=True, forward_passes="2n")
    settings = {"sign_of": Setting("str", ("estimate", "projected_grad"), "what the sign is taken of: "
                                   "estimate (sign(g_hat), the paper) or projected_grad (sign(g) z, ZO-Bench's code)")}

    def __init__(self, params: Iterable, sign_of: str = "estimate", **kwargs) -> None:
        valid = self.settings["sign_of"].valid
        if sign_of not in valid:
            raise ValueError(f"ZO-SGD-Sign sign_of={sign_of!r}; valid: {', '.join(valid)}")
        super().__init__(params, **kwargs)
        self.sign_of = sign_of

    def describe(self) -> dict:
        # The default leaves the header as before, so earlier trajectories still replay.
        extra = {"sign_of": self.sign_of} if self.sign_of != "estimate" else {}
        return {**super().describe(), **extra}

    def _descend(self, grads: Sequence[float]) -> None:
        if self.sign_of == "projected_grad":  # MeZO's pass with sign(g_k) for g_k
            self.weights.descend(self.step_count, [float((g > 0) - (g < 0)) for g in grads], divisor=len(grads))
            return
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
        self.weights.forget_owed_restore()
