"""The one-point (residual-feedback) estimator of the MeZO paper's ablation (Malladi et al., 2023,
Appendix; Zhang et al. 2022, "A new one-point residual-feedback oracle for black-box
learning and control"): one forward pass per step, differenced against the previous step's::

    L_t = L(theta_t + eps z_t)
    g_t = (L_t - L_{t-1}) / eps          (g_0 = 0: the first step only measures)
    theta <- theta - lr * (g_t * z_t + weight_decay * theta)

Biased and of high variance (MeZO Table 11: needs ~2x the steps of SPSA at one forward per
step). The previous loss L_{t-1} is a scalar kept in the optimizer state (resume is exact);
replayable from the recorded g_t.
"""

from __future__ import annotations

import math
from typing import Callable, Optional


from zoft.optim.mezo import MeZO, _f32, _loss
from zoft.optim.spec import Capabilities, Setting


class OnePointZO(MeZO):
    """Residual-feedback one-point ZO-SGD (``optimizer=mezo-one-point``); one direction per step."""

    capabilities = Capabilities(summary="the MeZO paper's one-point (residual-feedback) estimator, one forward "
                                "pass per step", zeroth_order=True, accumulates=False, forward_passes="1")
    settings = {"n_directions": Setting("int", "[1,1]", "directions per step; the one-point estimator uses one")}

    def __init__(self, params, **kwargs) -> None:
        if kwargs.get("n_directions", 1) != 1:
            raise ValueError("the one-point estimator uses one direction per step (n_directions=1)")
        super().__init__(params, **kwargs)
        self.previous_loss: Optional[float] = None

    def describe(self) -> dict:
        return {**super().describe(), "rule": "one-point"}

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """L(theta + eps z) and g = (L_t - L_{t-1}) / eps (0 at the first step)."""
        step = self.step_count
        with self.weights.at(step, 0, +self.eps):
            loss = _loss(closure)
        if closure is None:
            return loss, []
        if not math.isfinite(loss):
            self.weights.restore()
            raise FloatingPointError(f"one-point ZO step {step}: non-finite loss {loss}")
        g = 0.0 if self.previous_loss is None else _f32((loss - self.previous_loss) / self.eps)
        self.previous_loss = loss
        return loss, [g]

    def _zo_state(self) -> dict:
        return {**super()._zo_state(), "previous_loss": self.previous_loss}

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        super()._load_zo_state(zo)
        if zo is not None:
            self.previous_loss = zo.get("previous_loss")
