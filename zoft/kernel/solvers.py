"""Kernel solvers (the original's medium_models/src/kernel_solvers.py).

Every solver sees the train x train kernel and the train x X kernel, both [N, C, *, C] (or
[2, ...] for ``asym``), targets (N, C) (binary: (N, 1) in {-1, +1}; else one-hot), and returns
predictions (M, C) for X: argmax over C (sign for binary) is the predicted class.

``loss`` is each solver's own loss on X: squared error summed over coordinates / M for
``lstsq``/``svr``, mean log-loss for ``logistic``, mean hinge loss for ``svc``/``asym``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from zoft.config.choices import KERNEL_SOLVERS as SOLVERS
from zoft.errors import ZoftUserError



class SolverError(ZoftUserError, ValueError):
    """A solver cannot run on the given kernel/targets."""


@dataclass
class SolverOptions:
    regularization: float = 0.0  # lstsq ridge: reg * sigma_max(K) * I
    adjust_for_init: bool = False  # lstsq: fit Y - f0/f0_scaling, add it back
    f0_scaling: float = 1.0
    gamma: float = 1.0  # asym: I/gamma blocks
    asym_lambda: float = 0.5  # asym: weight of the standard vs flipped kernel


@dataclass
class SolverResult:
    predictions: torch.Tensor  # (M, C) float64
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


def _flat(kernel: torch.Tensor) -> torch.Tensor:
    """[N, C, M, C] -> (N*C, M*C)."""
    n, c, m, c2 = kernel.shape
    return kernel.reshape(n * c, m * c2)


def _squared(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred - y) ** 2).sum() / max(len(y), 1))


def _hinge(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.clamp(1 - y * pred, min=0).mean())


def lstsq(k_tt, k_tx, y_t, y_x, opts: SolverOptions, f0_t=None, f0_x=None) -> SolverResult:
    """Least squares K_tt alpha = Y (optionally ridge), prediction K_tX^T alpha."""
    kt = _flat(k_tt).double()
    target = y_t.double()
    if opts.adjust_for_init:
        if f0_t is None or f0_x is None:
            raise SolverError("kernel.adjust_for_init=true needs the pre-trained logits f0 of train and X")
        target = target - f0_t.double() / opts.f0_scaling
    if opts.regularization:
        sigma_max = torch.linalg.matrix_norm(kt, ord=2)
        kt = kt + opts.regularization * sigma_max * torch.eye(kt.shape[0], dtype=kt.dtype)
    sol = torch.linalg.lstsq(kt, target.reshape(-1, 1), driver="gelsd")
    pred = (_flat(k_tx).double().T @ sol.solution).reshape(y_x.shape[0], -1)
    if opts.adjust_for_init:
        pred = pred + f0_x.double() / opts.f0_scaling
    return SolverResult(pred, _squared(pred, y_x.double()), {"rank": float(sol.rank.item())})


def _binary_columns(y: torch.Tensor, name: str) -> torch.Tensor:
    if y.shape[1] != 1:
        raise SolverError(f"kernel.solver={name} needs the binary function (kernel.binary=true, 2 classes); "
                          f"targets have {y.shape[1]} columns")
    return y[:, 0]


def logistic(k_tt, k_tx, y_t, y_x, opts: SolverOptions, **_) -> SolverResult:
    """sklearn LogisticRegressionCV on kernel rows as features.

    Binary: features K[:, 0, j, 0] (N), classes (y + 1) / 2, prediction log p1 - log p0.
    Multi-class: features K[:, :, j, :] flattened (N*C*C), multinomial, prediction log p.
    """
    from sklearn.linear_model import LogisticRegressionCV

    n, c, m, _ = k_tx.shape
    feats_t = k_tt.permute(2, 0, 1, 3).reshape(n, -1).numpy()
    feats_x = k_tx.permute(2, 0, 1, 3).reshape(m, -1).numpy()
    classes_t = ((y_t[:, 0] + 1) / 2).long().numpy() if c == 1 else y_t.argmax(1).numpy()
    classes_x = ((y_x[:, 0] + 1) / 2).long() if c == 1 else y_x.argmax(1)
    if len(np.unique(classes_t)) < 2:
        raise SolverError("kernel.solver=logistic needs at least two classes among the training targets")
    folds = int(min(5, np.bincount(classes_t).min())) if np.bincount(classes_t).min() >= 2 else None
    clf = LogisticRegressionCV(max_iter=10000, random_state=0, cv=folds or 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(feats_t, classes_t)
    logp = torch.from_numpy(clf.predict_log_proba(feats_x)).double()  # (M, classes present)
    full = torch.full((m, max(c, 2)), -np.inf, dtype=torch.float64)
    full[:, torch.from_numpy(clf.classes_).long()] = logp
    pred = (full[:, 1:2] - full[:, 0:1]) if c == 1 else full
    loss = float(-full[torch.arange(m), classes_x].clamp(min=-1e30).mean())
    return SolverResult(pred, loss, {"C": float(np.atleast_1d(clf.C_)[0])})


def svr(k_tt, k_tx, y_t, y_x, opts: SolverOptions, **_) -> SolverResult:
    """One sklearn SVR (precomputed kernel) per output column c on K[:, c, :, c]."""
    from sklearn.svm import SVR

    c = k_tt.shape[1]
    cols = []
    for col in range(c):
        model = SVR(kernel="precomputed").fit(k_tt[:, col, :, col].numpy(), y_t[:, col].numpy())
        cols.append(torch.from_numpy(model.predict(k_tx[:, col, :, col].T.numpy().copy())))
    pred = torch.stack(cols, 1).double()
    return SolverResult(pred, _squared(pred, y_x.double()))


def svc(k_tt, k_tx, y_t, y_x, opts: SolverOptions, **_) -> SolverResult:
    """sklearn SVC with the precomputed kernel (binary); prediction = decision function."""
    from sklearn.svm import SVC

    yt, yx = _binary_columns(y_t, "svc"), _binary_columns(y_x, "svc")
    model = SVC(kernel="precomputed").fit(k_tt[:, 0, :, 0].numpy(), yt.numpy())
    dec = torch.from_numpy(model.decision_function(k_tx[:, 0, :, 0].T.numpy().copy())).double()
    if model.classes_[1] < model.classes_[0]:
        dec = -dec
    return SolverResult(dec[:, None], _hinge(dec, yx.double()))


def asym(k_tt, k_tx, y_t, y_x, opts: SolverOptions, **_) -> SolverResult:
    """Asymmetric-kernel SVM-like system for asymmetric SignGD (binary).

    With H_ij = y_i K_ij y_j (K = standard train x train kernel), solve
    [[I/gamma, H], [H^T, I/gamma]] [alpha; beta] = 1 and predict
    lambda * K_tX^T (alpha * y) + (1 - lambda) * K_flipped_tX^T (beta * y).
    """
    if k_tt.dim() != 5 or k_tx.dim() != 5:
        raise SolverError("kernel.solver=asym needs asymmetric kernels [2, N, 1, M, 1] "
                          "(kernel.formula=asymmetric_signgd)")
    yt, yx = _binary_columns(y_t, "asym").double(), _binary_columns(y_x, "asym").double()
    if opts.gamma <= 0:
        raise SolverError(f"kernel.gamma={opts.gamma} must be > 0")
    n = yt.shape[0]
    k = k_tt[0, :, 0, :, 0].double()
    h = yt[:, None] * k * yt[None, :]
    eye = torch.eye(n, dtype=torch.float64) / opts.gamma
    system = torch.cat([torch.cat([eye, h], 1), torch.cat([h.T, eye], 1)], 0)
    sol = torch.linalg.solve(system, torch.ones(2 * n, dtype=torch.float64))
    alpha, beta = sol[:n], sol[n:]
    lam = opts.asym_lambda
    pred = lam * (k_tx[0, :, 0, :, 0].double().T @ (alpha * yt)) + (1 - lam) * (k_tx[1, :, 0, :, 0].double().T @ (beta * yt))
    return SolverResult(pred[:, None], _hinge(pred, yx))


_IMPL = {"lstsq": lstsq, "logistic": logistic, "svr": svr, "svc": svc, "asym": asym}


def solve(name: str, k_tt: torch.Tensor, k_tx: torch.Tensor, y_t: torch.Tensor, y_x: torch.Tensor,
          opts: Optional[SolverOptions] = None, f0_t: Optional[torch.Tensor] = None,
          f0_x: Optional[torch.Tensor] = None) -> SolverResult:
    """Fit solver ``name`` on (k_tt, y_t) and predict for X from k_tx (see module docstring)."""
    if name not in _IMPL:
        raise SolverError(f"kernel.solver={name!r} is not valid; choose one of {', '.join(SOLVERS)}")
    opts = opts or SolverOptions()
    if k_tt.dim() == 5 and name != "asym":
        k_tt, k_tx = k_tt[0], k_tx[0]  # the standard asymmetric kernel, for the symmetric solvers
    return _IMPL[name](k_tt.double(), k_tx.double(), y_t.double(), y_x.double(), opts, f0_t=f0_t, f0_x=f0_x)


def accuracy(predictions: torch.Tensor, y: torch.Tensor) -> float:
    """Share of X whose predicted class (sign for one column, argmax otherwise) is the target's."""
    if predictions.shape[1] == 1:
        return float(((predictions[:, 0] > 0) == (y[:, 0] > 0)).double().mean())
    return float((predictions.argmax(1) == y.argmax(1)).double().mean())
