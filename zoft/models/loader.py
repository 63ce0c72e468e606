"""Load a model and its tokenizer from a Hub id, a local folder, or build a tiny one in code."""

from __future__ import annotations

from zoft.errors import ZoftUserError

import contextlib
import logging
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

from zoft.hub import gated_advice
from zoft.models.families import loaded_family
from zoft.models.folder import ModelFolderError
# check_model_available, package_folder and ModelUnavailableError are imported from here by callers
from zoft.models.source import (  # noqa: F401 - re-exported
    PACKAGE_PREFIX,
    ModelUnavailableError,
    check_model_available,
    check_source,
    package_folder,
)
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


@contextlib.contextmanager
def _load_errors(cfg: ModelConfig, source: str, what: str) -> Iterator[None]:
    """Turn transformers' failure to read ``source`` into one ModelFolderError.

    :func:`zoft.models.folder.check_model_folder` has already caught the usual damage (bad
    JSON, missing or cut weights, no tokenizer); this names the folder for whatever else a
    loader trips on (e.g. a config.json of an architecture this transformers does not know).
    Running out of memory is not the folder's fault and propagates unchanged. For a Hub id, a
    gated repository (transformers wraps huggingface_hub's GatedRepoError in an OSError) is named
    with what to do about it, and the message speaks of the repository, not of a folder.
    """
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError, ZoftUserError):
        raise
    except Exception as err:  # noqa: BLE001 - re-raised as a user error naming the folder
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        if Path(source).expanduser().is_dir():
            raise ModelFolderError(
                f"model.path={cfg.path!r}: transformers cannot load the {what} from {source}: "
                f"{type(err).__name__}: {detail} (expected a folder written by save_pretrained, of a model of "
                f"kind {cfg.kind!r})"
            ) from None
        if _caused_by_gated_repo(err):
            raise ModelUnavailableError(f"model {cfg.name!r}: {gated_advice(source)} ({detail})") from None
        raise ModelUnavailableError(
            f"model.path={cfg.path!r}: transformers cannot load the {what} of the Hub repository {source!r}: "
            f"{type(err).__name__}: {detail} (expected a model of kind {cfg.kind!r})"
        ) from None


def _caused_by_gated_repo(err: BaseException) -> bool:
    """Whether huggingface_hub's GatedRepoError is ``err`` or in its chain of causes."""
    from huggingface_hub.errors import GatedRepoError

    seen: BaseException | None = err
    for _ in range(10):  # a chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, GatedRepoError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        source, local_only = check_source(cfg)
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
    # model.family=auto (model=hf-causal) becomes the family of the checkpoint's model_type.
    family = cfg.family if cfg.path is None else loaded_family(
        cfg.family, getattr(model.config, "model_type", None), f"model.path={cfg.path!r}")
    if unties_by_default(family, cfg.kind, cfg.tie_word_embeddings):
        untie_output_embeddings(model)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, family=family, kind=cfg.kind)
