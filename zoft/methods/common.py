"""Helpers shared by the parameterisation methods: freezing, module lookup, family checks."""

from __future__ import annotations

import torch

from zoft.models.heads import head_of
from zoft.models.tying import untie_output_embeddings

Named = list[tuple[str, torch.nn.Parameter]]


def freeze_all(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def trainable(model: torch.nn.Module) -> Named:
    """Trainable (name, parameter) pairs in ``named_parameters`` order (tied weights once)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def untie_head(model: torch.nn.Module) -> bool:
    """Give the LM head its own copy of the (tied) input embedding; returns whether it was tied.

    Afterwards changing the head leaves the input embedding alone, and ``save_pretrained`` /
    ``from_pretrained`` keep the two apart (``tie_word_embeddings=False``).
    """
    head_of(model)  # a clear error when the model has no vocabulary projection
    return untie_output_embeddings(model)
