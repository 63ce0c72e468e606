"""Linear probing anchored at a start: logistic regression whose L2 penalty pulls toward a given
head (the similarity objective's label-text embeddings) instead of toward zero.

    minimise  mean CE(X W^T + b, y) + lam / 2 * (|W - W0|^2 + |b - b0|^2)

The strongest regularisation of the grid therefore leaves the zero-shot classifier, a usable start
for LP-then-MeZO, where an ordinary (zero-anchored) probe leaves a zero head (the early-stopped
probe's C = 1e-4 on a sentence encoder). ``lam`` is chosen by stratified k-fold cross-validation
accuracy over a log grid, ties going to the stronger pull toward the start; the final head is
refitted on all examples. Each fit is L-BFGS in float64 (a convex problem of classes x (H + 1)
parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zoft.errors import MethodError

# lam grid, strongest first: 1e2 (the start itself, within ~1e-3) down to 1e-4.
LAMBDAS = tuple(float(x) for x in np.logspace(2, -4, 13))


@dataclass
class AnchoredFit:
    weight: torch.Tensor  # (classes, H)
    bias: torch.Tensor  # (classes,)
    lam: float
    cv_accuracy: float
    train_loss: float


def fit_one(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor, lam: float,
            max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalised fit for one ``lam`` (float64 tensors; starts at the anchor)."""
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * lam * ((w - w0).pow(2).sum() + (b - b0).pow(2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _folds(y: np.ndarray, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    n_splits = int(min(5, np.bincount(y).min()))
    if n_splits < 2:
        return []
    return [test for _, test in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)]


def fit_anchored_probe(features: torch.Tensor, targets: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor,
                       lambdas=LAMBDAS, seed: int = 0) -> AnchoredFit:
    """Cross-validate ``lam`` (accuracy; ties: the larger), refit on everything."""
    # clone(): features may come from inference mode, whose tensors autograd cannot save
    x, y = features.double().cpu().clone(), targets.long().cpu().clone()
    w0, b0 = w0.double().cpu().clone(), b0.double().cpu().clone()
    if len(torch.unique(y)) < 2:
        raise MethodError("linear probing needs at least two classes among the training targets")
    folds = _folds(y.numpy(), seed)
    best_lam, best_acc = max(lambdas), float("nan")
    if folds:
        scores = []
        for lam in lambdas:
            hits = 0
            for test in folds:
                train = np.setdiff1d(np.arange(len(y)), test)
                w, b = fit_one(x[train], y[train], w0, b0, lam)
                hits += int(((x[test] @ w.T + b).argmax(-1) == y[test]).sum())
            scores.append(hits / len(y))
        best_acc = max(scores)
        best_lam = max(lam for lam, s in zip(lambdas, scores) if s == best_acc)
    w, b = fit_one(x, y, w0, b0, best_lam)
    train_loss = float(F.cross_entropy(x @ w.T + b, y))
    return AnchoredFit(w, b, best_lam, best_acc, train_loss)
