"""Task records and the one task registry.

A task is data (a frozen :class:`TaskSpec`): where its data come from, how raw records become
:class:`Example` s, how an example renders as a prompt, its candidates and its metric. Nothing
about a task lives anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from zoft.examples import Example, TaskData
from zoft.lmbff.catalog import LmBffTask
from zoft.tasks.data import load_opt_protocol

# "classification": fixed candidate words; "multiple-choice": per-example candidate strings;
# "generation": free-form answer scored by F1/EM.
TASK_KINDS = ("classification", "multiple-choice", "generation")


@dataclass(frozen=True)
class PromptFormat:
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
    """One task, the one record every consumer reads.

    ``loader(spec, task_cfg) -> TaskData`` turns raw data into the sampled splits: the OPT
    protocol from ``source`` (the default), or an LM-BFF k-shot split. ``prompt`` renders an
    example as text; LM-BFF tasks also carry ``lmbff``, their prompt as data (template string,
    label words, sentence limits, file layout), which their objective encodes.
    """

    name: str
    kind: str
    metric: str
    source: Optional[DataSource]
    prompt: PromptFormat
    family: str = "causal"  # causal (OPT protocol) | masked (LM-BFF protocol)
    default_num_dev: int = 500
    description: str = ""
    loader: Callable[["TaskSpec", Any], TaskData] = load_opt_protocol
    lmbff: Optional[LmBffTask] = None

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
