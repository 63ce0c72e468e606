"""Save and reload an adapted model.

Methods that only change existing weights (ft, head, linear-probe) save a plain Hugging Face
folder (``save_pretrained``) that ``model.path`` loads directly. Adapter methods (lora, prefix,
prompt) add tensors the architecture does not know: their folder holds ``adapter.safetensors``
(the trainable tensors by name), ``method.json`` (the method config) and the tokenizer; reload it
with :func:`load_adapted` on top of the same base model (the Hub weights, or a tiny model with
the same ``model.init_seed``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from zoft.config.schema import MethodConfig  # used at run time: a saved record becomes a typed config
from zoft.errors import MethodError
from zoft.methods.registry import ADAPTER_METHODS, apply_method

ADAPTER_FILE = "adapter.safetensors"
METHOD_FILE = "method.json"


def save_adapted(model: torch.nn.Module, tokenizer, cfg: MethodConfig, family: str,
                 named: Sequence[tuple[str, torch.nn.Parameter]], folder: str | Path,
                 state_dict: dict | None = None) -> Path:
    """Write the adapted model to ``folder`` (see the module docstring for the layout).

    ``state_dict``: full tensors gathered from FSDP shards (full-model methods only)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.name in ADAPTER_METHODS:
        save_file({n: p.detach().cpu().contiguous() for n, p in named}, str(folder / ADAPTER_FILE))
        record = {"method": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), "family": family}
        (folder / METHOD_FILE).write_text(json.dumps(record, indent=2))
    else:
        model.save_pretrained(folder, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load_adapted(model: torch.nn.Module, folder: str | Path) -> list[tuple[str, torch.nn.Parameter]]:
    """Apply the saved adapter method to the (un-adapted) base ``model`` and load its tensors.

    Returns the trainable (name, parameter) pairs, as ``apply_method`` does.
    """
    folder = Path(folder)
    if not (folder / METHOD_FILE).is_file():
        raise MethodError(f"{folder} has no {METHOD_FILE}: not an adapter folder written by zoft "
                          "(a full model folder loads with model.path instead)")
    record = json.loads((folder / METHOD_FILE).read_text())
    cfg = OmegaConf.merge(OmegaConf.structured(MethodConfig), record["method"])
    cfg.prefix_init_by_real_act = False  # the saved tensors replace any initialisation
    named = apply_method(model, cfg, record["family"])
    state = load_file(str(folder / ADAPTER_FILE))
    missing = sorted({n for n, _ in named} ^ set(state))
    if missing:
        raise MethodError(f"adapter in {folder} does not match the model: differing tensors {missing[:5]}")
    with torch.no_grad():
        for n, p in named:
            p.copy_(state[n].to(device=p.device, dtype=p.dtype))
    return named
