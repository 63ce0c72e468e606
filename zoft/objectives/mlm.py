"""Objectives of the masked-LM (LM-BFF) family, as the original's medium_models/src/models.py and src/trainer.py:

* ``mlm-prompt``: the prompt is rendered with the task's template; the encoder's hidden state at
  the ``<mask>`` position goes through the MLM head and the logits of the label words are the
  class logits. Loss: cross-entropy over them; prediction: argmax.
* ``cls-head``: no template; the standard sequence-classification head on the first token
  (``model.kind=seq-cls``), the paper's no-prompt ablation. Works for any encoder (BERT family).
* ``similarity``: no MLM head and no task head (``model.kind=encoder``, sentence encoders):
  cosine similarity of the input's pooled features to the label texts' (zoft.objectives.similarity).
* ``metric``: for MeZO only, loss = -(accuracy of the batch) under any scorer above
  (non-differentiable objective, ``--optimize_acc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from zoft.lmbff.settings import MASKED_OBJECTIVES, natural_objective, prompt_settings
from zoft.lmbff.template import EncodedPrompt, PromptEncoder, encode_plain
from zoft.metrics import classification_metrics
from zoft.models.heads import HeadInput, classification_head, head_input_features, masked_features
from zoft.objectives.base import BatchEval, Objective, batches
from zoft.objectives.metric import MetricObjective
from zoft.examples import Example


@dataclass(frozen=True)
class LabelItem:
    """One encoded example: ids, segment ids, mask index (None without template), gold class."""

    example: Example
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    mask_pos: Optional[int]
    label: int


@dataclass
class LabelBatch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    token_type_ids: torch.Tensor  # (B, T)
    mask_pos: torch.Tensor  # (B,); 0 when there is no mask
    labels: torch.Tensor  # (B,)


def collate(items: Sequence[LabelItem], pad_id: int, device: torch.device) -> LabelBatch:
    width = max(len(it.input_ids) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    types = torch.zeros((len(items), width), dtype=torch.long)
    for r, it in enumerate(items):
        ids[r, : len(it.input_ids)] = torch.tensor(it.input_ids)
        attn[r, : len(it.input_ids)] = 1
        types[r, : len(it.token_type_ids)] = torch.tensor(it.token_type_ids)
    return LabelBatch(
        input_ids=ids.to(device), attention_mask=attn.to(device), token_type_ids=types.to(device),
        mask_pos=torch.tensor([it.mask_pos or 0 for it in items], device=device),
        labels=torch.tensor([it.label for it in items], device=device),
    )


def _model_inputs(model: torch.nn.Module, batch: LabelBatch) -> dict:
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    type_vocab = getattr(getattr(model, "config", None), "type_vocab_size", 1) or 1
    if type_vocab > 1:  # BERT-style segments; RoBERTa has a single segment embedding
        inputs["token_type_ids"] = batch.token_type_ids.clamp(max=type_vocab - 1)
    return inputs


def mask_logits(model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
    """Vocabulary logits at each row's mask position: (B, vocab).

    The MLM head runs on the B mask states only, not on all B x T positions (for RoBERTa-large
    that saves a (64 x 128 x 50265) float tensor per forward pass).
    """
    head = getattr(model, "lm_head", None)
    if head is None:
        head = getattr(model, "cls", None)  # BERT's MLM head
    base = getattr(model, "base_model", model)
    rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
    if head is None or base is model:
        logits = model(**_model_inputs(model, batch)).logits  # (B, T, V)
        return logits[rows, batch.mask_pos]
    hidden = base(**_model_inputs(model, batch))[0]  # (B, T, H)
    return head(hidden[rows, batch.mask_pos])  # (B, V)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits go to fp32 for the loss; fp32/fp64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class LabelScorer(Objective):
    """Shared part of the masked-family objectives: encode once, score classes, CE loss, and
    evaluation with the task's metrics (``metric`` first, then ``report``)."""

    def __init__(self, encode: Callable[[Sequence[str]], EncodedPrompt], pad_id: int, device: torch.device,
                 metric: str, report: Sequence[str], label_words: Sequence[str], show_progress: bool = True) -> None:
        self.encode = encode
        self.pad_id = pad_id
        self.device = device
        self.metric = metric
        self.report = tuple(dict.fromkeys(["accuracy", metric, *report]))
        self.label_words = list(label_words)
        self.show_progress = show_progress

    def prepare(self, examples: Sequence[Example], train: bool) -> list[LabelItem]:
        items = []
        for ex in examples:
            enc = self.encode(ex.fields["sentences"])
            items.append(LabelItem(ex, enc.input_ids, enc.token_type_ids, enc.mask_pos, ex.gold_indices[0]))
        return items

    def class_logits(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Sequence[LabelItem]) -> torch.Tensor:
        b = collate(batch, self.pad_id, self.device)
        return F.cross_entropy(self.class_logits(model, b), b.labels)

    def evaluate_batch(self, model: torch.nn.Module, chunk: Sequence[LabelItem]) -> BatchEval:
        b = collate(chunk, self.pad_id, self.device)
        logits = self.class_logits(model, b)
        rows, pairs = [], []
        for item, row in zip(chunk, logits.tolist()):
            pred = max(range(len(row)), key=row.__getitem__)
            pairs.append((pred, item.label))
            rows.append({
                "uid": item.example.uid,
                "prediction": self.label_words[pred],
                "gold": [self.label_words[item.label]],
                "correct": pred == item.label,
                "scores": [round(s, 6) for s in row],
            })
        return BatchEval(F.cross_entropy(logits, b.labels, reduction="sum").item(), rows, pairs)

    def metrics(self, stats: Sequence[tuple[int, int]]) -> dict[str, float]:
        return classification_metrics(self.report, [p for p, _ in stats], [g for _, g in stats])

    batch_metric_name = "accuracy"  # per batch; the split may be scored by F1 or MCC

    @torch.inference_mode()
    def batch_metric(self, model: torch.nn.Module, batch: Sequence[LabelItem]) -> float:
        """Accuracy of the batch (the non-differentiable objective)."""
        b = collate(batch, self.pad_id, self.device)
        preds = self.class_logits(model, b).argmax(-1)
        return float((preds == b.labels).float().mean())


