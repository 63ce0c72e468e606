"""The paper's protocol (the original's medium_models/tools/gather_result.py): per seed the configuration with the best dev metric,
then mean and population std of its test metric over seeds, x100 with one decimal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from zoft.report.paper import OPT_TASKS, PAPER_MODELS, ROBERTA_TASKS, paper_number
from zoft.report.runs import Run, choose_metric, config_labels
from zoft.tasks import TASKS

METHOD_ORDER = ["Zero-shot", "ICL", "LP", "Head tuning", "MeZO", "MeZO (LoRA)", "MeZO (prefix)", "MeZO-Adam",
                "FT", "FT (LoRA)", "FT (prefix)", "FT (SGD)"]
TASK_ORDER = list(OPT_TASKS.values()) + list(ROBERTA_TASKS.values())


@dataclass
class Cell:
    """One (model, task, method) entry of the report."""

    model: str
    task: str
    k: Optional[int]
    method: str
    metric: str
    test: list[float]  # the chosen run's test metric per seed (0..1)
    seeds: list[tuple]
    chosen: list[str]  # the chosen configuration per seed
    n_runs: int
    n_failed: int
    n_unfinished: int
    paper: Optional[tuple[float, Optional[float]]] = None
    failures: list[str] = field(default_factory=list)

    @property
    def task_label(self) -> str:
        return self.task if self.k is None else f"{self.task} k={self.k}"

    @property
    def mean(self) -> Optional[float]:
        return round(100 * float(np.mean(self.test)), 1) if self.test else None

    @property
    def std(self) -> Optional[float]:
        return round(100 * float(np.std(self.test)), 1) if self.test else None  # population std

    @property
    def diff(self) -> Optional[float]:
        if self.paper is None or self.mean is None:
            return None
        return round(self.mean - self.paper[0], 1)


def best_per_seed(runs: list[Run], metric: str) -> list[tuple[tuple, Run]]:
    """For each seed, the run whose dev metric is highest (ties: the first configuration by name)."""
    labels = config_labels(runs)
    by_seed: dict[tuple, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: labels[r.path]):
        by_seed[run.seed_key].append(run)
    chosen = []
    for seed in sorted(by_seed, key=repr):
        candidates = by_seed[seed]

        def dev(run: Run) -> float:
            value = run.value("dev", metric)
            return -math.inf if value is None or math.isnan(value) else value

        chosen.append((seed, max(candidates, key=dev)))  # max keeps the first of equal values
    return chosen


def task_metrics(runs: list[Run], requested: Optional[str] = None) -> dict[tuple, str]:
    """The metric reported for each (model, task, k): the task's own (accuracy; F1 for SQuAD and
    DROP, as the paper), or ``requested`` (``--metric``) where that task's runs have it."""
    completed = [r for r in runs if r.status == "completed"]
    if requested:
        choose_metric(completed, requested)  # an error when no run has it
    by_task: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[(run.model, run.task, run.k)].append(run)
    chosen = {}
    for key, members in by_task.items():
        done = [r for r in members if r.status == "completed"]
        names = {m for r in done for m in r.metric_names()}
        own = TASKS[key[1]].metric if key[1] in TASKS else None
        if requested in names:
            chosen[key] = requested
        elif own in names or not names:
            chosen[key] = own or "accuracy"
        else:  # a task outside the registry: accuracy, else f1, ...
            chosen[key] = choose_metric(done, None)
    return chosen


