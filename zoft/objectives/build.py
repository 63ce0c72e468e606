"""Pick the objective for a task/model pair (each task names its natural objective)."""

from __future__ import annotations

from omegaconf import DictConfig

from zoft.models.loader import LoadedModel
from zoft.objectives.candidates import CandidateObjective
from zoft.objectives.generation import GenerationObjective
from zoft.objectives.metric import MetricObjective
from zoft.lmbff.settings import natural_objective
from zoft.objectives.mlm import build_masked_objective
from zoft.tasks.base import TaskSpec
from zoft.examples import TaskData

OBJECTIVES = ("candidates", "lm", "metric")
# Objectives each task kind supports.
KIND_OBJECTIVES = {
    "classification": ("candidates", "lm", "metric"),
    "multiple-choice": ("candidates", "lm", "metric"),
    "generation": ("lm", "metric"),
}
# Masked-LM (LM-BFF) tasks: zoft.objectives.mlm.
MASKED_OBJECTIVES = ("mlm-prompt", "cls-head", "metric")


def objective_name(cfg: DictConfig, spec: TaskSpec) -> str:
    """``task.objective`` if set, else the task's natural objective."""
    if cfg.task.objective:
        return cfg.task.objective
    if spec.kind == "generation":
        return "lm"
    return "candidates" if cfg.task.train_as_classification else "lm"


def attach_objective_head(cfg: DictConfig, spec: TaskSpec, loaded: LoadedModel) -> None:
    """Objectives that own parameters put them on the model before the method decides what
    trains: the similarity objective's scale/bias head (an encoder on an LM-BFF task)."""
    if spec.family != "masked":
        return
    name = cfg.task.objective or natural_objective(loaded.kind)
    if name == "similarity" or (name == "metric" and loaded.kind == "encoder"):
        from zoft.objectives.similarity import attach_similarity_head

        attach_similarity_head(loaded.model, len(spec.lmbff.labels))


def build_objective(cfg: DictConfig, spec: TaskSpec, loaded: LoadedModel, data: TaskData):
    """The objective of ``cfg.task`` (see :data:`KIND_OBJECTIVES`; masked-LM tasks:
    :data:`MASKED_OBJECTIVES`)."""
    if spec.family == "masked":
        return build_masked_objective(cfg, spec, loaded)
    name = objective_name(cfg, spec)
    valid = KIND_OBJECTIVES.get(spec.kind, ())
    if name not in valid:
        raise ValueError(
            f"task.objective={name!r} is not available for task {spec.name!r} ({spec.kind}); "
            f"valid here: {', '.join(valid)}"
        )
    if spec.kind == "generation":
        inner = GenerationObjective(
            spec, loaded.tokenizer, loaded.device, max_length=cfg.model.max_length,
            max_new_tokens=cfg.task.max_new_tokens, show_progress=cfg.trainer.progress_bar,
        )
    else:
        inner = CandidateObjective(
            spec,
            loaded.tokenizer,
            loaded.device,
            max_length=cfg.model.max_length,
            # The metric objective scores like classification (its loss is −accuracy).
            train_as_classification=(name != "lm") and (name != "metric" or cfg.task.train_as_classification),
            show_progress=cfg.trainer.progress_bar,
            sfc=cfg.method.sfc,
            icl_sfc=cfg.method.icl_sfc,
        )
    return MetricObjective(inner) if name == "metric" else inner
