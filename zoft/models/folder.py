"""Check a local model folder (what ``save_pretrained`` writes) before transformers reads it.

transformers reports a bad folder as a traceback from deep inside its loaders (a SafetensorError
"incomplete metadata", an OSError about JSON) or, worse, not at all: a folder without tokenizer
files loads as an empty tokenizer that turns every prompt into zero tokens. These checks are
cheap (they read the JSON files and the safetensors headers, not the tensors), so they run before
any data or model work, and each names the folder, the file and what was expected.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Callable, NoReturn

from zoft.errors import ZoftUserError

# The weights files of a PyTorch checkpoint, in transformers' order of preference.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
# Files any one of which lets AutoTokenizer build the tokenizer (fast, BPE, WordPiece, sentencepiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
# JSON files transformers parses when present; a corrupt one fails the load.
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.json")
RESAVE = "write the folder again with save_pretrained (model and tokenizer), or copy it again"


class ModelFolderError(ZoftUserError, ValueError):
    """A file of a local model folder is missing, truncated or not what it should be."""


def check_model_folder(folder: Path, setting: str) -> None:
    """Raise :class:`ModelFolderError` unless ``folder`` holds a loadable config, weights and
    tokenizer; ``setting`` (``model.path='...'``) starts each message."""
    def fail(message: str) -> NoReturn:
        raise ModelFolderError(f"{setting}: {message}")

    if not isinstance(_load_json(folder / "config.json", fail), dict):
        fail(f"{folder / 'config.json'} is not a JSON object; it must be the config.json that save_pretrained "
             f"writes; {RESAVE}")
    check_weights(folder, fail)
    check_tokenizer(folder, fail)


def missing_files(folder: Path) -> list[str]:
    """The files a loadable model needs that ``folder`` lacks, as names (``config.json``, ``model.safetensors
    or pytorch_model.bin``, a shard an index lists, ``tokenizer.json or vocab.json ...``); empty when none.

    Only presence is checked: a Hub cache folder holds what a download has completed so far, and
    huggingface_hub moves each file into place only once it is whole.
    """
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = next((n for n in WEIGHTS_FILES if n.endswith(".index.json") and (folder / n).is_file()), None)
    if index is not None and not any((folder / n).is_file() for n in WEIGHTS_FILES if not n.endswith(".json")):
        try:
            weight_map = json.loads((folder / index).read_text(encoding="utf-8")).get("weight_map") or {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            weight_map = {}
        missing += [f"{shard} (a shard {index} lists)" for shard in sorted(set(weight_map.values()))
                    if not (folder / shard).is_file()]
    elif index is None and not any((folder / n).is_file() for n in WEIGHTS_FILES):
        missing.append(f"the weights ({' or '.join(WEIGHTS_FILES[::2])}, or a sharded *.index.json with its shards)")
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        missing.append(f"the tokenizer ({', '.join(TOKENIZER_FILES[:4])} ...)")
    elif (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file() \
            and not (folder / "merges.txt").is_file():
        missing.append("merges.txt (a BPE tokenizer saved as vocab.json needs it)")
    return missing


def check_weights(folder: Path, fail: Callable[[str], NoReturn]) -> None:
    """The first weights file transformers would load is there and complete."""
    name = next((n for n in WEIGHTS_FILES if (folder / n).is_file()), None)
    if name is None:
        fail(f"no weights in {folder}: expected {' or '.join(WEIGHTS_FILES[::2])} (or a sharded "
             f"*.index.json with its shards); {RESAVE}")
    if name.endswith(".index.json"):
        index = _load_json(folder / name, fail)
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards:
            fail(f"{folder / name} lists no shards (no \"weight_map\"); {RESAVE}")
        for shard in shards:
            if not (folder / shard).is_file():
                fail(f"{folder / shard} is missing: {name} lists it as a shard of the weights; {RESAVE}")
            _check_weights_file(folder / shard, fail)
    else:
        _check_weights_file(folder / name, fail)


def _check_weights_file(path: Path, fail: Callable[[str], NoReturn]) -> None:
    if path.suffix == ".safetensors":
        check_safetensors(path, fail)
    else:
        check_torch_file(path, fail)


def check_safetensors(path: Path, fail: Callable[[str], NoReturn]) -> None:
    """A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte
    range, then the tensors: a cut file is shorter than the largest range's end."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            fail(f"{path} is truncated ({size} bytes): not even a safetensors header; {RESAVE}")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            fail(f"{path} is truncated: its header needs {8 + length} bytes but the file has {size} "
                 f"(an interrupted download or copy?); {RESAVE}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            fail(f"{path} is not a safetensors file (its header is not JSON); {RESAVE}")
    if not isinstance(header, dict):
        fail(f"{path} is not a safetensors file (its header is not a JSON object); {RESAVE}")
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets") or ()) == 2]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        fail(f"{path} is truncated: its header describes {expected} bytes of tensors but the file has {size} "
             f"(an interrupted download or copy?); {RESAVE}")


def check_torch_file(path: Path, fail: Callable[[str], NoReturn]) -> None:
    """``torch.save`` writes a zip archive whose directory is at its end: a cut file has none.
    (Files of the legacy pre-1.6 format are left to torch.)"""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"PK" and not zipfile.is_zipfile(path):
        fail(f"{path} is truncated: the zip archive torch.save writes has lost its end (an interrupted "
             f"download or copy?); {RESAVE}")
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # neither zip nor a legacy pickle
        fail(f"{path} is not a PyTorch weights file (it starts with {magic!r}); {RESAVE}")


def check_tokenizer(folder: Path, fail: Callable[[str], NoReturn]) -> None:
    """At least one tokenizer file, and every tokenizer JSON file parses."""
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        fail(f"no tokenizer files in {folder}: expected tokenizer.json (or vocab.json with merges.txt, vocab.txt, "
             "tokenizer.model); save them there with tokenizer.save_pretrained(folder)")
    if (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file() \
            and not (folder / "merges.txt").is_file():
        fail(f"{folder / 'merges.txt'} is missing: a BPE tokenizer saved as vocab.json needs it; "
             "save the tokenizer with tokenizer.save_pretrained(folder)")
    for name in TOKENIZER_JSON:
        if (folder / name).is_file():
            _load_json(folder / name, fail)


def _load_json(path: Path, fail: Callable[[str], NoReturn]):
    """The parsed JSON of ``path``; a missing, binary or cut file fails naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path} is missing; {RESAVE}")
    except UnicodeDecodeError:
        fail(f"{path} is not JSON text (not UTF-8: a binary file?); {RESAVE}")
    except json.JSONDecodeError as err:
        fail(f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}; a truncated or "
             f"edited file?); {RESAVE}")
