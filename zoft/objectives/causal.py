"""Causal-LM objectives: candidate scoring (classification / multiple choice) and teacher forcing
on the gold continuation (LM-style), as the original's large_models/run.py.

Rows are LEFT-padded so every row's option tokens are right-aligned: the logits of only the last
``max(option_len) + 1`` positions are computed (``logits_to_keep``), which saves a
(rows x length x vocab) tensor. Position ids are passed explicitly so padding never shifts them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from zoft.prompting import EncodedExample


@dataclass
class CandidateBatch:
    """Every candidate row of a batch of examples, flattened and left-padded.

    input_ids / attention_mask: (rows, T); option_mask: (rows, K) marks, among the last K target
    tokens of each row, those that belong to the option; row_example: (rows,) example index of
    each row; row_candidate: (rows,) candidate index within its example; gold: (examples,) index
    of the (first) correct candidate; num_candidates: candidates per example.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    option_mask: torch.Tensor
    row_example: torch.Tensor
    row_candidate: torch.Tensor
    gold: torch.Tensor
    num_candidates: list[int]

    def to(self, device: torch.device) -> "CandidateBatch":
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return CandidateBatch(**moved)


def collate(examples: Sequence[EncodedExample], pad_id: int, only_gold: bool = False) -> CandidateBatch:
    """Flatten candidates of ``examples`` into one left-padded batch.

    ``only_gold`` keeps only each example's gold row (LM-style training).
    """
    rows, lens, row_ex, row_cand, gold, counts = [], [], [], [], [], []
    for i, ex in enumerate(examples):
        picks = [ex.gold[0]] if only_gold else range(len(ex.input_ids))
        for c in picks:
            rows.append(ex.input_ids[c])
            lens.append(ex.option_lens[c])
            row_ex.append(i)
            row_cand.append(c)
        gold.append(0 if only_gold else ex.gold[0])
        counts.append(len(picks))
    width = max(len(r) for r in rows)
    k = max(max(lens), 1)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    option_mask = torch.zeros((len(rows), k), dtype=torch.bool)
    for r, (ids, n_opt) in enumerate(zip(rows, lens)):
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        attention_mask[r, width - len(ids):] = 1
        if n_opt:
            option_mask[r, k - n_opt:] = True
    return CandidateBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        option_mask=option_mask,
        row_example=torch.tensor(row_ex),
        row_candidate=torch.tensor(row_cand),
        gold=torch.tensor(gold),
        num_candidates=counts,
    )


def _accepts(model: torch.nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def option_logprobs(model: torch.nn.Module, batch: CandidateBatch) -> torch.Tensor:
    """Log-probabilities of the last K target tokens of every row: (rows, K) float32.

    Entries outside ``batch.option_mask`` are meaningless and must be masked by the caller.
    """
    k = batch.option_mask.shape[1]
    kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if _accepts(model, "position_ids"):
        kwargs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = k + 1
    logits = model(**kwargs, use_cache=False).logits[:, -(k + 1):-1]  # (rows, K, vocab)
    targets = batch.input_ids[:, -k:]  # (rows, K): the tokens those positions predict
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def candidate_scores(model: torch.nn.Module, batch: CandidateBatch, reduce: str = "mean") -> torch.Tensor:
    """Mean (``reduce="sum"``: summed) option-token log-likelihood per candidate, as
    (examples, max candidates); missing candidates are -inf."""
    return scores_from_logprobs(option_logprobs(model, batch), batch, reduce)


def scores_from_logprobs(logp: torch.Tensor, batch: CandidateBatch, reduce: str = "mean") -> torch.Tensor:
    """Per-candidate scores (examples, max candidates) from the (rows, K) option log-probs."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce={reduce!r}; valid: mean, sum")
    mask = batch.option_mask.to(logp.dtype)
    row_scores = (logp * mask).sum(-1)
    if reduce == "mean":
        row_scores = row_scores / mask.sum(-1).clamp(min=1)
    scores = torch.full(
        (len(batch.num_candidates), max(batch.num_candidates)), float("-inf"), device=logp.device
    )
    scores[batch.row_example, batch.row_candidate] = row_scores
    return scores


def classification_loss(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over candidates, whose logits are their mean log-likelihoods."""
    return F.cross_entropy(scores, gold)


def lm_loss(model: torch.nn.Module, batch: CandidateBatch) -> torch.Tensor:
    """Token-mean cross-entropy over the option (gold answer) tokens of the batch."""
    return lm_loss_from_logprobs(option_logprobs(model, batch), batch.option_mask)


def lm_loss_from_logprobs(logp: torch.Tensor, option_mask: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood of the (rows, K) log-probs where ``option_mask``."""
    mask = option_mask.to(logp.dtype)
    return -(logp * mask).sum() / mask.sum().clamp(min=1)
