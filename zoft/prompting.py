"""Prompt encoding for causal LMs, exactly as the original's ``encode_prompt`` (large_models/utils.py).

For classification and multiple choice an example becomes one token sequence per candidate, and
``option_len`` says how many trailing tokens are the candidate (the scored/trained part). For
generation an example becomes one prompt without the answer (inference) or with the gold answer
(training, ``with_gold=True``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from transformers import PreTrainedTokenizerBase

from zoft.examples import Example
from zoft.tasks.base import TaskSpec

log = logging.getLogger(__name__)
DEMO_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class EncodedExample:
    """Token ids per candidate (one row for generation) and the option length of each row."""

    input_ids: tuple[tuple[int, ...], ...]
    option_lens: tuple[int, ...]
    gold: tuple[int, ...]


def gold_text(spec: TaskSpec, ex: Example) -> str:
    """The answer a demonstration or a training target uses: the first gold candidate/answer."""
    if spec.kind == "generation":
        return ex.answers[0]
    return ex.candidates[ex.gold_indices[0]]


def render_demos(spec: TaskSpec, demos: Sequence[Example]) -> str:
    """Demonstrations verbalised with their own gold answer, stripped, joined by a blank line."""
    parts = [spec.prompt.verbalize(d, gold_text(spec, d)).strip() for d in demos]
    return DEMO_SEPARATOR.join(parts).strip()


def _join(demos: str, prompt: str) -> str:
    # (demos + sep + prompt), all leading whitespace removed, then spaces stripped at both ends.
    return (demos + DEMO_SEPARATOR + prompt).lstrip().strip(" ")


_TRUNCATIONS = {"count": 0}


def _warn_truncation(length: int, budget: int, task: str) -> None:
    """Warn on the first truncated prompt (ICL truncates most long-context prompts: one line per
    prompt would flood the log); later ones go to the debug log."""
    _TRUNCATIONS["count"] += 1
    level = logging.WARNING if _TRUNCATIONS["count"] == 1 else logging.DEBUG
    log.log(level, "prompt of %d tokens left-truncated to %d, keeping BOS (task %s)%s", length, budget, task,
            "; further truncations are logged at debug level" if level == logging.WARNING else "")


def _truncate(ids: list[int], budget: int, keep_bos: bool) -> list[int]:
    """Left-truncate to ``budget`` tokens, keeping the first token when it is BOS."""
    if len(ids) <= budget:
        return ids
    return ids[:1] + ids[len(ids) - budget + 1:] if keep_bos else ids[len(ids) - budget:]


def encode_example(
    spec: TaskSpec,
    ex: Example,
    tokenizer: PreTrainedTokenizerBase,
    *,
    demos: Sequence[Example] = (),
    max_length: int = 2048,
    with_gold: bool = False,
    sfc: bool = False,
    icl_sfc: bool = False,
    max_new_tokens: int = 50,
) -> EncodedExample:
    """Encode ``ex`` (with optional ICL demonstrations) into model inputs."""
    tpl = spec.prompt
    calibrate = sfc or icl_sfc
    if calibrate and (tpl.encode_sfc is None or tpl.verbalize_sfc is None):
        raise ValueError(f"task {spec.name} has no calibration (SFC) prompts; set method.sfc=false")
    encode = tpl.encode_sfc if calibrate else tpl.encode
    verbalize = tpl.verbalize_sfc if calibrate else tpl.verbalize
    demo_text = render_demos(spec, demos) if demos and not sfc else ""
    unverbalised = encode(ex).strip(" ")

    def option_len(verbalised: str) -> int:
        # Computed without demonstrations, both encodings including BOS (as the original).
        return len(tokenizer.encode(verbalised)) - len(tokenizer.encode(unverbalised))

    if spec.kind == "generation":
        if calibrate:
            raise ValueError(f"task {spec.name} is a generation task; calibration (sfc) is not supported")
        if with_gold:
            verbalised = verbalize(ex, ex.answers[0]).strip(" ")
            texts, lens = [_join(demo_text, verbalised)], [option_len(verbalised)]
        else:
            texts, lens = [_join(demo_text, unverbalised)], [0]
        budget = max_length - max_new_tokens
        gold: tuple[int, ...] = (0,)
    else:
        verbalised_all = [verbalize(ex, c).strip(" ") for c in ex.candidates]
        texts = [_join(demo_text, v) for v in verbalised_all]
        lens = [option_len(v) for v in verbalised_all]
        budget = max_length
        gold = ex.gold_indices
    encoded = tuple(_tokenize_within(tokenizer, text, budget, spec.name) for text in texts)
    return EncodedExample(input_ids=encoded, option_lens=tuple(lens), gold=gold)


def _tokenize_within(tokenizer: PreTrainedTokenizerBase, text: str, budget: int, task: str) -> tuple[int, ...]:
    """Token ids of ``text``, cut to ``budget`` tokens from the left (BOS kept) with a warning."""
    ids = tokenizer.encode(text)
    if len(ids) > budget:
        _warn_truncation(len(ids), budget, task)
        keep_bos = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
        ids = _truncate(ids, budget, keep_bos)
    return tuple(ids)
