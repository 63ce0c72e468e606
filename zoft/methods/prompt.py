"""Prompt tuning (Lester et al., 2021), an extra beyond the paper: ``num_prefix`` trainable input
embeddings are prepended to every sequence; everything else is frozen.

peft's prompt tuning works only through its ``PeftModel`` wrapper, whose forward takes neither
``position_ids`` nor ``logits_to_keep`` by name; zoft instead prepends the soft tokens with a
forward pre-hook (input_ids -> inputs_embeds) and strips their positions from the logits with a
forward hook, so every objective sees logits aligned with its own tokens. The soft tokens are
initialised from the embeddings of uniformly drawn vocabulary tokens (peft's "random" init).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from zoft.errors import MethodError
from zoft.methods.common import Named, freeze_all, trainable
from zoft.methods.registry import register_method
from zoft.models.families import FAMILIES

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig

ATTR = "soft_prompt"  # trainable name: soft_prompt


def install_soft_prompt(model: torch.nn.Module, soft: torch.nn.Parameter, roberta_pad: int | None) -> None:
    model.register_parameter(ATTR, soft)
    n = soft.shape[0]
    embed = model.get_input_embeddings()

    def pre_hook(module, args, kwargs):
        input_ids = kwargs.pop("input_ids", args[0] if args else None)
        if input_ids is None:
            raise MethodError("prompt tuning needs input_ids")
        if kwargs.get("past_key_values") is not None:
            raise MethodError("prompt tuning does not support cached decoding; call generate(use_cache=False)")
        batch = input_ids.shape[0]
        # The model's attribute, not the captured tensor: a zeroth-order optimizer's shadow
        # perturbation and forward gradient's functional_call substitute it during the forward.
        current = getattr(module, ATTR)
        embeds = torch.cat([current.unsqueeze(0).expand(batch, -1, -1), embed(input_ids)], dim=1)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        mask = torch.cat([torch.ones(batch, n, dtype=mask.dtype, device=mask.device), mask], dim=1)
        kwargs["attention_mask"] = mask
        if roberta_pad is not None:
            # Soft tokens take the first positions; real tokens follow (padding stays padding_idx).
            kwargs["position_ids"] = mask.long().cumsum(-1) * mask.long() + roberta_pad
        else:
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        kwargs["inputs_embeds"] = embeds
        kwargs.pop("cache_position", None)
        return (), kwargs

    def post_hook(module, args, kwargs, output):
        logits = getattr(output, "logits", None)
        if logits is not None and logits.shape[1] == kwargs["inputs_embeds"].shape[1]:
            output.logits = logits[:, n:]  # drop the soft-token positions
        return output

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    model.register_forward_hook(post_hook, with_kwargs=True)


@register_method("prompt", adapter=True)
def apply_prompt(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Prepend ``num_prefix`` trainable soft-token embeddings to every input."""
    if cfg.num_prefix < 1:
        raise MethodError(f"method.num_prefix={cfg.num_prefix} must be >= 1")
    freeze_all(model)
    weight = model.get_input_embeddings().weight
    ids = torch.randint(0, weight.shape[0], (cfg.num_prefix,), device=weight.device)
    soft = torch.nn.Parameter(weight.detach()[ids].clone())
    from_pad = FAMILIES[family].positions == "roberta"
    install_soft_prompt(model, soft, model.config.pad_token_id if from_pad else None)
    return trainable(model)
