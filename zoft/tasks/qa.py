"""The generation tasks of the OPT suite: SQuAD (v1.1) and DROP (large_models/templates.py).

The model generates the answer after ``Answer:`` (greedy, stopping at a newline); training and
demonstrations use `` {first gold answer}\\n``. Both accept the Hub's flat rows and the official
json distributions (SQuAD: ``{"data": [article, ...]}``; DROP: ``{passage_id: {...}}``, read by
:func:`zoft.tasks.readers.read_local_split` into one record per passage).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from zoft.examples import Example
from zoft.tasks.base import DataSource, TaskSpec, PromptFormat, register_task

HUB_SPLITS = {"train": "train", "test": "validation"}


def _answer_prompt(prompt) -> PromptFormat:
    # No calibration prompts: SFC is not defined for generation (the original's large_models/run.py).
    return PromptFormat(encode=prompt, verbalize=lambda ex, answer: f"{prompt(ex)} {answer}\n")


def _unique(answers: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for a in answers if a != ""))


# --- SQuAD ------------------------------------------------------------------------------------
def _squad_example(title: str, context: str, question: str, answers: Sequence[str], uid) -> list[Example]:
    answers = _unique(answers)
    if not answers:  # SQuAD v2 unanswerable questions have no gold text to train or score on
        return []
    return [Example(fields={"title": title, "context": context, "question": question}, answers=answers, uid=uid)]


def _squad_record(r: Mapping[str, Any]) -> list[Example]:
    if "paragraphs" in r:  # official json: one article with paragraphs and their questions
        return [
            ex
            for p in r["paragraphs"]
            for qa in p["qas"]
            for ex in _squad_example(r.get("title", ""), p["context"], qa["question"],
                                     [a["text"] for a in qa["answers"]], qa.get("id"))
        ]
    answers = r["answers"]["text"] if isinstance(r["answers"], Mapping) else r["answers"]
    return _squad_example(r.get("title", ""), r["context"], r["question"], list(answers), r.get("id"))


SQUAD = register_task(TaskSpec(
    name="squad", kind="generation", metric="f1",
    source=DataSource(
        hub_id="rajpurkar/squad", hub_config=None, hub_splits=HUB_SPLITS,
        local_files={"train": ("train-v1.1.json", "train.json", "train.jsonl"),
                     "test": ("dev-v1.1.json", "validation.json", "dev.json", "validation.jsonl", "dev.jsonl")},
        read_record=_squad_record,
    ),
    prompt=_answer_prompt(
        lambda ex: f"Title: {ex.fields['title']}\nContext: {ex.fields['context']}\n"
                   f"Question: {ex.fields['question'].strip()}\nAnswer:"),
    description="SQuAD v1.1; greedy generation, SQuAD F1",
))


# --- DROP -------------------------------------------------------------------------------------
def drop_answer_texts(answer: Mapping[str, Any]) -> list[str]:
    """The gold strings of one official DROP answer: its number, its date ("day month year",
    empty parts left out) or its spans, as the Hub's ``answers_spans`` has them."""
    if str(answer.get("number", "")).strip():
        return [str(answer["number"])]
    date = answer.get("date") or {}
    text = " ".join(str(date.get(k, "")) for k in ("day", "month", "year") if str(date.get(k, "")).strip())
    if text:
        return [text]
    return list(answer.get("spans", []))


def _drop_example(passage: str, question: str, answers: Sequence[str], uid) -> list[Example]:
    answers = _unique(answers)
    if not answers:
        return []
    return [Example(fields={"passage": passage, "question": question}, answers=answers, uid=uid)]


def _drop_record(r: Mapping[str, Any]) -> list[Example]:
    if "qa_pairs" in r:  # official json: one passage with its questions
        out: list[Example] = []
        for qa in r["qa_pairs"]:
            # The answer first (the training target), then the validated answers of the dev set.
            golds = [t for ans in [qa.get("answer", {})] + list(qa.get("validated_answers", []))
                     for t in drop_answer_texts(ans)]
            out.extend(_drop_example(r["passage"], qa["question"], golds, qa.get("query_id")))
        return out
    spans = r["answers_spans"]["spans"] if isinstance(r["answers_spans"], Mapping) else r["answers_spans"]
    return _drop_example(r["passage"], r["question"], list(spans), r.get("query_id"))


DROP = register_task(TaskSpec(
    name="drop", kind="generation", metric="f1",
    source=DataSource(
        hub_id="ucinlp/drop", hub_config=None, hub_splits=HUB_SPLITS,
        local_files={"train": ("drop_dataset_train.json", "train.json", "train.jsonl"),
                     "test": ("drop_dataset_dev.json", "validation.json", "dev.json", "validation.jsonl", "dev.jsonl")},
        read_record=_drop_record,
    ),
    prompt=_answer_prompt(
        lambda ex: f"Passage: {ex.fields['passage']}\nQuestion: {ex.fields['question'].strip()}\nAnswer:"),
    description="DROP; greedy generation, SQuAD-style F1",
))
