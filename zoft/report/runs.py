"""Finding runs under folders and naming what each one ran (task, method, configuration)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from zoft.config.groups import group_options, option_file
from zoft.errors import ZoftUserError
from zoft.lmbff.settings import natural_objective
from zoft.tasks import TASKS

log = logging.getLogger("zoft")

# Preferred report metric when a run has several (the paper: accuracy, F1 for SQuAD/DROP).
METRIC_PREFERENCE = ("accuracy", "f1", "em", "exact_match", "mcc")
EVAL_ONLY_LABELS = {"zero-shot": "Zero-shot", "icl": "ICL"}
# The row name of each optimizer: the paper's (MeZO, MeZO-Adam, FT) or the estimator's authors'.
# Every optimizer has its own name, so runs of different optimizers are never pooled into one
# row (an optimizer missing here is named as typed: optimizer.name).
OPTIMIZER_LABELS = {
    "adam": "FT", "sgd": "FT", "mezo": "MeZO", "mezo-adam": "MeZO-Adam", "mezo-sgd": "MeZO-SGD",
    "zo-sgd-sign": "ZO-SGD-Sign", "zo-sgd-mmt": "ZO-SGD-MMT", "zo-sgd-cons": "ZO-SGD-Cons", "fzoo": "FZOO",
    "hizoo": "HiZOO", "hizoo-l": "HiZOO-L", "sparse-mezo": "Sparse-MeZO", "mezo-one-point": "MeZO one-point",
    "mezo-nspsa": "MeZO n-SPSA", "lozo": "LOZO", "subzero": "SubZero", "forward-grad": "Forward-Grad",
    "mezo-norm": "MeZO-norm",
}
PEFT_LABELS = {"lora": "LoRA", "prefix": "prefix", "prompt": "prompt"}
# Config keys that never distinguish one configuration from another.
IGNORED_PREFIXES = ("logger.", "launcher.", "output_dir", "extra.", "trainer.progress_bar", "trainer.num_workers",
                    "model.path", "model.device", "task.data_dir", "save_model")


class ReportError(ZoftUserError):
    """Nothing to report, or a bad report option."""


@dataclass
class Run:
    path: Path
    status: str
    config: dict[str, Any]
    metrics: dict[str, float]
    error: Optional[str] = None
    flat: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # results.json "training": steps, best_step, ...

    @property
    def model(self) -> str:
        return self.config["model"]["name"]

    @property
    def task(self) -> str:
        return self.config["task"]["name"]

    @property
    def k(self) -> Optional[int]:
        """Shots per class, for k-shot (masked-LM) tasks only; the OPT protocol has no k."""
        spec = TASKS.get(self.task)
        return self.config["task"].get("k") if spec is not None and spec.family == "masked" else None

    @property
    def task_label(self) -> str:
        return self.task if self.k is None else f"{self.task} k={self.k}"

    @property
    def method(self) -> str:
        return method_label(self.config)

    @property
    def seed_key(self) -> tuple:
        """The data seed and the run seed: one 'seed' of the paper's mean (std)."""
        return (self.config["task"].get("sample_seed"), self.config.get("seed"))

    def value(self, split: str, metric: str) -> Optional[float]:
        v = self.metrics.get(f"{split}_{metric}")
        return None if v is None else float(v)

    def metric_names(self) -> list[str]:
        return sorted(k[5:] for k in self.metrics if k.startswith("test_") and k != "test_loss")


def method_label(config: dict[str, Any]) -> str:
    """The row name of a run, one per (method, optimizer): the paper's ("MeZO", "MeZO (LoRA)",
    "MeZO-Adam", "FT (prefix)", "FT (SGD)", "LP", ...) or the estimator's ("FZOO", "HiZOO (LoRA)")."""
    method = config["method"]["name"]
    optimizer = config["optimizer"]["name"]
    if config.get("mode", {}).get("name") == "kernel" or optimizer == "kernel":  # (optimizer=kernel: older runs)
        kernel = config.get("kernel", {})
        return f"Kernel ({kernel.get('formula', 'sgd')}, {kernel.get('solver', 'logistic')})"
    objective = objective_detail(config)
    if method in EVAL_ONLY_LABELS:  # no optimizer runs
        return EVAL_ONLY_LABELS[method] + (f" ({objective})" if objective else "")
    base = OPTIMIZER_LABELS.get(optimizer, optimizer)
    if method == "linear-probe":
        if not config["method"].get("lp_then"):
            return "LP"  # a logistic regression on the features: no optimizer runs
        base = f"LP-{base}"
    details = ["SGD"] if optimizer == "sgd" else []
    if method == "head":  # the paper's head tuning is backprop with Adam; others name their optimizer
        base, details = "Head tuning", details if optimizer in ("adam", "sgd") else [base]
    if method in PEFT_LABELS:
        details.append(PEFT_LABELS[method])
    elif method not in ("ft", "head", "linear-probe"):
        details.append(method)
    if objective:
        details.append(objective)
    return base + (f" ({', '.join(details)})" if details else "")


