"""Reading a data file's bytes, refusing binary files up front (one rule for every reader)."""

from __future__ import annotations

from pathlib import Path

from zoft.errors import ZoftUserError


def read_text_bytes(path: Path, error: type[ZoftUserError], expected: str) -> bytes:
    """The file's bytes; a file with NUL bytes is ``error`` naming the file. Text files never hold
    NUL bytes; binary files (and UTF-16 text) almost always do. ``expected`` says what the file
    should be (".jsonl, .tsv or .json", ...)."""
    raw = Path(path).read_bytes()
    if b"\x00" in raw:
        raise error(f"{path}: a binary file, not text (it contains NUL bytes); {expected}")
    return raw
