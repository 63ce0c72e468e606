"""zoft's built-in demo task: synthetic movie-review sentiment, generated in code (no download).

Each sentence carries one clearly positive or negative adjective among neutral filler, and the
prompt/candidates follow SST2's template (`<sentence> It was` + terrible/great), so the demo
exercises exactly the code path of the real task.
"""

from __future__ import annotations

import numpy as np

from zoft.examples import Example, label_index
from zoft.tasks.base import DataSource, TaskSpec, register_task
from zoft.tasks.opt_tasks import SST2

POSITIVE = ("wonderful", "excellent", "fantastic", "lovely", "brilliant", "superb", "delightful", "charming")
NEGATIVE = ("awful", "horrible", "dreadful", "poor", "boring", "ugly", "dull", "tedious")
NOUNS = ("movie", "film", "show", "story", "acting", "plot", "music", "cast", "ending", "script")
VERBS = ("was", "seemed", "felt", "looked", "sounded")
OPENERS = ("", "honestly ", "frankly ", "overall ")
SPLIT_SIZES = {"train": 2000, "test": 1000}
SPLIT_SEEDS = {"train": 1, "test": 2}


def generate_records(split: str) -> list[dict]:
    """Deterministic records for ``split``: {"sentence", "label"} with label 1 = positive."""
    rng = np.random.RandomState(SPLIT_SEEDS[split])
    records = []
    for _ in range(SPLIT_SIZES[split]):
        label = int(rng.randint(2))
        adjective = (POSITIVE if label else NEGATIVE)[rng.randint(8)]
        sentence = (
            f"{OPENERS[rng.randint(len(OPENERS))]}the {NOUNS[rng.randint(len(NOUNS))]} "
            f"{VERBS[rng.randint(len(VERBS))]} {adjective}"
        )
        records.append({"sentence": sentence, "label": label})
    return records


def _record(r) -> list[Example]:
    return [Example(fields={"sentence": r["sentence"]}, candidates=("terrible", "great"),
                    gold=label_index(r["label"], count=2))]


DEMO = register_task(
    TaskSpec(
        name="demo",
        kind="classification",
        metric="accuracy",
        source=DataSource(
            hub_id=None,
            hub_config=None,
            hub_splits={},
            local_files={"train": ("train.jsonl",), "test": ("test.jsonl",)},
            read_record=_record,
            generate=generate_records,
        ),
        prompt=SST2.prompt,
        description="built-in synthetic sentiment (offline demo)",
    )
)