def objective_detail(config: dict[str, Any]) -> Optional[str]:
    """The objective a run's label names: None for the natural objective of its task and model
    (so those labels stay the paper's), "metric objective" for the non-differentiable one (the
    paper's rows), else the objective's name ("similarity", "cls-head", "lm", ...), so that runs
    of different objectives are never pooled into one row.

    The natural objective is the one the run gets with ``task.objective`` unset: a masked-LM
    (LM-BFF) task's follows the model's *own* kind (conf/model/<name>.yaml: mlm-prompt, cls-head
    for a sequence classifier, similarity for a bare encoder), so ``model=minilm-l6
    model.kind=seq-cls`` (cls-head) is told apart from ``model=minilm-l6`` (similarity); an
    OPT-protocol task's is candidates (lm for generation tasks and with
    ``task.train_as_classification=false``)."""
    task = config.get("task", {})
    chosen = task.get("objective")
    if chosen == "metric":
        return "metric objective"
    spec = TASKS.get(task.get("name"))
    if spec is None:
        return chosen or None
    if spec.family == "masked":
        model = config.get("model", {})
        own_kind = model_kinds().get(model.get("name")) or model.get("kind")
        natural = natural_objective(own_kind)
        used = chosen or natural_objective(model.get("kind") or own_kind)
    else:
        natural = "lm" if spec.kind == "generation" or not task.get("train_as_classification", True) else "candidates"
        used = chosen or natural
    return None if used == natural else used


@lru_cache(maxsize=1)
def model_kinds() -> dict[str, str]:
    """model.name -> model.kind of every conf/model/*.yaml (empty without the conf folder)."""
    kinds = {}
    for option in group_options("model"):
        try:  # unresolved: a name written as an interpolation (hf-causal.yaml) is no model name
            node = option_file("model", option)
        except Exception as err:  # noqa: BLE001 - a broken file only loses its model's default kind
            log.warning("skipping conf/model/%s.yaml: %s", option, err)
            continue
        name, kind = node.get("name"), node.get("kind")
        if isinstance(name, str) and "${" not in name and isinstance(kind, str):
            kinds[name] = kind
    return kinds


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _is_config_key(key: str) -> bool:
    if key.split(".")[-1].endswith("seed"):
        return False
    return not any(key == p or key.startswith(p) for p in IGNORED_PREFIXES)


def load_runs(folders: list[Path]) -> list[Run]:
    """Every ``results.json`` under the folders (recursively), sorted by path."""
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            raise ReportError(f"{folder} does not exist; pass multirun or run folders that contain results.json")
        paths = [folder / "results.json"] if (folder / "results.json").is_file() else sorted(folder.rglob("results.json"))
        for path in paths:
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                log.warning("skipping %s: %s", path, err)
                continue
            config = data.get("config") or {}
            if not all(k in config for k in ("model", "task", "method", "optimizer")):
                log.warning("skipping %s: no zoft config in it", path)
                continue
            error = data.get("error")
            runs.append(Run(path=path.parent, status=data.get("status", "unknown"), config=config,
                            metrics=data.get("metrics") or {},
                            error=f"{error['type']}: {error['message']}" if error else None,
                            training=data.get("training") or {},
                            flat={k: v for k, v in flatten(config).items() if _is_config_key(k)}))
    if not runs:
        raise ReportError(f"no results.json under {', '.join(map(str, folders))}")
    return sorted(runs, key=lambda r: str(r.path))


def config_labels(runs: list[Run]) -> dict[Path, str]:
    """Name each run by the config values that differ within ``runs`` ("optimizer.lr=1e-06")."""
    keys = sorted({k for r in runs for k in r.flat})
    # An optimizer key that only some runs have is one option's own setting (or a key of the flat
    # schema of older records): the optimizer's name already tells those runs apart.
    varying = [k for k in keys if len({repr(r.flat.get(k)) for r in runs}) > 1
               and not k.startswith("optimizer._") and not (k.startswith("optimizer.") and not all(k in r.flat for r in runs))]
    labels = {}
    for run in runs:
        parts = [f"{k}={run.flat.get(k)}" for k in varying]
        labels[run.path] = ",".join(parts) if parts else "default"
    return labels


def choose_metric(runs: list[Run], requested: Optional[str]) -> str:
    names = sorted({m for r in runs for m in r.metric_names()})
    if requested:
        if requested not in names:
            raise ReportError(f"--metric {requested!r} is not in these runs; they have: {', '.join(names) or 'none'}")
        return requested
    for name in METRIC_PREFERENCE:
        if name in names:
            return name
    if not names:
        raise ReportError("the completed runs have no test metric")
    return names[0]
