"""Tied input/output embeddings, and untying them.

RoBERTa's MLM decoder: Hugging Face's ``RobertaForMaskedLM`` ties ``lm_head.decoder.weight`` to
the input word embeddings, while the MeZO/LM-BFF code (medium_models/src/models.py,
``RobertaModelForPromptFinetuning``) keeps it as a separate parameter initialised from the
checkpoint (``--tie_emb`` ties it). Full-parameter MeZO and FT then move the two matrices
independently, and linear probing writes the decoder's label-word rows without changing the
input embeddings of those words. zoft follows the original: ``model.tie_word_embeddings=null``
unties RoBERTa's MLM decoder; ``true`` keeps Hugging Face's tie.
"""

from __future__ import annotations

from typing import Optional

import torch

from zoft.models.families import FAMILIES


def untie_output_embeddings(model: torch.nn.Module) -> bool:
    """Give the output projection its own copy of the tied input embedding.

    Returns whether it was tied. Afterwards ``save_pretrained``/``from_pretrained`` keep the two
    apart (``tie_word_embeddings=False`` in the config).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or emb is None or head.weight is not emb.weight:
        return False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    model.config.tie_word_embeddings = False
    text_config = getattr(model.config, "get_text_config", None)
    if callable(text_config):
        text_config().tie_word_embeddings = False
    return True


def unties_by_default(family: str, kind: str, tie: Optional[bool]) -> bool:
    """Whether a loaded model's output embeddings are untied: RoBERTa's MLM decoder is, as in the
    original, unless ``model.tie_word_embeddings=true``; other models keep their checkpoint's tie
    unless ``model.tie_word_embeddings=false``."""
    if tie is not None:
        return not tie
    known = FAMILIES.get(family)
    return known is not None and known.unties_masked_head and kind == "masked"
