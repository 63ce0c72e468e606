"""The SuperGLUE tasks of the OPT suite (the original's large_models/tasks.py and templates.py): RTE, CB, BoolQ, WSC, WIC, MultiRC,
COPA and ReCoRD.

Each reader accepts both layouts a user may have: the flat rows of the Hugging Face Hub
(``aps/super_glue``, ``google/boolq``) and the official SuperGLUE jsonl distribution, where labels
are strings/booleans and MultiRC/ReCoRD records are nested per passage (one record becomes many
examples). Templates are the exact strings of large_models/templates.py; ``encode_prompt`` strips spaces
(never newlines) from both ends later.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from zoft.examples import Example, label_index
from zoft.tasks.base import DataSource, TaskSpec, PromptFormat, register_task

log = logging.getLogger(__name__)

SUPERGLUE_TRAIN = ("train.jsonl",)
SUPERGLUE_TEST = ("val.jsonl", "validation.jsonl", "dev.jsonl")
SUPERGLUE_HUB = "aps/super_glue"
HUB_SPLITS = {"train": "train", "test": "validation"}


def suffix_prompt(prompt: Callable[[Example], str]) -> PromptFormat:
    """A template whose option is the candidate appended to ``prompt`` (no space), and whose
    calibration (SFC) prompt is empty: the tasks whose prompt ends with a newline."""
    return PromptFormat(
        encode=prompt,
        verbalize=lambda ex, cand: prompt(ex) + cand,
        encode_sfc=lambda ex: "",
        verbalize_sfc=lambda ex, cand: cand,
    )


def _source(config: str, read: Callable[[Mapping[str, Any]], list[Example]], hub_id: str = SUPERGLUE_HUB,
            train: Sequence[str] = SUPERGLUE_TRAIN, test: Sequence[str] = SUPERGLUE_TEST) -> DataSource:
    return DataSource(hub_id=hub_id, hub_config=config, hub_splits=HUB_SPLITS,
                      local_files={"train": tuple(train), "test": tuple(test)}, read_record=read)


def _uid(r: Mapping[str, Any]) -> str | None:
    idx = r.get("idx")
    return None if idx is None or isinstance(idx, Mapping) else str(idx)


# --- RTE --------------------------------------------------------------------------------------
RTE_LABELS = ("entailment", "not_entailment")


def _rte_record(r: Mapping[str, Any]) -> list[Example]:
    # SuperGLUE jsonl / Hub: premise, hypothesis; GLUE tsv: sentence1, sentence2.
    premise = r["premise"] if "premise" in r else r["sentence1"]
    hypothesis = r["hypothesis"] if "hypothesis" in r else r["sentence2"]
    return [Example(fields={"premise": premise, "hypothesis": hypothesis}, candidates=("Yes", "No"),
                    gold=label_index(r["label"], RTE_LABELS), uid=_uid(r))]


RTE = register_task(TaskSpec(
    name="rte", kind="classification", metric="accuracy",
    source=_source("rte", _rte_record, train=("train.jsonl", "train.tsv"),
                   test=SUPERGLUE_TEST + ("dev.tsv",)),
    prompt=suffix_prompt(
        lambda ex: f"{ex.fields['premise']}\nDoes this mean that \"{ex.fields['hypothesis']}\" is true? Yes or No?\n"),
    description="SuperGLUE RTE; Yes (entailment) / No",
))

# --- CB ---------------------------------------------------------------------------------------
CB_LABELS = ("entailment", "contradiction", "neutral")


def _cb_record(r: Mapping[str, Any]) -> list[Example]:
    return [Example(fields={"premise": r["premise"], "hypothesis": r["hypothesis"]},
                    candidates=("Yes", "No", "Maybe"), gold=label_index(r["label"], CB_LABELS), uid=_uid(r))]


CB = register_task(TaskSpec(
    name="cb", kind="classification", metric="accuracy", source=_source("cb", _cb_record),
    prompt=suffix_prompt(
        lambda ex: f"Suppose {ex.fields['premise']} Can we infer that \"{ex.fields['hypothesis']}\"? Yes, No, or Maybe?\n"),
    default_num_dev=100,
    description="SuperGLUE CB; Yes / No / Maybe",
))


# --- BoolQ ------------------------------------------------------------------------------------
def boolq_question(question: str) -> str:
    """Add a question mark if missing, then upper-case the first character."""
    q = question if question.endswith("?") else question + "?"
    return q[:1].upper() + q[1:]


def _boolq_record(r: Mapping[str, Any]) -> list[Example]:
    # google/boolq: "answer" (bool); SuperGLUE jsonl / aps/super_glue: "label" (1 = true).
    truth = label_index(r["answer"] if "answer" in r else r["label"])
    return [Example(fields={"passage": r["passage"], "question": r["question"]}, candidates=("Yes", "No"),
                    gold=0 if truth else 1, uid=_uid(r))]


BOOLQ = register_task(TaskSpec(
    name="boolq", kind="classification", metric="accuracy",
    source=_source(None, _boolq_record, hub_id="google/boolq", test=SUPERGLUE_TEST),
    prompt=suffix_prompt(lambda ex: f"{ex.fields['passage']} {boolq_question(ex.fields['question'])}\n"),
    description="BoolQ; Yes (answer true) / No",
))


# --- WSC --------------------------------------------------------------------------------------
def _wsc_record(r: Mapping[str, Any]) -> list[Example]:
    spans = r["target"] if "target" in r else r  # official jsonl nests the spans under "target"
    return [Example(fields={"text": r["text"], "span1_text": spans["span1_text"], "span2_text": spans["span2_text"]},
                    candidates=("No", "Yes"), gold=label_index(r["label"]), uid=_uid(r))]


WSC = register_task(TaskSpec(
    name="wsc", kind="classification", metric="accuracy", source=_source("wsc.fixed", _wsc_record),
    prompt=suffix_prompt(
        lambda ex: f"{ex.fields['text']}\nIn the previous sentence, does the pronoun "
                   f"\"{ex.fields['span2_text'].lower()}\" refer to {ex.fields['span1_text']}? Yes or No?\n"),
    description="SuperGLUE WSC (wsc.fixed); No / Yes",
))


# --- WIC --------------------------------------------------------------------------------------
def _wic_record(r: Mapping[str, Any]) -> list[Example]:
    return [Example(fields={"word": r["word"], "sentence1": r["sentence1"], "sentence2": r["sentence2"]},
                    candidates=("No", "Yes"), gold=label_index(r["label"]), uid=_uid(r))]


WIC = register_task(TaskSpec(
    name="wic", kind="classification", metric="accuracy", source=_source("wic", _wic_record),
    prompt=suffix_prompt(
        lambda ex: f"Does the word \"{ex.fields['word']}\" have the same meaning in these two sentences? "
                   f"Yes, No?\n{ex.fields['sentence1']}\n{ex.fields['sentence2']}\n"),
    description="SuperGLUE WiC; No / Yes",
))


# --- MultiRC ----------------------------------------------------------------------------------
def _multirc_example(paragraph: str, question: str, answer: str, label: Any, uid: str | None) -> Example:
    return Example(fields={"paragraph": paragraph, "question": question, "answer": answer},
                   candidates=("No", "Yes"), gold=label_index(label), uid=uid)


def _multirc_record(r: Mapping[str, Any]) -> list[Example]:
    if isinstance(r.get("passage"), Mapping):  # official jsonl: one record per paragraph
        paragraph = r["passage"]["text"]
        return [
            _multirc_example(paragraph, q["question"], a["text"], a["label"], f"{r.get('idx')}-{q.get('idx')}-{a.get('idx')}")
            for q in r["passage"]["questions"] for a in q["answers"]
        ]
    return [_multirc_example(r["paragraph"], r["question"], r["answer"], r["label"], None)]


MULTIRC = register_task(TaskSpec(
    name="multirc", kind="classification", metric="accuracy", source=_source("multirc", _multirc_record),
    prompt=suffix_prompt(
        lambda ex: f"{ex.fields['paragraph']}\nQuestion: {ex.fields['question']}\nI found this answer "
                   f"\"{ex.fields['answer']}\". Is that correct? Yes or No?\n"),
    description="SuperGLUE MultiRC (one example per paragraph/question/answer); No / Yes",
))


# --- COPA -------------------------------------------------------------------------------------
def copa_premise(premise: str) -> str:
    """Trailing whitespace and one trailing period removed."""
    premise = premise.rstrip()
    return premise[:-1] if premise.endswith(".") else premise


def copa_choice(choice: str) -> str:
    """The first word lower-cased, unless it is exactly "I"."""
    first, sep, rest = choice.partition(" ")
    return (first if first == "I" else first.lower()) + sep + rest


def _copa_connective(ex: Example) -> str:
    question = ex.fields["question"]
    if question not in ("cause", "effect"):
        raise ValueError(f"COPA question must be 'cause' or 'effect', got {question!r}")
    return " so " if question == "effect" else " because "


def _copa_record(r: Mapping[str, Any]) -> list[Example]:
    if r["question"] not in ("cause", "effect"):
        raise ValueError(f"question must be 'cause' or 'effect', got {r['question']!r}")
    return [Example(fields={"premise": r["premise"], "question": r["question"]},
                    candidates=(r["choice1"], r["choice2"]), gold=label_index(r["label"]), uid=_uid(r))]


COPA = register_task(TaskSpec(
    name="copa", kind="multiple-choice", metric="accuracy", source=_source("copa", _copa_record),
    prompt=PromptFormat(
        encode=lambda ex: f"{copa_premise(ex.fields['premise'])}{_copa_connective(ex)}",
        verbalize=lambda ex, c: f"{copa_premise(ex.fields['premise'])}{_copa_connective(ex)}{copa_choice(c)}",
        encode_sfc=lambda ex: _copa_connective(ex).strip(),
        verbalize_sfc=lambda ex, c: f"{_copa_connective(ex).strip()} {copa_choice(c)}",
    ),
    default_num_dev=100,
    description="SuperGLUE COPA; the two choices after ' so '/' because '",
))


# --- ReCoRD -----------------------------------------------------------------------------------
def record_passage(passage: str) -> str:
    """Every "@highlight\\n" becomes "- " (the highlights read as a bullet list)."""
    return passage.replace("@highlight\n", "- ")


def record_fill(query: str, candidate: str) -> str:
    return query.replace("@placeholder", candidate)


def _record_example(passage: str, query: str, entities: Sequence[str], answers: Sequence[str], uid) -> list[Example]:
    candidates = tuple(dict.fromkeys(entities))  # unique, first occurrence first
    gold = tuple(dict.fromkeys(candidates.index(a) for a in answers if a in candidates))
    if not gold:
        log.warning("ReCoRD query %s: no gold answer among the passage entities; skipped", uid)
        return []
    return [Example(fields={"passage": passage, "query": query}, candidates=candidates, gold=gold,
                    answers=tuple(answers), uid=uid)]


def _record_record(r: Mapping[str, Any]) -> list[Example]:
    if isinstance(r.get("passage"), Mapping):  # official jsonl: entity offsets (end inclusive), nested qas
        text = r["passage"]["text"]
        spans = sorted(r["passage"]["entities"], key=lambda e: e["start"])
        entities = [text[e["start"]:e["end"] + 1] for e in spans]
        out: list[Example] = []
        for qa in r["qas"]:
            answers = [a["text"] for a in qa["answers"]]
            out.extend(_record_example(text, qa["query"], entities, answers, str(qa.get("idx"))))
        return out
    return _record_example(r["passage"], r["query"], list(r["entities"]), list(r["answers"]), None)


RECORD = register_task(TaskSpec(
    name="record", kind="multiple-choice", metric="accuracy", source=_source("record", _record_record),
    prompt=PromptFormat(
        encode=lambda ex: f"{record_passage(ex.fields['passage'])}\n-",
        verbalize=lambda ex, c: f"{record_passage(ex.fields['passage'])}\n- {record_fill(ex.fields['query'], c)}",
        encode_sfc=lambda ex: "-",
        verbalize_sfc=lambda ex, c: f"- {record_fill(ex.fields['query'], c)}",
    ),
    description="SuperGLUE ReCoRD; candidates = passage entities filled into the query",
))
