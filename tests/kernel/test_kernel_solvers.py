"""Kernel solvers on hand-checkable kernels, and the kernel file format."""

from __future__ import annotations

import math

import pytest
import torch

from zoft.kernel.solvers import SolverError, SolverOptions, accuracy, solve
from zoft.kernel.store import KernelFileError, cache_key, kernel_file, load_kernel, save_kernel


def k4(matrix) -> torch.Tensor:
    """An (N, M) matrix as a one-logit kernel [N, 1, M, 1]."""
    m = torch.tensor(matrix, dtype=torch.float64)
    return m[:, None, :, None]


def col(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


def test_lstsq_solves_the_kernel_system():
    # K_tt = diag(2, 4), y = (1, -1) -> alpha = (1/2, -1/4); K_tX rows: x1 -> (2, 4), x2 -> (4, -4)
    k_tt, k_tx = k4([[2, 0], [0, 4]]), k4([[2, 4], [4, -4]])
    y_t, y_x = col([1, -1]), col([-1, 1])
    r = solve("lstsq", k_tt, k_tx, y_t, y_x)
    torch.testing.assert_close(r.predictions, col([2 * 0.5 - 4 * 0.25, 4 * 0.5 + 4 * 0.25]))  # (0, 3)
    assert r.loss == pytest.approx(((0 + 1) ** 2 + (3 - 1) ** 2) / 2)
    assert r.metrics["rank"] == 2


def test_lstsq_ridge_and_adjust_for_init():
    k_tt, k_tx = k4([[2, 0], [0, 4]]), k4([[1, 0], [0, 1]])
    y_t = col([1, -1])
    # ridge 0.5 * sigma_max (4) = 2: (K + 2I) = diag(4, 6) -> alpha = (1/4, -1/6)
    r = solve("lstsq", k_tt, k_tx, y_t, y_t, SolverOptions(regularization=0.5))
    torch.testing.assert_close(r.predictions, col([0.25, -1 / 6]))
    # adjust for init: fit y - f0/s, add f0/s back; f0 = (2, 2), s = 2 -> residual targets (0, -2)
    f0 = col([2, 2])
    r = solve("lstsq", k_tt, k_tx, y_t, y_t, SolverOptions(adjust_for_init=True, f0_scaling=2.0), f0_t=f0, f0_x=f0)
    torch.testing.assert_close(r.predictions, col([0 / 2 + 1, -2 / 4 + 1]))
    with pytest.raises(SolverError, match="f0"):
        solve("lstsq", k_tt, k_tx, y_t, y_t, SolverOptions(adjust_for_init=True))


def test_lstsq_multiclass_uses_one_hot_targets():
    # 3 classes, identity kernel over (example, logit): the solution reproduces the one-hot rows.
    k = torch.eye(9, dtype=torch.float64).reshape(3, 3, 3, 3)
    y = torch.eye(3, dtype=torch.float64)
    r = solve("lstsq", k, k, y, y)
    torch.testing.assert_close(r.predictions, y)
    assert accuracy(r.predictions, y) == 1.0 and r.loss == pytest.approx(0.0, abs=1e-12)


def linear_kernel(xs, zs):
    return k4([[x * z for z in zs] for x in xs])


def test_logistic_on_kernel_rows_separates_a_separable_set():
    xs = [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
    y_t = col([-1, -1, -1, 1, 1, 1])
    zs = [-2.5, 0.5, 4.0]
    r = solve("logistic", linear_kernel(xs, xs), linear_kernel(xs, zs), y_t, col([-1, 1, 1]))
    assert (r.predictions[:, 0] > 0).tolist() == [False, True, True]
    assert accuracy(r.predictions, col([-1, 1, 1])) == 1.0
    # prediction = log p1 - log p0, and the loss is the mean -log p(gold) on X
    p1 = torch.sigmoid(r.predictions[:, 0])
    expected = -(torch.log(1 - p1[0]) + torch.log(p1[1]) + torch.log(p1[2])) / 3
    assert r.loss == pytest.approx(expected.item(), rel=1e-6)


def test_svr_fits_a_linear_target_within_its_epsilon_tube():
    xs = [-2.0, -1.0, 0.0, 1.0, 2.0]
    r = solve("svr", linear_kernel(xs, xs), linear_kernel(xs, [-1.5, 0.5]), col(xs), col([-1.5, 0.5]))
    # sklearn SVR: epsilon 0.1, C 1; y = x is representable with |w| = 1, so errors stay <= 0.1
    assert (r.predictions - col([-1.5, 0.5])).abs().max() <= 0.1 + 1e-3


def test_svc_decision_is_antisymmetric_for_a_symmetric_set():
    xs = [-2.0, -1.0, 1.0, 2.0]
    r = solve("svc", linear_kernel(xs, xs), linear_kernel(xs, [-1.0, 0.0, 3.0]), col([-1, -1, 1, 1]), col([-1, 1, 1]))
    d = r.predictions[:, 0]
    # Maximum-margin separator through 0 with margin at |x| = 1: decision(x) = x.
    torch.testing.assert_close(d, torch.tensor([-1.0, 0.0, 3.0], dtype=torch.float64), atol=1e-3, rtol=0)
    assert r.loss == pytest.approx((0 + 0 + 0) / 3 + 1 / 3, abs=1e-3)  # hinge only at x = 0
    with pytest.raises(SolverError, match="binary"):
        solve("svc", torch.ones(2, 2, 2, 2), torch.ones(2, 2, 2, 2), torch.eye(2), torch.eye(2))


def test_asym_solver_by_hand():
    # N = 1, K = [[1]], y = [1], gamma = 1: [[1, 1], [1, 1]] would be singular, so use K = 3:
    # [[1, 3], [3, 1]] [a; b] = [1; 1] -> a = b = 1/4.
    k_tt = torch.stack([k4([[3.0]]), k4([[5.0]])])
    k_tx = torch.stack([k4([[2.0]]), k4([[4.0]])])  # standard, flipped between train and X
    r = solve("asym", k_tt, k_tx, col([1]), col([1]), SolverOptions(gamma=1.0, asym_lambda=0.25))
    assert r.predictions.item() == pytest.approx(0.25 * 2 * 0.25 + 0.75 * 4 * 0.25)  # 0.875
    assert r.loss == pytest.approx(0.125)
    with pytest.raises(SolverError, match="asymmetric_signgd"):
        solve("asym", k4([[1.0]]), k4([[1.0]]), col([1]), col([1]))


def test_unknown_solver_is_named():
    with pytest.raises(SolverError, match="kernel.solver='ridge'.*lstsq, logistic, svr, svc, asym"):
        solve("ridge", k4([[1.0]]), k4([[1.0]]), col([1]), col([1]))


def test_kernel_file_round_trip_and_layout(tmp_path):
    kernel = torch.randn(4, 2, 3, 2, dtype=torch.float64)
    targets = torch.tensor([0, 1, 1])
    path = kernel_file(tmp_path, "dev", "sst-2")
    assert path.name == "dev_kernels_sst-2.pt"
    save_kernel(path, kernel, targets)
    raw = torch.load(path)  # plain torch.load gives the (kernel, targets) tuple
    assert isinstance(raw, tuple) and torch.equal(raw[0], kernel) and torch.equal(raw[1], targets)
    k, t = load_kernel(path, asymmetric=False)
    assert torch.equal(k, kernel) and torch.equal(t, targets)
    asym = torch.randn(2, 4, 1, 3, 1)
    save_kernel(kernel_file(tmp_path, "test", "sst-2", key="abc"), asym, targets, sidecar={"formula": "x"})
    assert load_kernel(tmp_path / "test_kernels_sst-2.abc.pt", asymmetric=True)[0].shape == (2, 4, 1, 3, 1)
    assert (tmp_path / "test_kernels_sst-2.abc.pt.json").is_file()
    with pytest.raises(KernelFileError, match="leading 2"):
        load_kernel(path, asymmetric=True)
    torch.save((kernel, torch.zeros(5)), tmp_path / "bad.pt")
    with pytest.raises(KernelFileError, match="5 targets"):
        load_kernel(tmp_path / "bad.pt")
    with pytest.raises(KernelFileError, match="does not exist"):
        load_kernel(tmp_path / "missing.pt")


def test_cache_key_changes_with_any_input():
    base = {"model": "m", "data": "d", "formula": "sgd", "subset": {"only_biases": False}}
    keys = {cache_key(base)}
    for change in ({"model": "m2"}, {"data": "d2"}, {"formula": "signgd"}, {"subset": {"only_biases": True}}):
        keys.add(cache_key({**base, **change}))
    assert len(keys) == 5 and cache_key(dict(reversed(list(base.items())))) == cache_key(base)
