"""The seeded directions (zoft/optim/directions.py): reproducible whatever the threads and
chunks, the two distributions, and the one vocabulary MeZO's setting declares."""

from __future__ import annotations

import pytest
import torch

from zoft.optim.directions import CHUNK, DIRECTIONS, DirectionSampler
from zoft.optim.mezo import MeZO


def test_directions_reproducible_across_threads_and_chunks():
    # A tensor larger than one chunk, applied by 1 and by 3 threads: same bits.
    shape = (CHUNK * 2 + 1234,)
    outs = []
    for threads in (1, 3):
        p = torch.zeros(shape)
        DirectionSampler("gaussian", seed=9, threads=threads).apply([(p, None, 4, 1.0, _terms(0.5))])
        outs.append(p)
    assert torch.equal(outs[0], outs[1])
    z = DirectionSampler("gaussian", seed=9).direction(shape, 2, 0, 4)
    torch.testing.assert_close(outs[0], 0.5 * z, rtol=0, atol=0)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    r = DirectionSampler("rademacher", seed=9).direction(shape, 2, 0, 4)
    assert set(r.unique().tolist()) == {-1.0, 1.0} and abs(float(r.mean())) < 0.01


def _terms(alpha):
    from zoft.optim.directions import Term
    return (Term(2, 0, alpha),)


def test_the_sampler_draws_what_mezos_direction_setting_declares():
    assert DIRECTIONS == MeZO.settings["direction"].valid
    with pytest.raises(ValueError, match="direction='uniform' is not valid; choose one of gaussian, rademacher"):
        DirectionSampler("uniform")


def test_a_direction_depends_on_its_seed_step_direction_and_tensor_only():
    sampler = DirectionSampler("gaussian", seed=3)
    z = sampler.direction((50,), 7, 1, 2)
    assert torch.equal(z, DirectionSampler("gaussian", seed=3).direction((50,), 7, 1, 2))
    for other in (sampler.direction((50,), 8, 1, 2), sampler.direction((50,), 7, 0, 2),
                  sampler.direction((50,), 7, 1, 3), DirectionSampler("gaussian", seed=4).direction((50,), 7, 1, 2)):
        assert not torch.equal(z, other)
