"""Forward gradient (Baydin et al., 2022, "Gradients without Backpropagation"; ZO-Bench's
FO-SGD-style "Forward-Grad" baseline): the exact directional derivative along a seeded direction,
computed by forward-mode automatic differentiation (a jvp) instead of a difference
of two losses::

    g_k   = <grad L(theta), z_k>            (one jvp: the loss and its derivative along z_k)
    theta <- theta - lr * ((1/n) sum_k g_k z_k + weight_decay * theta)

It is MeZO's update with the finite difference replaced by its eps -> 0 limit, so it is an
unbiased gradient estimate (E[z z^T] = I) with no eps to tune. The weights never move during the
probe: the jvp runs the model on dual tensors theta + z_k dt substituted for the trainable
tensors (``torch.func.functional_call``), so the restore is trivially exact in every precision.

Costs, unlike the finite-difference estimators: the tangent z_k is materialised for every
trainable tensor (parameter-sized, float32 cast to the weights' dtype, freed after the jvp), and
every activation is carried with its tangent, so one jvp costs about three forwards of compute.
It counts as two forward passes per direction (the primal and the tangent stream). The closure
must return the loss as a tensor computed from the model (``zoft``'s loop does so for this
optimizer); a loss that is not differentiable in the weights (``task.objective=metric``) has a
zero derivative and is refused by the config.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.autograd.forward_ad as fwAD
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoft.optim.mezo import MeZO, _f32
from zoft.optim.spec import Capabilities, Setting


class _RunClosure(torch.nn.Module):
    """A module whose forward is the closure, holding ``model`` as a submodule so that
    ``functional_call`` substitutes the dual tensors for the model's parameters while it runs."""

    def __init__(self, model: torch.nn.Module, closure: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.closure = closure

    def forward(self) -> torch.Tensor:
        return self.closure()


class ForwardGradient(MeZO):
    """Forward-gradient descent (``optimizer=forward-grad``): directional derivatives by
    forward-mode AD along the seeded directions, applied as MeZO's update.

    Takes the arguments of :class:`zoft.optim.MeZO`; ``model`` is required (the jvp calls it
    with substituted parameters) and ``eps`` is unused. Replayable from its trajectory (the
    update is a function of the recorded g_k and the seeds).
    """

    # One jvp per direction, counted as two forward passes (primal and tangent); the closure's
    # loss must stay a tensor (the jvp differentiates it).
    capabilities = Capabilities(summary="forward gradient: the exact directional derivative along the seeded "
                                "direction by forward-mode AD (a jvp; no eps)", zeroth_order=True, forward_mode=True,
                                accumulates=False, needs_loss_tensor=True, forward_passes="2n",
                                parameter_state="the tangent (1x the trainable weights, during the step)")

    def __init__(self, params: Iterable, model: Optional[torch.nn.Module] = None, **kwargs) -> None:
        if model is None:
            raise ValueError("ForwardGradient needs the model: ForwardGradient(params, model=model, ...) "
                             "(the jvp runs it with the tangents attached to its parameters)")
        super().__init__(params, model=model, **kwargs)
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        missing = [f"#{i} {tuple(p.shape)}" for _, i, p in self._params() if id(p) not in names]
        if missing:
            raise ValueError(f"ForwardGradient: {len(missing)} optimized tensor(s) ({', '.join(missing[:5])}) are not "
                             "parameters of the model given; pass the model that holds them")
        self.model = model
        # "model." + the parameter's name inside the model: the key functional_call substitutes.
        self._names = [f"model.{names[id(p)]}" for _, _, p in self._params()]

    def describe(self) -> dict:
        return {**super().describe(), "rule": "forward-grad"}

    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        """(L(theta), [g_k]) with g_k = <grad L, z_k> from one jvp per direction; ``None``
        (replay) evaluates nothing (the weights do not move during the probe)."""
        if closure is None:
            return float("nan"), []
        step, wrapper = self.step_count, _RunClosure(self.model, closure)
        loss, grads = float("nan"), []
        for k in range(self.n_directions):
            value, derivative = self._jvp(wrapper, step, k)
            if not (torch.isfinite(value) and torch.isfinite(derivative)):
                raise FloatingPointError(f"ForwardGradient step {step}: non-finite loss or derivative "
                                         f"(L={float(value)}, g={float(derivative)}); lower optimizer.lr")
            grads.append(_f32(float(derivative)))
            if k == 0:
                loss = float(value)
        return loss, grads

    def _jvp(self, wrapper: _RunClosure, step: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(L(theta), <grad L, z_k>): the model runs once on dual tensors theta + z_k * dt.

        The dual-number API (``torch.autograd.forward_ad``, what ``torch.func.jvp`` is built on)
        keeps plain tensors, which memory trackers and every Hugging Face model accept
        (functorch's wrappers trip some: pytorch #104933)."""
        with fwAD.dual_level():
            duals = {name: fwAD.make_dual(p.detach(), self.sampler.direction(p.shape, step, k, i, p.device).to(p.dtype))
                     for name, (_, i, p) in zip(self._names, self._params())}
            # The fused attention kernels have no forward-mode derivative; the math backend has.
            with sdpa_kernel(SDPBackend.MATH):
                loss = torch.func.functional_call(wrapper, duals, ())
            if not isinstance(loss, torch.Tensor):
                raise TypeError("ForwardGradient's closure must return the loss as a tensor computed from the "
                                f"model (got {type(loss).__name__}); forward-mode AD differentiates it")
            value, derivative = fwAD.unpack_dual(loss)
            if derivative is None:
                raise RuntimeError(f"ForwardGradient step {step}: the loss carries no derivative along the trainable "
                                   "weights: they are not read through the model's parameters while the closure "
                                   "runs (a tensor captured elsewhere, e.g. a soft prompt hook), or the closure runs "
                                   "under torch.inference_mode; use a zeroth-order optimizer instead")
            return value.detach(), derivative.detach()
