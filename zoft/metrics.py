"""Every task metric, in one place.

* OPT tasks (the original's large_models/metrics.py): accuracy, and SQuAD-style F1 / exact match
  (used for SQuAD and DROP alike; DROP is NOT scored with its official numeric F1).
* LM-BFF tasks (the original's medium_models/src/metrics.py, i.e. GLUE's): accuracy, binary F1
  of class 1 (MRPC/QQP) and Matthews correlation (CoLA), chosen by name.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
NO_ANSWER = ("CANNOTANSWER", "no answer")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, remove the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Max bag-of-tokens F1 over the golds; when the first gold says the question has no answer
    (``CANNOTANSWER`` / ``no answer``) the score is exact match instead."""
    if not golds:
        raise ValueError("f1_score needs at least one gold answer")
    if golds[0] in NO_ANSWER:
        return exact_match(prediction, golds)
    return max(_f1(prediction, g) for g in golds)


def accuracy(predictions: Sequence[int], golds: Sequence[int | Sequence[int]]) -> float:
    """Share of predictions equal to their gold index (or one of their gold indices, ReCoRD)."""
    if not predictions:
        return 0.0
    hits = sum((p in g) if isinstance(g, (tuple, list)) else (p == g) for p, g in zip(predictions, golds))
    return hits / len(predictions)


def _confusion(preds: Sequence[int], golds: Sequence[int]) -> tuple[int, int, int, int]:
    """(tp, tn, fp, fn) with class 1 as the positive class."""
    tp = sum(p == 1 and g == 1 for p, g in zip(preds, golds))
    tn = sum(p != 1 and g != 1 for p, g in zip(preds, golds))
    fp = sum(p == 1 and g != 1 for p, g in zip(preds, golds))
    fn = sum(p != 1 and g == 1 for p, g in zip(preds, golds))
    return tp, tn, fp, fn


def binary_f1(preds: Sequence[int], golds: Sequence[int]) -> float:
    """F1 of class 1; 0 when there is no true positive (sklearn's convention)."""
    tp, _, fp, fn = _confusion(preds, golds)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(preds: Sequence[int], golds: Sequence[int]) -> float:
    """Matthews correlation of a binary task; 0 when a marginal is empty (sklearn's convention)."""
    tp, tn, fp, fn = _confusion(preds, golds)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


# The classification metrics by the names the LM-BFF task records use.
CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1": binary_f1, "mcc": mcc}


def classification_metrics(names: Sequence[str], preds: Sequence[int], golds: Sequence[int]) -> dict[str, float]:
    """``{name: value}`` for each metric name (accuracy | f1 | mcc)."""
    return {name: CLASSIFICATION_METRICS[name](preds, golds) for name in names}
