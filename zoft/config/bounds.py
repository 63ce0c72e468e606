"""The range of every number in the config, as data, and the checks that apply it.

Each numeric field of :class:`zoft.config.schema.RunConfig` has one rule here (a test keeps the
table complete). A rule is a range written as text: ``>=0``, ``>0``, ``>=1``, ``>=-1``,
``[0,1]`` (both ends included), ``[0,1)`` or ``(0,1]``. NaN and infinity are refused for every field,
whatever its rule. Null (``None``) is accepted where the schema allows it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Iterator, Optional

from omegaconf import DictConfig

from zoft.config import schema
from zoft.config.schema import RunConfig

# field -> (range, what the field is; shown after the range in an error)
RULES: dict[str, tuple[str, str]] = {
    "model.max_length": (">=8", "tokens per sequence"),
    "model.init_seed": (">=0", "a seed"),
    "model.tiny.hidden_size": (">=1", "the tiny model's width"),
    "model.tiny.num_layers": (">=1", "the tiny model's depth"),
    "model.tiny.num_heads": (">=1", "attention heads"),
    "model.tiny.ffn_dim": (">=1", "the tiny model's MLP width"),
    "model.tiny.max_positions": (">=8", "position embeddings"),
    "task.num_train": (">=0", "training examples sampled (0: none, evaluation-only methods)"),
    "task.num_dev": (">=0", "dev examples (0: no dev split)"),
    "task.num_test": (">=1", "test examples"),
    "task.sample_seed": (">=0", "a seed"),
    "task.max_new_tokens": (">=1", "generated tokens"),
    "task.k": (">=1", "examples per class"),
    "task.similarity_tau": (">0", "the similarity objective's temperature"),
    "task.max_seq_length": (">=8", "tokens per sequence"),
    "task.first_sent_limit": (">=1", "tokens"),
    "task.other_sent_limit": (">=1", "tokens"),
    "method.lora_r": (">=1", "the LoRA rank"),
    "method.lora_alpha": (">0", "the LoRA scale numerator"),
    "method.lora_dropout": ("[0,1)", "a dropout probability"),
    "method.num_prefix": (">=1", "prefix tokens"),
    "method.num_demos": (">=0", "in-context demonstrations"),
    "trainer.max_steps": (">=0", "optimizer steps"),
    "trainer.num_epochs": (">0", "epochs (null: use max_steps)"),
    "trainer.max_zo_forward_steps": (">=0", "zeroth-order forward passes before stopping (0: no limit)"),
    "trainer.batch_size": (">=1", "examples per step"),
    "trainer.eval_batch_size": (">=1", "examples per evaluation batch"),
    "trainer.grad_accum": (">=1", "micro-batches per step"),
    "trainer.warmup_steps": (">=0", "warm-up steps"),
    "trainer.eval_steps": (">=0", "steps between evaluations (0: only at the end)"),
    "trainer.num_evals": (">=0", "evaluations over training (0: only at the end)"),
    "trainer.log_steps": (">=1", "steps between log rows"),
    "trainer.cpu_threads": (">=1", "CPU threads (null: the default)"),
    "trainer.checkpoint_steps": (">=0", "steps between resumable checkpoints (0: only on signals; null: auto)"),
    "trainer.divergence_factor": (">=0", "the divergence threshold (0 disables the gradient check)"),
    "trainer.max_rollbacks": (">=0", "divergence rollbacks"),
    "kernel.outer_batch_size": (">=1", "examples per Jacobian"),
    "kernel.inner_batch_size": (">=1", "examples per block"),
    "kernel.exclude_first_layers": (">=-1", "layers left out (-1: none)"),
    "kernel.regularization": (">=0", "the ridge weight"),
    "kernel.f0_scaling": (">0", "the f0 scale"),
    "kernel.gamma": (">0", "the asymmetric kernel's gamma"),
    "kernel.asym_lambda": ("[0,1]", "a mixing weight"),
    "seed": (">=0", "a seed"),
}


def satisfies(value: float, rule: str) -> bool:
    """Whether ``value`` is in the range ``rule`` (``>=0``, ``>0``, ``[0,1)``, ...)."""
    if rule.startswith(">="):
        return value >= float(rule[2:])
    if rule.startswith(">"):
        return value > float(rule[1:])
    low, high = (float(x) for x in rule[1:-1].split(","))
    above = low <= value if rule.startswith("[") else low < value
    return above and (value <= high if rule.endswith("]") else value < high)


def spoken(rule: str) -> str:
    """``>=0`` -> ``>= 0``; ``[0,1)`` -> ``in [0, 1)``."""
    if rule[0] in "[(":
        low, high = rule[1:-1].split(",")
        return low if low == high else "in " + rule.replace(",", ", ")
    op = rule.rstrip("0123456789.-")
    return f"{op} {rule[len(op):]}"


def number_problems(cfg: DictConfig) -> list[str]:
    """One message per numeric field that is NaN, infinite or outside its range."""
    problems = []
    for key, value in numeric_leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            rule, what = RULES.get(key, ("", "a number"))
            problems.append(f"{key}={value} is not a finite number; it is {what}"
                            + (f", {spoken(rule)}" if rule else ""))
            continue
        if key in RULES and not satisfies(value, RULES[key][0]):
            rule, what = RULES[key]
            problems.append(f"{key}={value} must be {spoken(rule)} ({what})")
    return problems


def numeric_leaves(cfg: DictConfig) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every int/float leaf of the schema's fields, protocol rows aside."""
    for key in schema_numeric_fields():
        node, found = cfg, True
        for part in key.split("."):
            if not isinstance(node, DictConfig) or part not in node:
                found = False
                break
            node = node[part]
        if found and isinstance(node, (int, float)) and not isinstance(node, bool):
            yield key, node