class MlmPromptObjective(LabelScorer):
    """Label-word logits at the mask (``mlm-prompt``)."""

    def __init__(self, encoder: PromptEncoder, **kw) -> None:
        super().__init__(encode=encoder.encode, label_words=encoder.label_words, **kw)
        self.encoder = encoder
        self.label_ids = torch.tensor(encoder.label_ids, device=self.device)

    def class_logits(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        return _upcast(mask_logits(model, batch)[:, self.label_ids])  # (B, classes)

    @torch.inference_mode()
    def features(self, model: torch.nn.Module, items: Sequence[LabelItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear probing (the original's medium_models/src/linearhead_trainer.py): the input of the vocabulary projection at the mask,
        (N, hidden), and each example's label-word token id, (N,)."""
        feats, targets = [], []
        for chunk in batches(items, 32):
            batch = collate(chunk, self.pad_id, self.device)
            feats.append(masked_features(model, batch.input_ids, batch.attention_mask, batch.mask_pos).cpu())
            targets.append(self.label_ids[batch.labels].cpu())
        return torch.cat(feats), torch.cat(targets)


class ClsHeadObjective(LabelScorer):
    """Sequence-classification head on the first token (``cls-head``); with ``pooling="mean"``
    (``model.pooling``) the head reads the mean of the last hidden states over the attention
    mask instead of its own first-token input (BERT's pooler), for encoders whose pooler was
    never trained (sentence encoders)."""

    def __init__(self, pooling: str = "cls", **kw) -> None:
        super().__init__(**kw)
        self.pooling = pooling

    def _mean_pooled_logits(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        # The whole model runs (its hooks, e.g. prefix tuning's, see the same call); its own
        # logits are discarded and the head is applied again to the mean-pooled states.
        out = model(**_model_inputs(model, batch), output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (B, T, H)
        mask = batch.attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        head = classification_head(model)
        if isinstance(head, torch.nn.Linear):  # BERT: dropout, then the classifier
            dropout = getattr(model, "dropout", None)
            return head(dropout(pooled) if dropout is not None else pooled)
        return head(pooled.unsqueeze(1))  # RoBERTa's head reads the first of (B, T, H)

    def class_logits(self, model: torch.nn.Module, batch: LabelBatch) -> torch.Tensor:
        if self.pooling == "mean":
            logits = _upcast(self._mean_pooled_logits(model, batch))
        else:
            logits = _upcast(model(**_model_inputs(model, batch)).logits)  # (B, num_labels)
        if logits.shape[-1] != len(self.label_words):
            raise ValueError(f"the classification head has {logits.shape[-1]} outputs but the task has "
                             f"{len(self.label_words)} classes")
        return logits

    @torch.inference_mode()
    def features(self, model: torch.nn.Module, items: Sequence[LabelItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear probing of a sequence classifier: the features its head's last Linear reads
        (BERT: the pooled ``[CLS]``; RoBERTa: ``tanh(dense(<s>))``), (N, hidden), and each
        example's class index, (N,)."""
        feats, targets = [], []
        for chunk in batches(items, 32):
            batch = collate(chunk, self.pad_id, self.device)
            if self.pooling == "mean":
                with HeadInput(model) as rec:
                    self.class_logits(model, batch)
                feats.append(rec.captured[-1].cpu())  # the probed Linear's input, (B, H)
            else:
                feats.append(head_input_features(model, _model_inputs(model, batch)).cpu())
            targets.append(batch.labels.cpu())
        return torch.cat(feats), torch.cat(targets)


def build_masked_objective(cfg, spec, loaded):
    """The objective ``task.objective`` names (default: mlm-prompt, cls-head for seq-cls,
    similarity for an encoder; see :func:`zoft.lmbff.settings.natural_objective`),
    for the LM-BFF task record ``spec`` (its prompt is ``spec.lmbff``)."""
    task = spec.lmbff
    settings = prompt_settings(task, cfg.task)
    name = cfg.task.objective or natural_objective(loaded.kind)
    if name not in MASKED_OBJECTIVES or loaded.kind not in MASKED_OBJECTIVES[name]:
        raise ValueError(f"task.objective={name!r} cannot run on model kind {loaded.kind!r}")
    tok = loaded.tokenizer
    max_len = min(settings.max_seq_length, cfg.model.max_length)
    common = dict(pad_id=tok.pad_token_id, device=loaded.device, metric=task.metric,
                  report=task.extra_metrics, show_progress=cfg.trainer.progress_bar)
    pooling = cfg.model.get("pooling")
    if name == "similarity" or (name == "metric" and loaded.kind == "encoder"):
        # (imported here: zoft.objectives.similarity builds on this module's LabelScorer)
        from zoft.objectives.similarity import attach_similarity_head, build_similarity_objective

        attach_similarity_head(loaded.model, len(settings.label_words))
        scorer: LabelScorer = build_similarity_objective(tok, settings, max_len, tau=cfg.task.similarity_tau,
                                                         pooling=pooling or "mean", **common)
    elif loaded.kind == "seq-cls":
        scorer = ClsHeadObjective(encode=lambda s: encode_plain(tok, s, max_len), label_words=settings.label_words,
                                  pooling=pooling or "cls", **common)
    else:
        encoder = PromptEncoder(tok, settings.template, settings.label_words, max_length=max_len,
                                first_sent_limit=settings.first_sent_limit,
                                other_sent_limit=settings.other_sent_limit,
                                truncate_head=settings.truncate_head)
        scorer = MlmPromptObjective(encoder, **common)
    return MetricObjective(scorer) if name == "metric" else scorer
