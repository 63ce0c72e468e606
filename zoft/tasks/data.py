"""Turn a task spec and the ``task`` config into train/dev/test examples."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from zoft.examples import Example, TaskData
from zoft.tasks.readers import DataFileError, MissingSplitError, read_hub_split, read_local_split
from zoft.tasks.sampling import sample_subset, split_train_dev

if TYPE_CHECKING:  # annotations only: the loaders sit below the task records and the config
    from zoft.config.schema import TaskConfig
    from zoft.tasks.base import TaskSpec

log = logging.getLogger(__name__)


def read_split(spec: TaskSpec, split: str, data_dir: str | None) -> tuple[str, list[Example]]:
    """All examples of ``split`` ("train" or "test") and a description of their source.

    Every record is checked here, while the data is read: a missing field, a label outside the
    task's labels or a non-text field stops the run now, naming the file and line, rather than
    as an IndexError in the middle of training.
    """
    src = spec.source
    if src.generate is not None and data_dir is None:
        origin = f"generated:{spec.name}/{split}"
        located = [(f"{origin} record {i + 1}", r) for i, r in enumerate(src.generate(split))]
    elif data_dir is not None:
        path, located = read_local_split(data_dir, src.local_files[split], src.tsv_columns)
        origin = str(path)
    else:
        if src.hub_id is None:
            raise DataFileError(f"task {spec.name!r} has no Hub source; pass task.data_dir=...")
        records = read_hub_split(src.hub_id, src.hub_config, src.hub_splits[split])
        origin = f"hub:{src.hub_id}/{src.hub_config or 'default'}/{src.hub_splits[split]}"
        located = [(f"{origin} row {i}", r) for i, r in enumerate(records)]
    examples: list[Example] = []
    for place, record in located:
        examples.extend(read_record(spec, place, record))
    if not examples:
        raise DataFileError(f"{origin}: no usable examples for task {spec.name}")
    return origin, examples


def read_record(spec: TaskSpec, place: str, record: Mapping[str, Any]) -> list[Example]:
    """The examples of one raw record, checked; errors name ``place`` (file:line)."""
    try:
        examples = spec.source.read_record(record)
    except KeyError as err:
        present = ", ".join(map(str, record)) or "none"
        raise DataFileError(f"{place}: {spec.name} record: missing field {err.args[0]!r} (the record has: "
                            f"{present}); add it, or point task.data_dir at {spec.name} files") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise DataFileError(f"{place}: {spec.name} record: {err}; fix or remove that record") from None
    for ex in examples:
        check_example(spec, place, ex)
    return examples


def check_example(spec: TaskSpec, place: str, ex: Example) -> None:
    """Text where text is rendered, and gold indices among the candidates: what the templates
    and the loss index later, so a bad record cannot fail in the middle of training."""
    for name, value in ex.fields.items():
        if not isinstance(value, str):
            raise DataFileError(f"{place}: {spec.name} record: field {name!r} is {_json_kind(value)}, "
                                "expected text")
    bad = [c for c in ex.candidates if not isinstance(c, str)]
    if bad:
        raise DataFileError(f"{place}: {spec.name} record: candidate {bad[0]!r} is not text")
    if spec.kind != "generation":
        n = len(ex.candidates)
        for gold in ex.gold_indices:
            if not (isinstance(gold, int) and 0 <= gold < n):
                raise DataFileError(f"{place}: {spec.name} record: the gold answer {gold!r} is not one of "
                                    f"the {n} candidates (indices 0..{n - 1}: {', '.join(ex.candidates)})")


def _json_kind(value: Any) -> str:
    """How a value reads in the user's file: null, a number, a list..."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def load_task_data(spec: TaskSpec, cfg: TaskConfig) -> TaskData:
    """The task's splits, by the task's own loader (``spec.loader``)."""
    return spec.loader(spec, cfg)


def load_opt_protocol(spec: TaskSpec, cfg: TaskConfig) -> TaskData:
    """The OPT protocol (the original's large_models/tasks.py): train+dev sampled together from
    the train split, test sampled from the validation split, all with ``cfg.sample_seed``."""
    train_origin, train_pool = _read_train_pool(spec, cfg)
    test_origin, test_pool = read_split(spec, "test", cfg.data_dir)
    train, dev = split_train_dev(train_pool, cfg.sample_seed, cfg.num_train, cfg.num_dev)
    if cfg.num_test > len(test_pool):
        log.info("task %s: test split has %d examples (< num_test=%d); using all of them",
                 spec.name, len(test_pool), cfg.num_test)
    test = sample_subset(test_pool, cfg.sample_seed, cfg.num_test)
    log.info("task %s: %d train, %d dev, %d test examples", spec.name, len(train), len(dev), len(test))
    return TaskData(train=train, dev=dev, test=test, sources={"train": train_origin, "test": test_origin},
                    pool=train_pool)


NO_TRAIN_FILE = "no train file (task.num_train=0, task.num_dev=0: nothing is sampled from it)"


def _read_train_pool(spec: TaskSpec, cfg: TaskConfig) -> tuple[str, list[Example]]:
    """The train split, or nothing when no train or dev row is drawn from it (zero-shot) and the
    folder has no train file: a user with only the test split can still score a model. ICL's
    demonstrations need the split; ``zoft.recipe`` says so when the pool is empty."""
    try:
        return read_split(spec, "train", cfg.data_dir)
    except MissingSplitError:
        if cfg.num_train or cfg.num_dev:
            raise
        return NO_TRAIN_FILE, []