def schema_numeric_fields() -> list[str]:
    """Every int/float field of RunConfig, as a dotted key."""
    return [key for key, kind in _walk(RunConfig, "") if kind in (int, float)]


def _walk(cls, prefix: str) -> Iterator[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(kind):
            if f.name != "protocol":  # table rows hold free-form values
                yield from _walk(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", kind


def _unwrap_optional(kind) -> Any:
    if typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind


# Other frameworks' names for zoft's keys, for the suggestion in an unknown-key error.
ALIASES = {"learning_rate": "lr", "epsilon": "eps", "zo_eps": "eps", "wd": "weight_decay",
           "steps": "max_steps", "epochs": "num_epochs", "per_device_train_batch_size": "batch_size"}


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys of ``cfg`` that the schema does not define (Hydra's ``+key=value`` adds them even to
    a typed config), each with the closest defined key."""
    known = {key for key, _ in _walk(RunConfig, "")}
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    problems = []
    for key in _cfg_keys(cfg, ""):
        if key in known or key in sections or key.split(".")[0] in ("protocol", "hydra"):
            continue
        section, _, name = key.rpartition(".")
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section)
        close = [ALIASES[name]] if ALIASES.get(name) in siblings else difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        hint = f"; did you mean {section + '.' if section else ''}{close[0]}?" if close else ""
        problems.append(f"{key} is not a config key{hint} (the `+` prefix adds new keys; "
                        "zoft's settings are all defined, so write key=value without it)")
    return problems


def _cfg_keys(node: DictConfig, prefix: str) -> Iterator[str]:
    for key in node.keys():
        full = f"{prefix}{key}"
        value = node._get_node(key)
        if isinstance(value, DictConfig) and full in _section_names():
            yield from _cfg_keys(value, f"{full}.")
        else:
            yield full


_SECTIONS: Optional[set[str]] = None


def _section_names() -> set[str]:
    """Dotted names of the schema's nested sections (model, model.tiny, trainer, ...)."""
    global _SECTIONS
    if _SECTIONS is None:
        _SECTIONS = {k.rsplit(".", 1)[0] for k, _ in _walk(RunConfig, "") if "." in k}
        _SECTIONS |= {s.rsplit(".", 1)[0] for s in list(_SECTIONS) if "." in s}
    return _SECTIONS


def schema_fields_of(class_name: str) -> list[str]:
    """Field names of the schema dataclass called ``class_name`` (for typo suggestions)."""
    cls = getattr(schema, class_name, None)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
