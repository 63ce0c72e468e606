"""Objectives of the OPT protocol for classification and multiple-choice tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from zoft.models.heads import HeadInput
from zoft.objectives.base import BatchEval, Objective, batches
from zoft.objectives.causal import (
    CandidateBatch,
    classification_loss,
    collate,
    lm_loss,
    lm_loss_from_logprobs,
    option_logprobs,
    scores_from_logprobs,
)
from zoft.prompting import EncodedExample, encode_example
from zoft.examples import Example
from zoft.tasks.base import TaskSpec


@dataclass
class PreparedExample:
    example: Example
    train_enc: EncodedExample  # no demonstrations (training / LM loss)
    eval_enc: EncodedExample  # what evaluation scores (with ICL demonstrations, if any)
    calib_enc: Optional[EncodedExample] = None  # SFC calibration prompts (method.sfc / icl_sfc)


def demos_for(demos: Optional[Sequence[Sequence[Example]]], i: int) -> Sequence[Example]:
    return demos[i] if demos is not None else ()


class CausalPromptObjective(Objective):
    """The OPT-protocol objectives' common part: a task record's prompts on a causal LM."""

    def __init__(self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, device: torch.device, *,
                 max_length: int, show_progress: bool = True) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.show_progress = show_progress


class CandidateObjective(CausalPromptObjective):
    """Classification/multiple choice on a causal LM.

    Training loss: cross-entropy over candidates (``train_as_classification``) or teacher-forced
    token CE on the gold candidate (LM-style, used for COPA and ReCoRD). Prediction: argmax of the
    mean option log-likelihood, or with ``sfc``/``icl_sfc`` the summed option log-likelihood
    minus that under the calibration prompt. Metric: accuracy (a prediction is right when it is
    any gold).
    """

    metric = "accuracy"

    def __init__(
        self,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        *,
        max_length: int,
        train_as_classification: bool,
        show_progress: bool = True,
        sfc: bool = False,
        icl_sfc: bool = False,
    ) -> None:
        super().__init__(spec, tokenizer, device, max_length=max_length, show_progress=show_progress)
        self.as_classification = train_as_classification
        self.sfc = sfc
        self.icl_sfc = icl_sfc

    def prepare(self, examples: Sequence[Example], train: bool,
                demos: Optional[Sequence[Sequence[Example]]] = None) -> list[PreparedExample]:
        """Encode once. ``demos[i]`` are the ICL demonstrations of ``examples[i]`` (evaluation)."""
        out = []
        for i, ex in enumerate(examples):
            plain = encode_example(self.spec, ex, self.tokenizer, max_length=self.max_length)
            shots = demos_for(demos, i)
            enc = encode_example(self.spec, ex, self.tokenizer, demos=shots, max_length=self.max_length) if shots else plain
            calib = None
            if not train and (self.sfc or self.icl_sfc):
                calib = encode_example(self.spec, ex, self.tokenizer, demos=shots, max_length=self.max_length,
                                       sfc=self.sfc, icl_sfc=self.icl_sfc)
            out.append(PreparedExample(example=ex, train_enc=plain, eval_enc=enc, calib_enc=calib))
        return out

    def _batch(self, encs: Sequence[EncodedExample], only_gold: bool) -> CandidateBatch:
        return collate(list(encs), self.tokenizer.pad_token_id, only_gold).to(self.device)

    def loss(self, model: torch.nn.Module, batch: Sequence[PreparedExample]) -> torch.Tensor:
        encs = [it.train_enc for it in batch]
        if self.as_classification:
            cb = self._batch(encs, only_gold=False)
            return classification_loss(scores_from_logprobs(option_logprobs(model, cb), cb), cb.gold)
        return lm_loss(model, self._batch(encs, only_gold=True))

    def _score(self, model: torch.nn.Module, chunk: Sequence[PreparedExample]):
        """(scores, loss, batch) for a chunk: scores (examples, max candidates) decide the
        prediction; the loss is the training loss of the same prompts."""
        cb = self._batch([it.eval_enc for it in chunk], only_gold=False)
        logp = option_logprobs(model, cb)
        mean_scores = scores_from_logprobs(logp, cb, "mean")
        if self.as_classification:
            loss = classification_loss(mean_scores, cb.gold)
        else:  # teacher-forced CE on the gold rows only
            gold_rows = (cb.row_candidate == cb.gold[cb.row_example]).unsqueeze(-1)
            loss = lm_loss_from_logprobs(logp, cb.option_mask & gold_rows)
        scores = mean_scores
        if chunk[0].calib_enc is not None:
            calib = self._batch([it.calib_enc for it in chunk], only_gold=False)
            calibrated = scores_from_logprobs(logp, cb, "sum") - scores_from_logprobs(option_logprobs(model, calib), calib, "sum")
            # Missing candidates are -inf in both; keep them -inf rather than -inf - -inf = nan.
            scores = torch.where(torch.isfinite(mean_scores), calibrated, mean_scores)
        return scores, loss

    @torch.inference_mode()
    def batch_metric(self, model: torch.nn.Module, batch: Sequence[PreparedExample]) -> float:
        """Accuracy of the batch (the non-differentiable objective)."""
        scores, _ = self._score(model, batch)
        preds = scores.argmax(-1).tolist()
        return sum(p in it.example.gold_indices for p, it in zip(preds, batch)) / max(len(batch), 1)

    @torch.inference_mode()
    def features(self, model: torch.nn.Module, items: Sequence[PreparedExample],
                 batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear probing's data: the vocabulary projection's input at each position that
        predicts a token of the gold option, (N, hidden), and that token's id, (N,)."""
        feats, targets = [], []
        for chunk in batches(items, batch_size):
            batch = collate([it.train_enc for it in chunk], self.tokenizer.pad_token_id, only_gold=True).to(self.device)
            with HeadInput(model) as rec:
                option_logprobs(model, batch)
            k = batch.option_mask.shape[1]
            states = rec.captured[-1][:, -(k + 1):-1]  # (rows, K, hidden): positions predicting the last K tokens
            feats.append(states[batch.option_mask].cpu())
            targets.append(batch.input_ids[:, -k:][batch.option_mask].cpu())
        return torch.cat(feats), torch.cat(targets)

    def evaluate_batch(self, model: torch.nn.Module, chunk: Sequence[PreparedExample]) -> BatchEval:
        scores, loss = self._score(model, chunk)
        preds = scores.argmax(-1).tolist()  # first maximum on ties, as the original
        rows, hits = [], []
        for item, pred, row in zip(chunk, preds, scores.tolist()):
            hit = pred in item.example.gold_indices
            hits.append(hit)
            rows.append({
                "uid": item.example.uid,
                "prediction": item.example.candidates[pred],
                "gold": [item.example.candidates[g] for g in item.example.gold_indices],
                "correct": bool(hit),
                "scores": [round(s, 6) for s in row[: len(item.example.candidates)]],
            })
        return BatchEval(loss.item() * len(chunk), rows, hits)

    def metrics(self, stats: Sequence[bool]) -> dict[str, float]:
        return {"accuracy": sum(stats) / max(len(stats), 1)}
