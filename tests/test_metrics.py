"""Accuracy, binary F1 and Matthews correlation against hand-computed values (and sklearn)."""

from __future__ import annotations

import math

import pytest

from zoft.metrics import accuracy, binary_f1 as f1, classification_metrics as compute, mcc

PREDS = [1, 1, 0, 0, 1, 0, 1, 0]
GOLDS = [1, 0, 0, 1, 1, 0, 1, 1]
# tp=3 (0, 4, 6), tn=2 (2, 5), fp=1 (1), fn=2 (3, 7)


def test_hand_computed_values():
    assert accuracy(PREDS, GOLDS) == pytest.approx(5 / 8)
    assert f1(PREDS, GOLDS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # 0.6667
    assert mcc(PREDS, GOLDS) == pytest.approx((3 * 2 - 1 * 2) / math.sqrt(4 * 5 * 3 * 4))  # 0.2582


def test_degenerate_cases_follow_sklearn_conventions():
    assert mcc([1, 1, 1], [1, 0, 1]) == 0.0  # a constant prediction has no correlation
    assert f1([0, 0], [1, 1]) == 0.0
    assert mcc([1, 0], [1, 0]) == pytest.approx(1.0) and mcc([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    got = compute(["accuracy", "f1", "mcc"], PREDS, GOLDS)
    assert got["f1"] == pytest.approx(metrics.f1_score(GOLDS, PREDS))
    assert got["mcc"] == pytest.approx(metrics.matthews_corrcoef(GOLDS, PREDS))
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(GOLDS, PREDS))
