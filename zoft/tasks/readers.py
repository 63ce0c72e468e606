"""Readers for the distribution formats of the paper's data (GLUE tsv, jsonl, json) and for
the Hugging Face Hub. Every record comes with its place (``file:line``, or the item of a json
file), so a malformed line, a missing field or a bad label is reported where it is."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from zoft.errors import ZoftUserError
from zoft.textfiles import read_text_bytes

log = logging.getLogger(__name__)

# One raw record and where it came from: "path:line", "path: data[3]", "hub:... row 7".
Located = tuple[str, dict[str, Any]]


class DataFileError(ZoftUserError, ValueError):
    """A data file is missing, empty or malformed."""


class MissingSplitError(DataFileError):
    """A split's file is not in ``task.data_dir`` (a split nothing samples from may be absent)."""


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a BOM is dropped); a binary or non-UTF-8 file is a
    :class:`DataFileError` naming the file (and the line of the first bad byte), instead of a
    UnicodeDecodeError from the middle of a read."""
    raw = read_text_bytes(path, DataFileError, "data files must be UTF-8 text (.jsonl, .tsv or .json)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); data files "
            "must be UTF-8: convert it (e.g. `iconv -f latin1 -t utf-8`) or check that it is the right file"
        ) from None


def read_jsonl_located(path: Path) -> list[Located]:
    """One JSON object per line, with its ``path:line``; blank lines are skipped."""
    records = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); each "
                                "line of a .jsonl file must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataFileError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append((f"{path}:{lineno}", record))
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line; blank lines are skipped."""
    return [record for _, record in read_jsonl_located(path)]


def read_tsv_located(path: Path, columns: Optional[Sequence[str]] = None) -> list[Located]:
    """A tab-separated file, each row with its ``path:line``; the first row is the header
    unless ``columns`` names them.

    Quoting is off (GLUE files contain bare quote characters). A UTF-8 BOM is dropped.
    """
    rows: Iterator[list[str]] = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t",
                                           quoting=csv.QUOTE_NONE)
    header = list(columns) if columns is not None else next(rows, None)
    if header is None:
        return []
    records = []
    start = 1 if columns is not None else 2
    for lineno, row in enumerate(rows, start):
        if not row:
            continue
        if len(row) < len(header):
            raise DataFileError(
                f"{path}:{lineno}: expected {len(header)} tab-separated columns "
                f"({', '.join(header)}), found {len(row)}"
            )
        records.append((f"{path}:{lineno}", dict(zip(header, row))))
    return records


def read_tsv(path: Path, columns: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """A tab-separated file as records (see :func:`read_tsv_located`)."""
    return [record for _, record in read_tsv_located(path, columns)]


def read_local_split(data_dir: str, names: Sequence[str],
                     columns: Mapping[str, Sequence[str]]) -> tuple[Path, list[Located]]:
    """Read the first of ``names`` that exists in ``data_dir``: its path and its located records."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataFileError(f"task.data_dir={data_dir!r} is not a folder")
    for name in names:
        path = folder / name
        if path.is_file():
            if path.suffix == ".jsonl":
                records = read_jsonl_located(path)
            elif path.suffix == ".json":
                records = _read_json(path)
            else:
                records = read_tsv_located(path, columns.get(name))
            if not records:
                raise DataFileError(f"{path}: the file is empty (no records)")
            return path, records
    raise MissingSplitError(
        f"none of {', '.join(names)} exists in task.data_dir={str(folder)!r}; "
        "put the split there under one of these names"
    )


def _read_json(path: Path) -> list[Located]:
    try:
        payload = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        # SQuAD layout: {"data": [article, ...]}
        return [(f"{path}: data[{i}]", _object(path, f"data[{i}]", r)) for i, r in enumerate(payload["data"])]
    if isinstance(payload, dict):
        # DROP layout: {passage_id: {...}}
        return [(f"{path}: passage {key!r}", dict(_object(path, f"passage {key!r}", value), _key=key))
                for key, value in payload.items()]
    if isinstance(payload, list):
        return [(f"{path}: item {i}", _object(path, f"item {i}", r)) for i, r in enumerate(payload)]
    raise DataFileError(f"{path}: unsupported JSON layout (expected a list or an object)")


def _object(path: Path, where: str, value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object; records are looked up by field name."""
    if not isinstance(value, dict):
        raise DataFileError(f"{path}: {where} is a JSON {type(value).__name__}, expected an object")
    return value


def read_hub_split(hub_id: str, config: Optional[str], split: str) -> list[dict[str, Any]]:
    """Load a split with ``datasets``, deciding Hub access as the library does (:mod:`zoft.hub`).

    ``datasets``' own offline switch (``HF_DATASETS_OFFLINE``, else ``HF_HUB_OFFLINE``) reads only
    its local cache. Otherwise the Hub is asked first, through the configured proxies and within a
    few seconds, so an offline machine, a gated dataset or a misspelt id is reported before
    ``datasets`` retries. Whatever ``datasets`` itself then raises is kept in the message, beside
    zoft's hint.
    """
    import datasets  # heavy; only a Hub dataset needs it

    from zoft.hub import Access, gated_advice, hub_endpoint, not_found_advice, one_line, probe_repo

    hint = "Download the data elsewhere and pass task.data_dir=/path/to/files (see docs/tasks.md, 'Data': the files each task reads)."
    what = f"dataset {hub_id!r} ({config or 'default'})"
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    if not offline:
        answer = probe_repo(hub_id, "dataset")
        if answer.access is Access.UNREACHABLE:
            raise DataFileError(
                f"cannot load {what}: the Hugging Face Hub ({hub_endpoint()}) cannot be reached from this "
                f"machine ({answer.detail}). {hint} (Set HF_DATASETS_OFFLINE=1 to use the local datasets cache.)")
        if answer.access is Access.GATED:
            raise DataFileError(f"cannot load {what}: {gated_advice(hub_id, 'dataset')} ({answer.detail})")
        if answer.access is Access.NOT_FOUND:
            raise DataFileError(f"cannot load {what}: {not_found_advice(hub_id, 'dataset')} ({answer.detail})")
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # noqa: BLE001 - re-raised with guidance, the library's reason kept
        where = ("HF_DATASETS_OFFLINE=1 (or HF_HUB_OFFLINE=1): only the local datasets cache is read, and "
                 "datasets says: " if offline else "datasets says: ") + one_line(err)
        raise DataFileError(f"cannot load {what} split {split!r}: {where}. {hint}") from None
    return [dict(r) for r in ds]
