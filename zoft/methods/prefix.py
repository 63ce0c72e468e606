"""Prefix tuning without reparameterisation (the original's large_models/prefix.py and medium_models' prefix code).

Every attention layer gets ``num_prefix`` trainable key and value vectors, each of width
``kv_heads * head_dim`` (= hidden for OPT, RoBERTa and LLaMA without grouped-query attention):
``layers x 2 x num_prefix x hidden`` parameters in all. They are written into a fresh
``DynamicCache`` before every forward (transformers 5 takes a Cache, not tuples, and the cache is
extended in place by the forward, so it is never reused). Real tokens see the prefix in every
layer, keep their own positions (0, 1, ... as without a prefix), and the attention mask gets
``num_prefix`` ones prepended. The model keeps its class and forward signature; everything is a
forward pre-hook, so every objective and ``generate`` work unchanged.

Initialisation (``method.prefix_init_by_real_act``, the paper's): run the model once on
``num_prefix`` token ids drawn uniformly from the vocabulary (torch's global RNG) and copy each
layer's keys/values; otherwise standard normal.

On a sequence classifier (``model.kind=seq-cls``) the freshly initialised task head trains too,
as peft's ``SEQ_CLS`` task type does (``modules_to_save``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import inspect

import torch
from transformers import DynamicCache

from zoft.errors import MethodError
from zoft.methods.common import Named, freeze_all, trainable
from zoft.methods.registry import register_method
from zoft.methods.seqcls import unfreeze_head
from zoft.models.families import FAMILIES
from zoft.models.heads import is_seq_cls

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig

ATTR = "prefix_kv"  # trainable names: prefix_kv.keys.<layer>, prefix_kv.values.<layer>


def _geometry(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head_dim) of a decoder or encoder config."""
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, kv_heads, head_dim


def causal_positions(real_mask: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
    """0, 1, ... over the real (unmasked) tokens, as the objectives pass them; (b, T)."""
    return (real_mask.long().cumsum(-1) - 1).clamp(min=0)


def roberta_positions(padding_idx: int):
    def positions(real_mask: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
        # RoBERTa numbers real tokens padding_idx+1, padding_idx+2, ... and pads padding_idx.
        mask = real_mask.long() if input_ids is None else (input_ids != padding_idx).long()
        if mask.shape[1] != real_mask.shape[1]:
            mask = real_mask.long()
        return mask.cumsum(-1) * mask + padding_idx
    return positions


class PrefixKV(torch.nn.Module):
    """Per-layer prefix keys and values, each (num_prefix, kv_heads * head_dim)."""

    def __init__(self, layers: int, num_prefix: int, kv_heads: int, head_dim: int, dtype, device) -> None:
        super().__init__()
        self.num_prefix, self.kv_heads, self.head_dim = num_prefix, kv_heads, head_dim
        shape = (num_prefix, kv_heads * head_dim)
        self.keys = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(shape, dtype=dtype, device=device)) for _ in range(layers)])
        self.values = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(shape, dtype=dtype, device=device)) for _ in range(layers)])

    def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        # (P, kv_heads*head_dim) -> (batch, kv_heads, P, head_dim), the cache layout.
        x = x.view(self.num_prefix, self.kv_heads, self.head_dim).permute(1, 0, 2)
        return x.unsqueeze(0).expand(batch, -1, -1, -1)

    def fill(self, cache: DynamicCache, batch: int) -> DynamicCache:
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(self._heads(k, batch), self._heads(v, batch), layer)
        cache._zoft_prefix = True
        return cache

    @torch.no_grad()
    def copy_from_cache(self, cache: DynamicCache) -> None:
        """Copy a cache of exactly ``num_prefix`` tokens (batch 1) into the parameters."""
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            ck, cv = cache.layers[layer].keys[0], cache.layers[layer].values[0]  # (kv_heads, P, hd)
            k.copy_(ck.permute(1, 0, 2).reshape_as(k))
            v.copy_(cv.permute(1, 0, 2).reshape_as(v))


