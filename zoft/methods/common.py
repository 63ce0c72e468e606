"""Helpers shared by the parameterisation methods: freezing, module lookup, family checks."""

from __future__ import annotations

import torch

from zoft.models.tying import untie_output_embeddings

from zoft.errors import ZoftUserError

Named = list[tuple[str, torch.nn.Parameter]]


class MethodError(ZoftUserError, ValueError):
    """A method cannot be applied to this model (wrong family, missing modules, bad option)."""


def freeze_all(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def trainable(model: torch.nn.Module) -> Named:
    """Trainable (name, parameter) pairs in ``named_parameters`` order (tied weights once)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def head_of(model: torch.nn.Module) -> torch.nn.Linear:
    """The final vocabulary projection (``lm_head`` / RoBERTa's ``lm_head.decoder``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        raise MethodError(f"{type(model).__name__} has no linear vocabulary projection (get_output_embeddings)")
    return head


def untie_head(model: torch.nn.Module) -> bool:
    """Give the LM head its own copy of the (tied) input embedding; returns whether it was tied.

    Afterwards changing the head leaves the input embedding alone, and ``save_pretrained`` /
    ``from_pretrained`` keep the two apart (``tie_word_embeddings=False``).
    """
    head_of(model)  # a clear error when the model has no vocabulary projection
    return untie_output_embeddings(model)
