"""Task records and the one task registry.

A task is data (a frozen :class:`TaskSpec`): where its data come from, how raw records become
:class:`Example` s, how an example renders as a prompt, its candidates and its metric. Nothing
about a task lives anywhere else.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

# "classification": fixed candidate words; "multiple-choice": per-example candidate strings;
# "generation": free-form answer scored by F1/EM.
TASK_KINDS = ("classification", "multiple-choice", "generation")


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

@dataclass(frozen=True)
class Template:
    """How an example becomes text: ``encode`` is the prompt without the answer, ``verbalize``
    the prompt followed by one candidate. The scored/trained option is what verbalize adds.
    ``encode_sfc``/``verbalize_sfc`` are the surface-form-competition calibration prompts."""

    encode: Callable[[Example], str]
    verbalize: Callable[[Example, str], str]
    encode_sfc: Optional[Callable[[Example], str]] = None
    verbalize_sfc: Optional[Callable[[Example, str], str]] = None


@dataclass(frozen=True)
class DataSource:
    """Where the raw splits live: a Hub dataset, or files in ``task.data_dir``.

    ``local_files`` maps a split ("train"/"test") to file names tried in order inside data_dir.
    ``read_record`` turns one raw record (dict) into zero or more examples.
    """

    hub_id: Optional[str]
    hub_config: Optional[str]
    hub_splits: Mapping[str, str]
    local_files: Mapping[str, Sequence[str]]
    read_record: Callable[[Mapping[str, Any]], list[Example]]
    # Column names for headerless/odd tsv files, keyed by file name (None: header row).
    tsv_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Built-in generator (split, n, seed) -> records, for tasks zoft makes itself.
    generate: Optional[Callable[[str], list[Mapping[str, Any]]]] = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    metric: str
    source: DataSource
    template: Template
    family: str = "causal"  # causal (OPT protocol) | masked (LM-BFF protocol)
    default_num_dev: int = 500
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} not in {TASK_KINDS}")


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, with the list of valid names in the error."""
    import zoft.tasks  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
