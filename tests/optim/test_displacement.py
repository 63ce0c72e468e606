"""Where the weights stand during a step (zoft/optim/displacement.py): inside ``at`` the weights
are theta + alpha z; the restore is owed, not done, and the next pass folds it in."""

from __future__ import annotations

import torch

from zoft.optim.directions import DirectionSampler
from zoft.optim.displacement import Displacement


def _setup(lr=0.1, weight_decay=0.0):
    torch.manual_seed(0)
    theta = [torch.randn(300, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)]
    params = [p.clone() for p in theta]
    group = {"lr": lr, "weight_decay": weight_decay}
    sampler = DirectionSampler("gaussian", seed=5)
    moved = Displacement(lambda: [(group, i, p) for i, p in enumerate(params)], sampler, None, lambda p: False)
    z = [sampler.direction(p.shape, 0, 0, i, dtype=p.dtype) for i, p in enumerate(params)]
    return theta, params, moved, z


def test_inside_at_the_weights_are_displaced_and_the_restore_is_owed():
    theta, params, moved, z = _setup()
    with moved.at(0, 0, 1e-3):
        for p, t, d in zip(params, theta, z):
            torch.testing.assert_close(p, t + 1e-3 * d, rtol=0, atol=1e-15)
    for p, t, d in zip(params, theta, z):  # still displaced: the restore is owed to the next pass
        torch.testing.assert_close(p, t + 1e-3 * d, rtol=0, atol=1e-15)
    assert [(t.step, t.k, t.alpha) for t in moved.owed] == [(0, 0, -1e-3)]
    moved.restore()
    assert moved.owed == []
    for p, t in zip(params, theta):
        torch.testing.assert_close(p, t, rtol=0, atol=1e-15)


def test_the_update_folds_the_owed_restore_in():
    """+eps z, then -eps z (merged with the owed -eps z into one -2 eps z pass), then the update
    from the displaced weights lands where theta <- (1 - lr wd) theta - lr g z lands."""
    lr, wd, eps, g = 0.1, 0.01, 1e-3, 2.5
    theta, params, moved, z = _setup(lr, wd)
    with moved.at(0, 0, eps):
        pass
    with moved.at(0, 0, -eps):
        for p, t, d in zip(params, theta, z):
            torch.testing.assert_close(p, t - eps * d, rtol=0, atol=1e-15)
    moved.descend(0, [g])
    assert moved.owed == []
    for p, t, d in zip(params, theta, z):
        torch.testing.assert_close(p, (1 - lr * wd) * t - lr * g * d, rtol=0, atol=1e-14)
