"""Generation tasks (SQuAD, DROP) on a causal LM (the original's large_models/run.py).

Training: teacher forcing on the gold continuation `` {answer}\\n`` (LM-style loss on the answer
tokens only). Evaluation: batched greedy decoding from left-padded prompts that stops at a
newline or EOS, then SQuAD-normalised F1 and exact match against every gold answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from zoft.metrics import exact_match, f1_score
from zoft.objectives.base import BatchEval
from zoft.objectives.candidates import CausalPromptObjective, demos_for
from zoft.objectives.causal import collate, lm_loss
from zoft.prompting import EncodedExample, encode_example
from zoft.examples import Example
from zoft.tasks.base import TaskSpec


@dataclass
class PreparedGeneration:
    example: Example
    train_enc: EncodedExample  # prompt + " answer\n", option = the answer part
    eval_enc: EncodedExample  # prompt ending in "Answer:" (with ICL demonstrations, if any)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token id of a newline (the last id of its encoding) and the EOS id."""
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    ids = [newline]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != newline:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def greedy_generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    max_length: int,
    device: torch.device,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token id lists), batched with left padding.

    Each continuation ends before its first stop token. At most
    ``min(max_new_tokens, max_length - longest prompt)`` tokens are generated.
    """
    width = max(len(p) for p in prompts)
    budget = min(max_new_tokens, max_length - width)
    if budget <= 0:
        return [[] for _ in prompts]
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, ids in enumerate(prompts):  # left padding: every prompt ends at column width-1
        input_ids[r, width - len(ids):] = torch.tensor(list(ids))
        attention_mask[r, width - len(ids):] = 1
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        do_sample=False,
        num_beams=1,
        max_new_tokens=budget,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    results = []
    stops = set(stop_ids)
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        results.append(row[:cut])
    return results


class GenerationObjective(CausalPromptObjective):
    """SQuAD/DROP: LM-style training loss, greedy generation + F1/EM for evaluation."""

    metric = "f1"

    def __init__(
        self,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        *,
        max_length: int,
        max_new_tokens: int = 50,
        show_progress: bool = True,
    ) -> None:
        super().__init__(spec, tokenizer, device, max_length=max_length, show_progress=show_progress)
        self.max_new_tokens = max_new_tokens
        self.stop_ids = stop_token_ids(tokenizer)

    def prepare(self, examples: Sequence[Example], train: bool,
                demos: Optional[Sequence[Sequence[Example]]] = None) -> list[PreparedGeneration]:
        kw = dict(max_length=self.max_length, max_new_tokens=self.max_new_tokens)
        return [
            PreparedGeneration(
                example=ex,
                train_enc=encode_example(self.spec, ex, self.tokenizer, with_gold=True, **kw),
                eval_enc=encode_example(self.spec, ex, self.tokenizer, demos=demos_for(demos, i), **kw),
            )
            for i, ex in enumerate(examples)
        ]

    def loss(self, model: torch.nn.Module, batch: Sequence[PreparedGeneration]) -> torch.Tensor:
        cb = collate([it.train_enc for it in batch], self.tokenizer.pad_token_id, only_gold=True).to(self.device)
        return lm_loss(model, cb)

    def generate(self, model: torch.nn.Module, batch: Sequence[PreparedGeneration]) -> list[str]:
        """Decoded, whitespace-stripped answers of a batch."""
        outs = greedy_generate(model, [it.eval_enc.input_ids[0] for it in batch], pad_id=self.tokenizer.pad_token_id,
                               stop_ids=self.stop_ids, max_new_tokens=self.max_new_tokens,
                               max_length=self.max_length, device=self.device)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outs]

    @torch.inference_mode()
    def batch_metric(self, model: torch.nn.Module, batch: Sequence[PreparedGeneration]) -> float:
        """Mean F1 of the batch's greedy answers (the non-differentiable objective)."""
        answers = self.generate(model, batch)
        return sum(f1_score(a, it.example.answers) for a, it in zip(answers, batch)) / max(len(batch), 1)

    def evaluate_batch(self, model: torch.nn.Module, chunk: Sequence[PreparedGeneration]) -> BatchEval:
        loss_sum = self.loss(model, chunk).item() * len(chunk)
        rows, stats = [], []
        for item, answer in zip(chunk, self.generate(model, chunk)):
            f1, em = f1_score(answer, item.example.answers), exact_match(answer, item.example.answers)
            stats.append((f1, em))
            rows.append({"uid": item.example.uid, "prediction": answer,
                         "gold": list(item.example.answers), "f1": round(f1, 6), "em": em})
        return BatchEval(loss_sum, rows, stats)

    def metrics(self, stats: Sequence[tuple[float, float]]) -> dict[str, float]:
        n = max(len(stats), 1)
        return {"f1": sum(f1 for f1, _ in stats) / n, "em": sum(em for _, em in stats) / n}
