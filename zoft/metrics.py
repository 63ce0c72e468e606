"""Task metrics of the OPT protocol (the original's large_models/metrics.py): accuracy, and SQuAD-style F1 / exact match
(used for SQuAD and DROP alike; DROP is NOT scored with its official numeric F1)."""

from __future__ import annotations

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


def accuracy(predictions: Sequence[int], golds: Sequence[Sequence[int]]) -> float:
    """Share of predictions that are one of their gold indices."""
    if not predictions:
        return 0.0
    return sum(p in g for p, g in zip(predictions, golds)) / len(predictions)