def _accepts(model: torch.nn.Module, arg: str) -> bool:
    return arg in inspect.signature(model.forward).parameters


def install_prefix(model: torch.nn.Module, prefix: PrefixKV, positions) -> None:
    """Register ``prefix`` on ``model`` and the pre-hook that feeds it to every forward."""
    model.add_module(ATTR, prefix)
    pass_cache_position = _accepts(model, "cache_position")
    p = prefix.num_prefix

    def pre_hook(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            raise MethodError("prefix tuning needs input_ids or inputs_embeds")
        batch, q = ref.shape[0], ref.shape[1]
        cache = kwargs.get("past_key_values")
        if cache is None:
            cache = prefix.fill(DynamicCache(), batch)
        elif not getattr(cache, "_zoft_prefix", False):
            if cache.get_seq_length() != 0:
                raise MethodError("prefix tuning got a non-empty cache it did not fill; pass none")
            prefix.fill(cache, batch)  # generate() hands an empty cache to its first forward
        past = cache.get_seq_length()  # prefix + earlier real tokens
        real_mask = kwargs.get("attention_mask")
        if real_mask is None:
            real_mask = torch.ones(batch, past - p + q, dtype=torch.long, device=ref.device)
        if real_mask.dim() != 2:
            raise MethodError("prefix tuning needs a 2-D attention_mask (batch, tokens)")
        ones = torch.ones(batch, p, dtype=real_mask.dtype, device=real_mask.device)
        kwargs["attention_mask"] = torch.cat([ones, real_mask], dim=1)
        if kwargs.get("position_ids") is None:
            ids = input_ids if input_ids is not None and input_ids.shape[1] == real_mask.shape[1] else None
            kwargs["position_ids"] = positions(real_mask, ids)[:, -q:]
        if pass_cache_position:
            kwargs["cache_position"] = torch.arange(past, past + q, device=ref.device)
        kwargs["past_key_values"] = cache
        if input_ids is not None and args:
            args, kwargs["input_ids"] = (), input_ids
        return args, kwargs

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)


@torch.no_grad()
def real_activation_cache(model: torch.nn.Module, num_prefix: int) -> DynamicCache:
    """Keys/values of ``num_prefix`` uniformly drawn vocabulary tokens (no BOS), batch 1."""
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, num_prefix), device=model.get_input_embeddings().weight.device)
    cache = DynamicCache()
    model(input_ids=ids, past_key_values=cache, use_cache=True)
    return cache


@register_method("prefix", adapter=True)
def apply_prefix(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Add ``num_prefix`` trainable key/value prefixes per layer; everything else is frozen
    (except the task head of a sequence classifier, which trains with the prefix)."""
    if cfg.num_prefix < 1:
        raise MethodError(f"method.num_prefix={cfg.num_prefix} must be >= 1")
    if hasattr(model, ATTR):
        raise MethodError("the model already has a prefix")
    freeze_all(model)
    layers, kv_heads, head_dim = _geometry(model.config)
    weight = model.get_input_embeddings().weight
    cache = None
    if cfg.prefix_init_by_real_act:
        # Drawn first, so the tokens are the first draw from the global RNG after seeding.
        was_training = model.training
        model.eval()
        cache = real_activation_cache(model, cfg.num_prefix)
        model.train(was_training)
    prefix = PrefixKV(layers, cfg.num_prefix, kv_heads, head_dim, weight.dtype, weight.device)
    if cache is not None:
        prefix.copy_from_cache(cache)
    from_pad = FAMILIES[family].positions == "roberta"
    positions = roberta_positions(model.config.pad_token_id) if from_pad else causal_positions
    install_prefix(model, prefix, positions)
    if is_seq_cls(model):
        unfreeze_head(model)
    return trainable(model)
