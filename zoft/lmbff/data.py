"""Load the k-shot files of an LM-BFF task (the masked-LM family's data flow).

Unlike the OPT protocol nothing is sampled here: ``zoft kshot`` already wrote train/dev/test for
each (K, seed). ``task.data_dir`` is either the folder of one split set (holding ``train.tsv`` /
``train.csv``) or the k-shot root, in which case ``<data_dir>/<Task>/<task.k>-<task.sample_seed>``
is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from zoft.examples import Example, TaskData
from zoft.lmbff.catalog import LmBffTask
from zoft.lmbff.formats import LmBffDataError, read_split
from zoft.lmbff.settings import prompt_settings

log = logging.getLogger(__name__)

HOW_TO = ("create it with `python -m zoft.cli prepare-lmbff --out data` (downloads LM-BFF's archive "
          "and writes data/k-shot-1k-test) or `python -m zoft.cli kshot --task {task} --k {k} "
          "--seeds {seed} --data-dir <original files> --out data/k-shot-1k-test`")


def split_folder(task: LmBffTask, data_dir: Optional[str], k: int, seed: int) -> Path:
    """The folder holding the k-shot files for (task, k, seed)."""
    hint = HOW_TO.format(task=task.name, k=k, seed=seed)
    if not data_dir:
        raise LmBffDataError(f"task {task.name} reads k-shot files: set task.data_dir; {hint}")
    root = Path(data_dir).expanduser()
    if any((root / n).is_file() for n in task.train_names):
        return root
    folder = root / task.data_name / f"{k}-{seed}"
    if any((folder / n).is_file() for n in task.train_names):
        return folder
    raise LmBffDataError(
        f"no k-shot split for {task.name} (k={k}, seed={seed}): neither {str(root / task.train_names[0])!r} "
        f"nor {str(folder / task.train_names[0])!r} exists; {hint}")


def _find(folder: Path, names: Sequence[str], split: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise LmBffDataError(f"{folder}: the {split} file ({' or '.join(names)}) is missing")


def to_examples(task: LmBffTask, rows, label_words: Sequence[str], split: str) -> list[Example]:
    """(sentences, label index) pairs as Examples whose candidates are the label words."""
    return [Example(fields={"sentences": sentences}, candidates=tuple(label_words), gold=label,
                    uid=f"{split}-{i}") for i, (sentences, label) in enumerate(rows)]


def load_kshot_splits(task: LmBffTask, data_dir: Optional[str], k: int, seed: int,
                      label_words: Sequence[str]) -> tuple[dict[str, list[Example]], dict[str, str]]:
    """Examples of train/dev/test and the file each came from."""
    folder = split_folder(task, data_dir, k, seed)
    names = {"train": task.train_names, "dev": task.dev_names, "test": task.test_names}
    splits, sources = {}, {}
    for split, candidates in names.items():
        path = _find(folder, candidates, split)
        splits[split] = to_examples(task, read_split(task, path), label_words, split)
        sources[split] = str(path)
    log.info("task %s (k=%d, seed=%d): %d train, %d dev, %d test examples from %s", task.name, k, seed,
             len(splits["train"]), len(splits["dev"]), len(splits["test"]), folder)
    return splits, sources


def load_kshot_task(spec, cfg) -> TaskData:
    """The loader of an LM-BFF task record (``spec.lmbff``): the k-shot split (``task.k``, data
    seed ``task.sample_seed``) as written by ``zoft kshot``; nothing is sampled."""
    task = spec.lmbff
    words = prompt_settings(task, cfg).label_words
    splits, sources = load_kshot_splits(task, cfg.data_dir, cfg.k, cfg.sample_seed, words)
    return TaskData(train=splits["train"], dev=splits["dev"], test=splits["test"], sources=sources)
