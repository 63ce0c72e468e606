"""A task's prompt settings after ``task.*`` overrides, and the config checks of the masked-LM
family (run by :func:`zoft.config.validate.validate` before any data or model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from zoft.lmbff.catalog import LmBffTask
from zoft.lmbff.template import TemplateError, parse_template
from zoft.optim.registry import is_zeroth_order_name, zeroth_order_names

# Objectives of the masked family and the model kinds they run on.
MASKED_OBJECTIVES = {"mlm-prompt": ("masked",), "cls-head": ("seq-cls",), "metric": ("masked", "seq-cls")}


@dataclass(frozen=True)
class PromptSettings:
    template: str
    label_words: tuple[str, ...]
    max_seq_length: int
    first_sent_limit: Optional[int]
    other_sent_limit: Optional[int]
    truncate_head: bool


def prompt_settings(task: LmBffTask, tcfg: Any) -> PromptSettings:
    """The catalog's values, each replaced by the ``task`` config's when that is set."""
    def pick(key: str, default):
        value = tcfg.get(key) if hasattr(tcfg, "get") else getattr(tcfg, key, None)
        return default if value is None else value

    return PromptSettings(
        template=pick("template", task.template),
        label_words=tuple(str(w) for w in pick("label_words", task.label_words)),
        max_seq_length=int(pick("max_seq_length", task.max_seq_length)),
        first_sent_limit=pick("first_sent_limit", task.first_sent_limit),
        other_sent_limit=pick("other_sent_limit", task.other_sent_limit),
        truncate_head=bool(pick("truncate_head", False)),
    )


def natural_objective(model_kind: str) -> str:
    return "cls-head" if model_kind == "seq-cls" else "mlm-prompt"


def check_masked_config(cfg: Any, task: Optional[LmBffTask]) -> list[str]:
    """Problems with a masked-family run config for the LM-BFF task ``task`` (empty when fine)."""
    t = cfg.task
    if task is None:
        return []
    problems: list[str] = []
    settings = prompt_settings(task, t)
    try:
        parts = parse_template(settings.template)
        used = max((p.index for p in parts if p.kind == "sent"), default=-1)
        if used >= task.num_sentences:
            problems.append(f"task.template={settings.template!r} uses sent_{used} but {t.name} "
                            f"examples have {task.num_sentences} sentence(s)")
    except TemplateError as err:
        problems.append(f"task.template: {err}")
    if len(settings.label_words) != len(task.labels):
        problems.append(f"task.label_words has {len(settings.label_words)} words but {t.name} has "
                        f"{len(task.labels)} classes ({', '.join(task.labels)}), in that order")
    if t.get("k", 16) < 1:
        problems.append(f"task.k={t.k} must be >= 1")
    if settings.max_seq_length < 4:
        problems.append(f"task.max_seq_length={settings.max_seq_length} must be >= 4")
    objective = t.objective or natural_objective(cfg.model.kind)
    if objective not in MASKED_OBJECTIVES:
        problems.append(f"task.objective={objective!r} is not valid for masked-LM task {t.name}; "
                        f"choose one of {', '.join(MASKED_OBJECTIVES)}")
    elif cfg.model.kind in ("masked", "seq-cls") and cfg.model.kind not in MASKED_OBJECTIVES[objective]:
        # (a causal model is already reported by validate's family check)
        problems.append(
            f"task.objective={objective} needs a model of kind {' or '.join(MASKED_OBJECTIVES[objective])} "
            f"but model {cfg.model.name!r} is kind={cfg.model.kind!r}"
            + (" (e.g. model=tiny-roberta-cls, or model.kind=seq-cls)" if objective == "cls-head" else ""))
    if objective == "metric" and not is_zeroth_order_name(cfg.optimizer.name):
        problems.append(f"task.objective=metric (minus batch accuracy) has no gradient; it needs a "
                        f"zeroth-order optimizer ({', '.join(zeroth_order_names())}), not "
                        f"optimizer={cfg.optimizer.name}")
    return problems
