"""The model families zoft's methods support: one table (data) that every method reads.

A family is a set of Hugging Face architectures that the methods treat alike. Its row says which
``model_type`` values of a checkpoint's ``config.json`` belong to it, which model kinds zoft
loads it as, and what each method needs from it:

* ``lora_targets``: the modules LoRA adapts by default (the attention's query and value
  projections, as the paper; Phi-3 fuses q/k/v into one ``qkv_proj``, so all three are adapted);
* ``positions``: how real tokens behind a prefix or soft prompt are numbered (``from_zero``: 0, 1,
  ... over the real tokens; ``roberta``: ``padding_idx + 1``, ...);
* ``soft_prompt``: whether prompt tuning is supported;
* ``head``: the vocabulary projection, the module head tuning trains and whose rows linear
  probing fits on its input features (``get_output_embeddings()`` of the loaded model);
* ``unties_masked_head``: the original untied RoBERTa's MLM decoder from the input embedding.

Prefix tuning needs only the standard key/value cache layout (layers x key/value heads x
head_dim, read from the config), which every family here has. Architectures left out: those
whose attention mixes sliding-window and global layers (Gemma 2/3), where left padding changes
which real tokens a sliding layer sees, and encoder-decoders.

Kept free of torch and transformers: validation reads a folder's family in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from zoft.errors import ZoftUserError

class UnsupportedModelError(ZoftUserError, ValueError):
    """A checkpoint of an architecture no family of the table covers, or of another family than stated."""


# model.family=auto: the family is read from the checkpoint's config.json (model=hf-causal).
AUTO = "auto"
PACKAGE_PREFIX = "pkg:"


@dataclass(frozen=True)
class Family:
    """One row of :data:`FAMILIES` (see the module docstring for the fields)."""

    name: str
    model_types: tuple[str, ...]
    kinds: tuple[str, ...]
    lora_targets: tuple[str, ...]
    positions: str = "from_zero"
    soft_prompt: bool = True
    head: str = "lm_head"
    unties_masked_head: bool = False


_DECODER = ("causal",)
_QV = ("q_proj", "v_proj")
_ENCODER = ("masked", "seq-cls", "encoder")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("opt", ("opt",), _DECODER, _QV),
    Family("llama", ("llama",), _DECODER, _QV),  # LLaMA 1/2/3 (and Llama-architecture checkpoints)
    Family("mistral", ("mistral",), _DECODER, _QV),
    Family("qwen2", ("qwen2",), _DECODER, _QV),  # Qwen2 and Qwen2.5
    Family("qwen3", ("qwen3",), _DECODER, _QV),
    Family("gemma", ("gemma",), _DECODER, _QV),  # Gemma 1
    Family("phi", ("phi",), _DECODER, _QV),  # Phi-1/1.5/2 (its head has a bias)
    Family("phi3", ("phi3",), _DECODER, ("qkv_proj",)),  # Phi-3/3.5/4-mini: fused q/k/v projection
    Family("roberta", ("roberta",), _ENCODER, ("query", "value"), positions="roberta", head="lm_head.decoder",
           unties_masked_head=True),
    Family("bert", ("bert",), _ENCODER, ("query", "value"), soft_prompt=False, head="cls.predictions.decoder"),
)}
MODEL_TYPES: dict[str, str] = {t: f.name for f in FAMILIES.values() for t in f.model_types}

# What each method needs of a family (methods absent here run on every family).
_METHOD_NEEDS = {
    "lora": lambda f: bool(f.lora_targets),
    "prefix": lambda f: True,  # the standard key/value cache layout
    "prompt": lambda f: f.soft_prompt,
}


def method_families(method: str) -> Optional[tuple[str, ...]]:
    """The families ``method`` supports (None: every family)."""
    needs = _METHOD_NEEDS.get(method)
    return None if needs is None else tuple(name for name, f in FAMILIES.items() if needs(f))


def family_of_model_type(model_type: Optional[str]) -> Optional[str]:
    """The family of a config.json ``model_type`` (None when zoft does not support it)."""
    return MODEL_TYPES.get(model_type or "")


def supported_families_text(kind: Optional[str] = None) -> str:
    """The names of the families that load as ``kind`` (all when None), comma-separated."""
    return ", ".join(name for name, f in FAMILIES.items() if kind is None or kind in f.kinds)


def model_label(path: str) -> str:
    """A run's model name from ``model.path``: the Hub id's or folder's last part
    (``Qwen/Qwen3-0.6B`` -> ``Qwen3-0.6B``, ``/models/my-mistral/`` -> ``my-mistral``)."""
    return Path(path.rstrip("/").rstrip(os.sep)).name or path


def looks_local(path: str) -> bool:
    """Whether ``model.path`` names a folder (rather than a Hub id)."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def read_model_type(path: Optional[str]) -> Optional[str]:
    """config.json's ``model_type`` of a local folder, or of a Hub id already in the local
    Hugging Face cache; None when it cannot be read without loading or downloading anything."""
    if not path:
        return None
    if path.startswith(PACKAGE_PREFIX):
        config = _package_file(path, "config.json")
    elif looks_local(path):
        config = Path(path).expanduser() / "config.json"
    else:
        config = _cached_hub_file(path, "config.json")
    if config is None or not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None  # a damaged file: the folder check reports it with the whole story
    return value if isinstance(value, str) else None


def _package_file(path: str, filename: str) -> Optional[Path]:
    """``filename`` in the folder ``pkg:<module>/<folder>`` names, found without importing it."""
    module, _, sub = path[len(PACKAGE_PREFIX):].strip("/").partition("/")
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / sub / filename


def _cached_hub_file(repo_id: str, filename: str) -> Optional[Path]:
    """The cached copy of a Hub file (huggingface_hub's cache lookup: no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - a malformed id or cache: "not readable", the loader says more
        return None
    return Path(hit) if isinstance(hit, str) else None


def family_from_path(default: str, path: Optional[str]) -> str:
    """``model.family`` of a preset that may be pointed at any checkpoint: ``default`` while no
    path is set; else the family of config.json's ``model_type`` (the raw ``model_type`` when zoft
    does not support it, so validation names it); ``auto`` when config.json cannot be read yet
    (a Hub id not in the cache: the loader decides from the downloaded config)."""
    if path is None:
        return default
    model_type = read_model_type(path)
    if model_type is None:
        return AUTO
    return family_of_model_type(model_type) or model_type


def loaded_family(family: str, model_type: Optional[str], setting: str) -> str:
    """The family of a loaded checkpoint (``model_type`` from its config): ``family`` when stated
    and consistent, the table's family of ``model_type`` for ``auto``; raises
    :class:`UnsupportedModelError` otherwise. Models built in code (no path) keep ``family``."""
    actual = family_of_model_type(model_type)
    if family == AUTO and actual is None:
        raise UnsupportedModelError(
            f"{setting} is a {model_type!r} model (config.json's model_type), which zoft's methods do not "
            f"support; supported families: {supported_families_text()} (see zoft/models/families.py)")
    if family == AUTO:
        return actual
    if actual is not None and actual != family:
        raise UnsupportedModelError(
            f"model.family={family!r} but {setting} holds a {model_type!r} model (family {actual}); "
            f"set model.family={actual} or auto")
    return family
