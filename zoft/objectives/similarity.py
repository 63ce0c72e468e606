"""The ``similarity`` objective: a prompt for encoders without an MLM head (sentence encoders).

Each class c has a description, its label text (by default the task template's own words with
the label word in the mask and the input left out: SST-2's "It was great." / "It was terrible.",
see :func:`zoft.lmbff.template.label_texts`; ``task.label_texts`` overrides them). The class
logits are the cosine similarity of the input's sentence feature to each label text's::

    logits_c = scale * cos(pool(x), pool(text_c)) / tau + bias_c

``pool`` is ``mean`` (the mean of the last hidden states over the attention mask, what
sentence-transformers encoders are trained for; the default) or ``cls`` (the first token's last
hidden state), ``tau`` is ``task.similarity_tau`` (0.05), and ``scale`` (1) and ``bias`` (0) are
the :class:`SimilarityHead`, so at the start the logits are exactly cos / tau. The label texts
are appended to every batch and go through the current weights in the same forward pass, so a
zeroth-order perturbation moves both sides of the cosine consistently and a MeZO step stays two
forward passes.

Linear probing replaces the label texts by a fitted Linear on the normalised features, whose
start is the label-text embeddings (weight = normalise(pool(text_c)) * scale / tau, bias = bias):
the zero-shot classifier exactly (see :mod:`zoft.methods.linear_probe`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from zoft.errors import MethodError
from zoft.lmbff.template import EncodedPrompt, encode_plain
from zoft.models.heads import SIMILARITY_HEAD_ATTR, SimilarityHead, similarity_head
from zoft.objectives.base import batches
from zoft.objectives.mlm import LabelBatch, LabelItem, LabelScorer, _model_inputs, _upcast, collate


def attach_similarity_head(model: torch.nn.Module, num_classes: int) -> SimilarityHead:
    """Give ``model`` its :class:`SimilarityHead` (once; before the method decides what trains)."""
    head = getattr(model, SIMILARITY_HEAD_ATTR, None)
    if head is None:
        param = next(model.parameters())
        head = SimilarityHead(num_classes, model.config.hidden_size).to(device=param.device, dtype=param.dtype)
        model.add_module(SIMILARITY_HEAD_ATTR, head)
    elif head.bias.numel() != num_classes:
        raise MethodError(f"the model's similarity head has {head.bias.numel()} classes but the task has {num_classes}")
    return head


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence features (rows, H) from last hidden states (rows, T, H): the mean over the real
    tokens, or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (rows, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _pad_to(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value)


def stack_batches(a: LabelBatch, b: LabelBatch, pad_id: int) -> LabelBatch:
    """Rows of ``a`` then rows of ``b`` in one right-padded batch."""
    width = max(a.input_ids.shape[1], b.input_ids.shape[1])
    return LabelBatch(
        input_ids=torch.cat([_pad_to(a.input_ids, width, pad_id), _pad_to(b.input_ids, width, pad_id)]),
        attention_mask=torch.cat([_pad_to(a.attention_mask, width, 0), _pad_to(b.attention_mask, width, 0)]),
        token_type_ids=torch.cat([_pad_to(a.token_type_ids, width, 0), _pad_to(b.token_type_ids, width, 0)]),
        mask_pos=torch.cat([a.mask_pos, b.mask_pos]),
        labels=torch.cat([a.labels, b.labels]),
    )


class SimilarityObjective(LabelScorer):
    """Cosine similarity to the label texts (``similarity``); see the module docstring."""

    def __init__(self, encode_text, label_texts: Sequence[str], tau: float, pooling: str, **kw) -> None:
        super().__init__(**kw)
        self.label_texts = list(label_texts)
        self.tau = float(tau)
        self.pooling = pooling
        text_items = [LabelItem(None, enc.input_ids, enc.token_type_ids, None, c)
                      for c, enc in enumerate(encode_text(t) for t in self.label_texts)]
        self.texts = collate(text_items, self.pad_id, self.device)  # (classes, T_text)

    def pooled(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        """Sentence features of every row of ``batch``: (rows, H)."""
        hidden = model(**_model_inputs(model, batch))[0]  # (rows, T, H)
        return pool_hidden(hidden, batch.attention_mask, self.pooling)

    def class_logits(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        head = similarity_head(model)
        rows = batch.input_ids.shape[0]
        if head.fitted:  # linear probing replaced the label texts
            return _upcast(head(F.normalize(self.pooled(model, batch), dim=-1), None, self.tau))
        feats = F.normalize(self.pooled(model, stack_batches(batch, self.texts, self.pad_id)), dim=-1)
        x, texts = feats[:rows], feats[rows:]  # (B, H), (classes, H): one forward for both
        return _upcast(head(x, texts, self.tau))

    @torch.inference_mode()
    def label_text_features(self, model: torch.nn.Module) -> torch.Tensor:
        """Normalised pooled features of the label texts at the current weights: (classes, H)."""
        return F.normalize(self.pooled(model, self.texts), dim=-1)

    @torch.inference_mode()
    def probe_start(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear probe's start, (classes, H) and (classes,): the Linear on normalised
        features that reproduces the current similarity logits."""
        head = similarity_head(model)
        return self.label_text_features(model) * head.scale / self.tau, head.bias.detach().clone()

    @torch.inference_mode()
    def features(self, model: torch.nn.Module, items: Sequence[LabelItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear probing's data: normalised pooled features (N, H) and class indices (N,)."""
        feats, targets = [], []
        for chunk in batches(items, 32):
            batch = collate(chunk, self.pad_id, self.device)
            feats.append(F.normalize(self.pooled(model, batch), dim=-1).cpu())
            targets.append(batch.labels.cpu())
        return torch.cat(feats), torch.cat(targets)


def build_similarity_objective(tokenizer, settings, max_len: int, tau: float, pooling: str, **common):
    """The objective for an LM-BFF task's ``settings`` (its label texts)."""
    def encode(sentences) -> EncodedPrompt:
        return encode_plain(tokenizer, sentences, max_len)

    return SimilarityObjective(encode_text=lambda text: encode([text]), label_texts=settings.label_texts,
                               tau=tau, pooling=pooling, encode=encode, label_words=settings.label_words, **common)
