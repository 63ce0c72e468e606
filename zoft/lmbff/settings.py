"""A task's prompt settings after ``task.*`` overrides, and the config checks of the masked-LM
family (run by :func:`zoft.config.validate.validate` before any data or model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from zoft.lmbff.catalog import LmBffTask
from zoft.lmbff.template import TemplateError, label_texts, parse_template
from zoft.optim.registry import is_zeroth_order_name, zeroth_order_names

# Objectives of the masked family and the model kinds they run on.
# ``similarity`` is for encoders without an MLM head (``kind=encoder``, e.g. a sentence encoder).
MASKED_OBJECTIVES = {"mlm-prompt": ("masked",), "cls-head": ("seq-cls",), "similarity": ("encoder",),
                     "metric": ("masked", "seq-cls", "encoder")}
# How an encoder's sentence feature is pooled (model.pooling; null: the objective's own default).
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class PromptSettings:
    template: str
    label_words: tuple[str, ...]
    max_seq_length: int
    first_sent_limit: Optional[int]
    other_sent_limit: Optional[int]
    truncate_head: bool
    label_texts: tuple[str, ...]  # the similarity objective's class descriptions


def prompt_settings(task: LmBffTask, tcfg: Any) -> PromptSettings:
    """The catalog's values, each replaced by the ``task`` config's when that is set."""
    def pick(key: str, default):
        value = tcfg.get(key) if hasattr(tcfg, "get") else getattr(tcfg, key, None)
        return default if value is None else value

    template = pick("template", task.template)
    words = tuple(str(w) for w in pick("label_words", task.label_words))
    texts = pick("label_texts", None)
    if texts is None:
        try:  # derived from the template; a broken template is reported by check_masked_config
            texts = label_texts(template, words)
        except TemplateError:
            texts = words
    return PromptSettings(
        template=template,
        label_words=words,
        max_seq_length=int(pick("max_seq_length", task.max_seq_length)),
        first_sent_limit=pick("first_sent_limit", task.first_sent_limit),
        other_sent_limit=pick("other_sent_limit", task.other_sent_limit),
        truncate_head=bool(pick("truncate_head", False)),
        label_texts=tuple(str(t) for t in texts),
    )


def natural_objective(model_kind: str) -> str:
    """The LM-BFF objective a model kind gets when ``task.objective`` is not set: a prompt through
    the MLM head, the task head of a classifier, or (an encoder without either) similarity to the
    label texts."""
    return {"seq-cls": "cls-head", "encoder": "similarity"}.get(model_kind, "mlm-prompt")


OBJECTIVE_REASONS = {"mlm-prompt": "the prompt through the MLM head",
                     "cls-head": "a sequence classifier: its task head, no prompt",
                     "similarity": "an encoder without an MLM head: cosine to the label texts"}


def objective_note(cfg: Any, typed_keys: Optional[set] = None) -> str:
    """The protocol block's line for the objective of an LM-BFF run: which one, and why."""
    chosen = cfg.task.get("objective")
    if chosen:
        origin = "command line" if typed_keys is not None and "task.objective" in typed_keys else "set"
        return f"  {'objective':<13}{chosen:<10} {origin}"
    name = natural_objective(cfg.model.kind)
    return f"  {'objective':<13}{name:<10} model kind {cfg.model.kind}: {OBJECTIVE_REASONS[name]}"


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
    if len(settings.label_texts) != len(task.labels) or not all(x.strip() for x in settings.label_texts):
        problems.append(f"task.label_texts={list(settings.label_texts)} must give one non-empty text per class of "
                        f"{t.name} ({', '.join(task.labels)}), in that order")
    pooling = cfg.model.get("pooling")
    if pooling is not None and pooling not in POOLINGS:
        problems.append(f"model.pooling={pooling!r} is not valid; choose one of {', '.join(POOLINGS)} (or null)")
    if t.get("k", 16) < 1:
        problems.append(f"task.k={t.k} must be >= 1")
    if settings.max_seq_length < 4:
        problems.append(f"task.max_seq_length={settings.max_seq_length} must be >= 4")
    objective = t.objective or natural_objective(cfg.model.kind)
    if objective not in MASKED_OBJECTIVES:
        problems.append(f"task.objective={objective!r} is not valid for masked-LM task {t.name}; "
                        f"choose one of {', '.join(MASKED_OBJECTIVES)}")
    elif cfg.model.kind in ("masked", "seq-cls", "encoder") and cfg.model.kind not in MASKED_OBJECTIVES[objective]:
        # (a causal model is already reported by validate's family check)
        problems.append(
            f"task.objective={objective} needs a model of kind {' or '.join(MASKED_OBJECTIVES[objective])} "
            f"but model {cfg.model.name!r} is kind={cfg.model.kind!r}"
            + (" (e.g. model=tiny-roberta-cls, or model.kind=seq-cls)" if objective == "cls-head" else "")
            + (" (e.g. model=tiny-bert, or model.kind=encoder)" if objective == "similarity" else ""))
    if objective == "metric" and not is_zeroth_order_name(cfg.optimizer.name):
        problems.append(f"task.objective=metric (minus batch accuracy) has no gradient; it needs a "
                        f"zeroth-order optimizer ({', '.join(zeroth_order_names())}), not "
                        f"optimizer={cfg.optimizer.name}")
    return problems
