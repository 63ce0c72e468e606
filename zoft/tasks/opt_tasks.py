"""The OPT task suite of the MeZO paper (the original's large_models/tasks.py and templates.py). Templates render exactly as the
original's; ``encode_prompt`` later strips spaces (not newlines) from both ends."""

from __future__ import annotations

from typing import Any, Mapping

from zoft.examples import Example, label_index
from zoft.tasks.base import DataSource, TaskSpec, PromptFormat, register_task

GLUE_TRAIN = ("train.tsv", "train_full.tsv", "train.jsonl")
GLUE_TEST = ("dev.tsv", "validation.jsonl", "val.jsonl", "dev.jsonl")


def _label(value: Any) -> int:
    """Labels arrive as ints (Hub, jsonl) or strings (tsv); only 0 and 1 are SST-2 labels."""
    return label_index(value, count=2)


# --- SST2 -------------------------------------------------------------------------------------

def _sst2_record(r: Mapping[str, Any]) -> list[Example]:
    return [
        Example(
            fields={"sentence": r["sentence"]},
            candidates=("terrible", "great"),
            gold=_label(r["label"]),
            uid=str(r["idx"]) if "idx" in r else None,
        )
    ]


SST2 = register_task(
    TaskSpec(
        name="sst2",
        kind="classification",
        metric="accuracy",
        source=DataSource(
            hub_id="nyu-mll/glue",
            hub_config="sst2",
            hub_splits={"train": "train", "test": "validation"},
            local_files={"train": GLUE_TRAIN, "test": GLUE_TEST},
            read_record=_sst2_record,
        ),
        prompt=PromptFormat(
            encode=lambda ex: f"{ex.fields['sentence'].strip()} It was",
            verbalize=lambda ex, word: f"{ex.fields['sentence'].strip()} It was {word}",
            encode_sfc=lambda ex: " It was",
            verbalize_sfc=lambda ex, word: f" It was {word}",
        ),
        description="GLUE SST-2 sentiment; `<sentence> It was` + terrible/great",
    )
)
