"""ZO-SGD-MMT (ZO-Bench, Zhang et al., ICML 2024, Appendix A): SGD with heavy-ball momentum on the
SPSA estimate, with the momentum buffer as the only state::

    m     <- beta * m + g_hat,      g_hat = (1/n) sum_k g_k z_k
    theta <- theta - lr * (m + weight_decay * theta)

(torch.optim.SGD's momentum convention, dampening 0). ``optimizer=mezo-sgd`` computes the same
update through ``.grad`` and torch's SGD, i.e. two parameter-sized tensors (gradient and buffer);
this one keeps one: the buffer ``m`` (state ``"momentum_buffer"``), updated in place from the
seeds, so memory is weights + one parameter-sized buffer (2x the weights of inference in fp32).
Replayable: ``m`` is a function of the recorded g_k and the seeds.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from zoft.optim.directions import Job, Term
from zoft.optim.mezo import MeZO
from zoft.optim.spec import Capabilities, Setting


class ZOMomentum(MeZO):
    """Zeroth-order heavy-ball SGD (``optimizer=zo-sgd-mmt``); ``momentum`` is beta."""

    capabilities = Capabilities(summary="ZO-SGD-MMT (ZO-Bench): heavy-ball momentum on the MeZO estimate, buffer "
                                "updated from the seeds", zeroth_order=True, batches_probes=True, forward_passes="2n",
                                parameter_state="momentum buffer")
    settings = {"momentum": Setting("float", "[0,1)", "the momentum")}

    def __init__(self, params: Iterable, momentum: float = 0.9, **kwargs) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"ZO-SGD-MMT momentum={momentum} must be in [0, 1)")
        super().__init__(params, **kwargs)
        self.momentum = float(momentum)

    def describe(self) -> dict:
        return {**super().describe(), "momentum": self.momentum}

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return state["momentum_buffer"]

    def _descend(self, grads: Sequence[float]) -> None:
        n, step = len(grads), self.step_count
        terms = tuple(Term(step, k, g / n) for k, g in enumerate(grads))
        # m <- beta m + (1/n) sum g_k z_k: one seeded pass over the buffers.
        self.sampler.apply([Job(self._buffer(p), None, i, self.momentum, terms) for _, i, p in self._params()])
        self.weights.restore()  # back to theta before the update
        for group, _, p in self._params():
            lr, wd = group["lr"], group["weight_decay"]
            if lr * wd != 0.0:
                p.detach().mul_(1.0 - lr * wd)
            p.detach().add_(self.state[p]["momentum_buffer"], alpha=-lr)
