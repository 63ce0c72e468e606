"""Examples and the splits that hold them: what every task loader produces and every objective
consumes (no task, model or config knowledge here)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Example:
    """One evaluation unit.

    ``candidates`` are the strings a model chooses between (empty for generation); ``gold`` is
    the index of the correct candidate, or a tuple of indices when several are correct (ReCoRD);
    ``answers`` are the gold strings of generation tasks.
    """

    fields: Mapping[str, Any]
    candidates: tuple[str, ...] = ()
    gold: int | tuple[int, ...] = 0
    answers: tuple[str, ...] = ()
    uid: Optional[str] = None

    @property
    def gold_indices(self) -> tuple[int, ...]:
        return self.gold if isinstance(self.gold, tuple) else (self.gold,)



def label_index(value: Any, names: Sequence[str] = (), count: Optional[int] = None) -> int:
    """A class label as an index in ``0..count-1`` (``count`` defaults to ``len(names)``, else 2).

    Ints and bools are taken as they are; strings by ``names`` ("entailment"), or as
    "true"/"false" or digits (tsv files hold every label as text). Anything else, or an index
    outside the label set (SST-2 label 7), is a ValueError naming the value and the valid labels.
    """
    count = count or len(names) or 2
    index: Optional[int] = None
    if isinstance(value, bool):
        index = int(value)
    elif isinstance(value, numbers.Integral):  # also numpy ints from a datasets row
        index = int(value)
    elif isinstance(value, float) and value.is_integer():  # 1.0 from a pandas-written file
        index = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text in names:
            index = list(names).index(text)
        elif text.lower() in ("true", "false"):
            index = int(text.lower() == "true")
        elif text.lstrip("-").isdigit():
            index = int(text)
    if index is None or not 0 <= index < count:
        raise ValueError(f"label {value!r} is not one of the valid labels {valid_labels(names, count)}")
    return index


def valid_labels(names: Sequence[str], count: int) -> str:
    """The labels :func:`label_index` accepts, as a user would type them."""
    numbers = ", ".join(str(i) for i in range(count))
    return f"{', '.join(names)} (or {numbers})" if names else numbers


@dataclass
class TaskData:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    # Where each split came from (file path or hub id), recorded in results.json.
    sources: dict[str, str]
    # The whole train split: in-context demonstrations are sampled from it (as the original's large_models/run.py).
    pool: list[Example] = field(default_factory=list)
