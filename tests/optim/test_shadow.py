"""Exact (shadow) perturbation of fp16/bf16 weights (zoft/optim/shadow.py): the modules see
theta + eps z through forward hooks and theta changes only in the update (MeZO issue #42)."""

from __future__ import annotations

import pytest
import torch

from optim_helpers import lm_closure, tiny_opt
from zoft.optim.mezo import MeZO


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_restore_is_exact(dtype):
    model = tiny_opt(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    opt = MeZO(model.parameters(), lr=0.0, eps=1e-3, seed=2, model=model)
    closure = lm_closure(model, batch=1, length=4)
    for _ in range(1000):
        opt.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert len(set(opt.last_projected_grads)) == 1 and opt.last_projected_grads[0] != 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_change_is_the_update_alone(dtype):
    model = tiny_opt(dtype)
    params = list(model.parameters())
    reference = [p.detach().clone() for p in params]
    opt = MeZO(params, lr=1e-2, eps=1e-3, seed=4, model=model)
    for step in range(5):
        opt.step(lm_closure(model, seed=step))
        g = opt.last_projected_grads[0]
        for i, r in enumerate(reference):  # the same update on weights that were never perturbed
            r.add_(opt.direction_of(i, step), alpha=-1e-2 * g)
    assert all(torch.equal(p, r) for p, r in zip(params, reference))


def test_inplace_perturbation_in_bf16_does_drift():
    # Why the shadow path exists: the original's +eps/-2eps/+eps does not restore bf16 weights.
    model = tiny_opt(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    opt = MeZO(model.parameters(), lr=0.0, eps=1e-3, seed=2, perturbation="inplace")
    closure = lm_closure(model, batch=1, length=4)
    for _ in range(20):
        opt.step(closure)
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_low_precision_without_model_is_a_clear_error():
    model = tiny_opt(torch.bfloat16)
    with pytest.raises(ValueError, match="needs the model"):
        MeZO(model.parameters(), lr=1e-3)