def aggregate(runs: list[Run], metric: Optional[str] = None, paper_model: Optional[str] = None) -> list[Cell]:
    """One Cell per (model, task, k, method) group of runs, each task with its own metric
    (:func:`task_metrics`)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.model, run.task, run.k, run.method)].append(run)
    metrics = task_metrics(runs, metric)
    cells = []
    for (model, task, k, method), members in groups.items():
        metric = metrics[(model, task, k)]
        done = [r for r in members if r.status == "completed" and r.value("test", metric) is not None]
        labels = config_labels(done) if done else {}
        picks = best_per_seed(done, metric) if done else []
        lookup_model = paper_model or (model if model in PAPER_MODELS else None)
        cells.append(Cell(
            model=model, task=task, k=k, method=method, metric=metric,
            test=[run.value("test", metric) for _, run in picks], seeds=[s for s, _ in picks],
            chosen=[labels[run.path] for _, run in picks], n_runs=len(members),
            n_failed=sum(r.status == "failed" for r in members),
            n_unfinished=sum(r.status not in ("completed", "failed") for r in members),
            paper=paper_number(lookup_model, task, k, method) if lookup_model else None,
            failures=[f"{r.path.name}: {r.error}" for r in members if r.status == "failed"],
        ))
    return sort_cells(cells)


def rank_in(value: str, order: list[str]) -> tuple:
    """Sort key: the position of ``value`` in ``order``, unknown values after, by name."""
    return (order.index(value), "") if value in order else (len(order), value)


def sort_cells(cells: list[Cell]) -> list[Cell]:
    return sorted(cells, key=lambda c: (c.model, rank_in(c.task, TASK_ORDER), c.k or 0, rank_in(c.method, METHOD_ORDER)))


def _fmt(mean: Optional[float], std: Optional[float], n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f} ({std:.1f})" if n > 1 and std is not None else f"{mean:.1f}"


def cell_text(cell: Cell, with_paper: bool) -> str:
    text = _fmt(cell.mean, cell.std, len(cell.test))
    if cell.n_failed:
        text += f" [{cell.n_failed} failed]"
    if with_paper:
        if cell.paper is None:
            text += " · paper -"
        else:
            paper = _fmt(cell.paper[0], cell.paper[1], 2 if cell.paper[1] is not None else 1)
            diff = f"{cell.diff:+.1f}" if cell.diff is not None else "-"
            text += f" · paper {paper} · Δ {diff}"
    return text


def markdown(cells: list[Cell], with_paper: bool = False) -> str:
    """One table per model: rows = tasks, columns = methods."""
    out = []
    for model in sorted({c.model for c in cells}):
        mine = [c for c in cells if c.model == model]
        methods = sorted({c.method for c in mine}, key=lambda m: rank_in(m, METHOD_ORDER))
        tasks = list(dict.fromkeys(c.task_label for c in mine))
        n_seeds = sorted({len(c.test) for c in mine})
        out.append(f"### {model}: test {metric_title(mine)} x100, mean (std) over seeds "
                   f"({'/'.join(map(str, n_seeds))}), best dev configuration per seed\n")
        out.append("| task | " + " | ".join(methods) + " |")
        out.append("| --- |" + " --- |" * len(methods))
        index = {(c.task_label, c.method): c for c in mine}
        for task in tasks:
            row = [cell_text(index[(task, m)], with_paper) if (task, m) in index else "" for m in methods]
            out.append(f"| {task} | " + " | ".join(row) + " |")
        runs = sum(c.n_runs for c in mine)
        failed = sum(c.n_failed for c in mine)
        unfinished = sum(c.n_unfinished for c in mine)
        out.append(f"\n{runs} runs: {runs - failed - unfinished} completed, {failed} failed, "
                   f"{unfinished} not finished (failed and unfinished runs are left out).\n")
    return "\n".join(out)


def metric_title(cells: list[Cell]) -> str:
    """The metric of a table's tasks: "accuracy", or "accuracy (f1: squad, drop)" when tasks differ."""
    by_metric: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        if c.task_label not in by_metric[c.metric]:
            by_metric[c.metric].append(c.task_label)
    main = max(by_metric, key=lambda m: (len(by_metric[m]), m == "accuracy"))
    others = "; ".join(f"{m}: {', '.join(tasks)}" for m, tasks in by_metric.items() if m != main)
    return f"{main} ({others})" if others else main


CSV_COLUMNS = ["model", "task", "k", "method", "metric", "mean", "std", "n_seeds", "n_runs", "n_failed",
               "n_unfinished", "test_per_seed", "chosen_config_per_seed", "paper_mean", "paper_std", "diff"]


def csv_text(cells: list[Cell]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for c in cells:
        writer.writerow({
            "model": c.model, "task": c.task, "k": "" if c.k is None else c.k, "method": c.method,
            "metric": c.metric, "mean": c.mean, "std": c.std, "n_seeds": len(c.test), "n_runs": c.n_runs,
            "n_failed": c.n_failed, "n_unfinished": c.n_unfinished,
            "test_per_seed": json.dumps({"/".join(map(str, s)): round(v, 6) for s, v in zip(c.seeds, c.test)}),
            "chosen_config_per_seed": json.dumps({"/".join(map(str, s)): l for s, l in zip(c.seeds, c.chosen)}),
            "paper_mean": c.paper[0] if c.paper else "", "paper_std": (c.paper[1] if c.paper and c.paper[1] is not None else ""),
            "diff": "" if c.diff is None else c.diff,
        })
    return buf.getvalue()
