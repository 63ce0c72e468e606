"""Kernel formulas over per-example Jacobians (torch.func), chunked and accumulated in float64.

Entry K[i, a, j, b] pairs training example i / logit a (outer, rows) with example j / logit b of
the evaluated set X (inner, columns):

* ``sgd``: <grad f_a(x_i), grad f_b(x_j)>, computed as the JVP of f on the inner batch along
  each outer gradient (the inner Jacobian is never materialised).
* ``signgd``: sum over parameter tensors of <sign grad f_a(x_i), sign grad f_b(x_j)>.
* ``asymmetric_signgd``: <sign grad f_a(x_i), grad f_b(x_j)>, stacked with the flipped kernel
  <grad f_a(x_i), sign grad f_b(x_j)> (roles of the two sets swapped, kept train-major), giving
  [2, N, C, M, C].

Per-example gradients come from ``jacrev`` of the batched f: examples do not interact in the
model (eval mode, attention masked per example), so row i of the batch Jacobian is the gradient of
example i alone.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

import torch
from torch.func import functional_call, jacrev, jvp, vmap

from zoft.config.choices import KERNEL_FORMULAS as FORMULAS
from zoft.errors import ZoftUserError
from zoft.distributed import shard_bounds
from zoft.kernel.distributed import gather_rows, rank_and_world
from zoft.kernel.function import PromptInputs

log = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]


class KernelConfigError(ZoftUserError, ValueError):
    """A kernel setting is invalid."""


def _chunks(n: int, size: int, start: int = 0) -> Iterator[tuple[int, int]]:
    for s in range(start, n, size):
        yield s, min(s + size, n)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module):
    """Forward-mode AD has no rule for fused SDPA kernels; use the eager attention meanwhile."""
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if setter is None or previous in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(previous)


def _contract(a: Params, b: Params, bo: int, bi: int) -> torch.Tensor:
    """sum_k <a[k][i, x], b[k][j, y]> in float64 -> (bo, C, bi, C); a/b values (B, C, *shape)."""
    total = None
    for name in a:
        left = a[name].reshape(a[name].shape[0] * a[name].shape[1], -1).double()
        right = b[name].reshape(b[name].shape[0] * b[name].shape[1], -1).double()
        part = left @ right.T
        total = part if total is None else total + part
    return total.reshape(bo, -1, bi, total.shape[1] // bi)


class KernelComputer:
    """Holds f, the kernel parameters and the fixed tensors; computes kernel blocks."""

    def __init__(self, fn: torch.nn.Module, params: Params, fixed: Params, device: torch.device) -> None:
        self.fn = fn
        self.params = {k: v.to(device) for k, v in params.items()}
        self.fixed = {k: v.to(device) for k, v in fixed.items()}
        self.device = device

    def _f(self, batch: PromptInputs) -> Callable[[Params], torch.Tensor]:
        ids = batch.input_ids.to(self.device)
        am = batch.attention_mask.to(self.device)
        mp = batch.mask_pos.to(self.device)
        tt = None if batch.token_type_ids is None else batch.token_type_ids.to(self.device)
        return lambda p: functional_call(self.fn, {**p, **self.fixed}, (ids, am, mp, tt))

    def jacobian(self, batch: PromptInputs) -> Params:
        """Per-example Jacobians: {name: (B, C, *param_shape)}."""
        return jacrev(self._f(batch))(self.params)

    def jvp_block(self, outer_jac: Params, batch: PromptInputs) -> torch.Tensor:
        """<outer gradient (i, a), grad f_b(x_j)> for the inner batch -> (Bo, C, Bi, C) float64."""
        bo, c = next(iter(outer_jac.values())).shape[:2]
        tangents = {k: v.reshape(bo * c, *v.shape[2:]) for k, v in outer_jac.items()}
        f = self._f(batch)
        out = vmap(lambda t: jvp(f, (self.params,), (t,))[1])(tangents)  # (Bo*C, Bi, C)
        return out.double().reshape(bo, c, *out.shape[1:])

    def block(self, formula: str, outer_jac: Params, outer_sign: Params | None, bo: int, inner: PromptInputs) -> torch.Tensor:
        bi = len(inner)
        if formula == "sgd":
            return self.jvp_block(outer_jac, inner)
        inner_jac = self.jacobian(inner)
        if formula == "signgd":
            return _contract(outer_sign, {k: v.sign() for k, v in inner_jac.items()}, bo, bi)
        standard = _contract(outer_sign, inner_jac, bo, bi)
        flipped = _contract(outer_jac, {k: v.sign() for k, v in inner_jac.items()}, bo, bi)
        return torch.stack([standard, flipped])


def compute_kernel(fn: torch.nn.Module, params: Params, fixed: Params, train: PromptInputs, other: PromptInputs,
                   formula: str, outer_batch_size: int, inner_batch_size: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The kernel between ``train`` (rows) and ``other`` (columns), float64 on CPU.

    Shape [N_train, C, N_other, C] ([2, ...] for ``asymmetric_signgd``; C = 1 for a binary f).
    Under torch.distributed each rank computes a contiguous shard of the training rows and the
    shards are all-gathered, so every rank returns the full kernel.
    """
    if formula not in FORMULAS:
        raise KernelConfigError(f"kernel.formula={formula!r} is not valid; choose one of {', '.join(FORMULAS)}")
    if formula == "asymmetric_signgd" and not getattr(fn, "binary", False):
        raise KernelConfigError("kernel.formula=asymmetric_signgd needs the binary function (kernel.binary=true, a 2-class task)")
    if outer_batch_size < 1 or inner_batch_size < 1:
        raise KernelConfigError(f"kernel batch sizes must be >= 1; got outer={outer_batch_size} inner={inner_batch_size}")
    device = torch.device(device)
    rank, world = rank_and_world()
    start, end = shard_bounds(len(train), rank, world)  # contiguous, no padding rows
    computer = KernelComputer(fn, params, fixed, device)
    rows = []
    was_training = fn.training
    fn.eval()
    try:
        with eager_attention(getattr(fn, "model", fn)):
            for o0, o1 in _chunks(end, outer_batch_size, start):
                outer = train.rows(o0, o1)
                outer_jac = computer.jacobian(outer)
                outer_sign = {k: v.sign() for k, v in outer_jac.items()} if formula != "sgd" else None
                cols = [computer.block(formula, outer_jac, outer_sign, o1 - o0, other.rows(i0, i1)).cpu()
                        for i0, i1 in _chunks(len(other), inner_batch_size)]
                axis = 3 if formula == "asymmetric_signgd" else 2
                rows.append(torch.cat(cols, dim=axis))
                del outer_jac, outer_sign
                log.debug("kernel rows %d-%d of %d done", o0, o1, len(train))
    finally:
        fn.train(was_training)
    row_axis = 1 if formula == "asymmetric_signgd" else 0
    if rows:
        local = torch.cat(rows, dim=row_axis)
    else:  # a rank with no rows (more ranks than examples) still joins the gather
        c = 1 if getattr(fn, "binary", False) else train.num_classes
        shape = [0, c, len(other), c]
        local = torch.zeros(([2] if formula == "asymmetric_signgd" else []) + shape, dtype=torch.float64)
    return gather_rows(local, dim=row_axis)


@torch.no_grad()
def function_values(fn: torch.nn.Module, inputs: PromptInputs, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """f on every example (the pre-trained model's logits, for ``adjust_for_init``): (N, C) float64."""
    device = torch.device(device)
    out = []
    for s, e in _chunks(len(inputs), batch_size):
        b = inputs.rows(s, e)
        tt = None if b.token_type_ids is None else b.token_type_ids.to(device)
        out.append(fn(b.input_ids.to(device), b.attention_mask.to(device), b.mask_pos.to(device), tt).double().cpu())
    return torch.cat(out)
