"""The trajectory file (zoft/optim/trajectory.py): a header, then one record per step of
(step, lr, the optimizer's record_width scalars); what replay rebuilds the weights from."""

from __future__ import annotations

import pytest
import torch

from optim_helpers import mlp, regression_closure
from zoft.optim.estimators import HiZOO
from zoft.optim.mezo import MeZO
from zoft.optim.trajectory import TrajectoryError, TrajectoryWriter, read_trajectory, replay_into


def _recorded(tmp_path, make, steps=4):
    model = mlp()
    opt = make(model)
    writer = TrajectoryWriter(tmp_path / "trajectory.bin", opt, names=[n for n, _ in model.named_parameters()])
    opt.attach_trajectory(writer)
    closure = regression_closure(model)
    for _ in range(steps):
        opt.step(closure)
    writer.close()
    return model, opt


@pytest.mark.parametrize("make,width", [
    (lambda m: MeZO(m.parameters(), lr=1e-2, eps=1e-3, n_directions=3, seed=1), 3),
    (lambda m: HiZOO(m.parameters(), lr=1e-2, eps=1e-3, hessian_smooth=1e-3, seed=1), 2),  # g and h
])
def test_records_hold_the_optimizers_record_width_scalars_per_step(tmp_path, make, width):
    _, opt = _recorded(tmp_path, make)
    traj = read_trajectory(tmp_path / "trajectory.bin")
    assert opt.record_width == width == traj.header["record_width"]
    assert traj.steps == [0, 1, 2, 3] and traj.lrs == [pytest.approx(1e-2)] * 4
    assert all(len(g) == width for g in traj.grads)
    assert traj.grads[-1][:1] == [pytest.approx(opt.last_projected_grads[0], rel=1e-6)]  # float32 on disk


def test_replay_from_the_file_rebuilds_the_weights_bit_identically(tmp_path):
    make = lambda m: MeZO(m.parameters(), lr=1e-2, eps=1e-3, seed=1)  # noqa: E731
    trained, _ = _recorded(tmp_path, make, steps=6)
    fresh = mlp()
    assert replay_into(make(fresh), tmp_path / "trajectory.bin") == 6
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), fresh.parameters()))


def test_a_cut_last_record_is_dropped_and_another_file_is_refused(tmp_path):
    _recorded(tmp_path, lambda m: MeZO(m.parameters(), lr=1e-2, eps=1e-3, seed=1))
    path = tmp_path / "trajectory.bin"
    path.write_bytes(path.read_bytes()[:-3])  # a run killed while writing its last record
    traj = read_trajectory(path)
    assert len(traj) == 3 and traj.cut_bytes > 0
    other = tmp_path / "notes.txt"
    other.write_text("not a trajectory")
    with pytest.raises(TrajectoryError, match="notes.txt"):
        read_trajectory(other)
