"""Registers the 14 LM-BFF tasks (LM-BFF's templates, as in the original's medium_models scripts) as ``family="masked"`` tasks named
``<task>-kshot``; their definitions are in :mod:`zoft.lmbff.catalog`."""

from __future__ import annotations


from zoft.examples import Example
from zoft.lmbff.catalog import LMBFF_TASKS, LmBffTask
from zoft.lmbff.data import load_kshot_task
from zoft.lmbff.template import parse_template, sentence_text
from zoft.tasks.base import TaskSpec, PromptFormat, register_task


def _render(template: str, ex: Example, word: str | None) -> str:
    """A readable rendering of the prompt (for logs; the objective renders token ids)."""

    out = []
    for part in parse_template(template):
        if part.kind == "special":
            out.append(word if part.value == "mask" and word is not None else f"<{part.value}>")
        elif part.kind == "sent":
            out.append(sentence_text(part, ex.fields["sentences"]))
        elif part.kind == "label":
            out.append(" " + ex.candidates[part.index])
        else:
            out.append(part.value)
    return "".join(out)


def _spec(task: LmBffTask) -> TaskSpec:
    return TaskSpec(
        name=task.name,
        kind="classification",
        metric=task.metric,
        family="masked",
        source=None,  # the k-shot files written by `zoft kshot`, read by the loader
        prompt=PromptFormat(encode=lambda ex, t=task.template: _render(t, ex, None),
                          verbalize=lambda ex, w, t=task.template: _render(t, ex, " " + w)),
        default_num_dev=0,
        description=f"{task.description}; `{task.template}` + {'/'.join(task.label_words)}",
        loader=load_kshot_task,
        lmbff=task,
    )


for _task in LMBFF_TASKS.values():
    register_task(_spec(_task))
