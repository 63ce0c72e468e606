"""PNG plots for ``zoft report --plot``: learning curves per (model, task, method) with one line
per configuration (mean over seeds), from the evaluation before training (step 0) when the run
made one, with the checkpoint each run reported marked; and a bar chart of the test metric per
method."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from zoft.report.aggregate import METHOD_ORDER, Cell, metric_title, rank_in
from zoft.report.runs import Run, config_labels

MAX_LEGEND_CHARS = 60


def read_metrics(run_dir: Path) -> list[dict]:
    """Rows of metrics.jsonl (a truncated last line from a killed run is skipped)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def _mean_curve(series: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Average several step->value curves over the steps they all have."""
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return np.array(steps), np.array([np.mean([s[t] for s in series]) for t in steps])


def _smooth(values: np.ndarray) -> np.ndarray:
    """Centred moving average over ~1/20 of the points (MeZO's per-step loss is noisy); centred,
    so the smoothed curve does not lag behind the raw one. Edges average what is available."""
    half = len(values) // 40
    if half < 1:
        return values
    padded = np.concatenate([[0.0], np.cumsum(values, dtype=float)])
    idx = np.arange(len(values))
    lo, hi = np.clip(idx - half, 0, len(values)), np.clip(idx + half + 1, 0, len(values))
    return (padded[hi] - padded[lo]) / (hi - lo)


def _short(label: str) -> str:
    return label if len(label) <= MAX_LEGEND_CHARS else label[:MAX_LEGEND_CHARS - 1] + "…"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported here: only plotting needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(runs: list[Run], cells: list[Cell], out_dir: Path) -> list[Path]:
    """One PNG per (model, task, method): training loss and dev metric (the cell's) against the step."""
    plt = _pyplot()
    metric_of = {(c.model, c.task_label, c.method): c.metric for c in cells}
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.status == "completed":
            groups[(run.model, run.task_label, run.method)].append(run)
    written = []
    for (model, task, method), members in sorted(groups.items()):
        fig = curves_figure(plt, members, metric_of[(model, task, method)])
        fig.suptitle(f"{model} · {task} · {method}", fontsize=13)
        path = out_dir / f"curves_{slug(model)}_{slug(task)}_{slug(method)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


SMOOTH_FROM = 40  # points: fewer, and the curve is drawn raw (_smooth would average nothing)
MARKERS_UP_TO = 30  # points: up to this many, each is marked (a lone point is not a line)


def _dev_series(run: Run, rows: list[dict], metric: str) -> dict[int, float]:
    """Step -> dev metric, with step 0 from the evaluation before training when there was one."""
    series = {r["step"]: r[f"dev_{metric}"] for r in rows if f"dev_{metric}" in r}
    initial = run.value("initial_dev", metric)
    if initial is not None:
        series.setdefault(0, initial)
    return series


def curves_figure(plt, members: list[Run], metric: str):
    """Loss (left) and dev metric (right) of one group's configurations, each the mean over seeds;
    a star marks the checkpoint each run reported (its best dev step, restored at the end)."""
    labels = config_labels(members)
    by_config: dict[str, list[Run]] = defaultdict(list)
    for run in members:
        by_config[labels[run.path]].append(run)
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    smoothed = starred = has_initial = False
    for i, (label, config_runs) in enumerate(sorted(by_config.items())):
        color = colors[i % 10]
        loss_series, dev_series = [], []
        for run in config_runs:
            rows = read_metrics(run.path)
            loss_series.append({r["step"]: r["loss"] for r in rows if "loss" in r})
            dev_series.append(_dev_series(run, rows, metric))
        name = f"{_short(label)} ({len(config_runs)} seed{'s' if len(config_runs) > 1 else ''})"
        steps, loss = _mean_curve([s for s in loss_series if s])
        if len(steps) >= SMOOTH_FROM:
            ax_loss.plot(steps, loss, color=color, alpha=0.25, linewidth=0.8)
            ax_loss.plot(steps, _smooth(loss), color=color, linewidth=2, label=name)
            smoothed = True
        elif len(steps):
            ax_loss.plot(steps, loss, color=color, linewidth=2, label=name,
                         marker="o" if len(steps) <= MARKERS_UP_TO else None)
        steps, dev = _mean_curve([s for s in dev_series if s])
        if len(steps):
            ax_dev.plot(steps, 100 * dev, color=color, marker="o", linewidth=2, label=name)
            has_initial |= bool(steps[0] == 0)
            starred |= _mark_selected(ax_dev, config_runs, steps, dev, color)
    ax_loss.set(title="training loss" + (" (faint: raw, bold: smoothed)" if smoothed else ""),
                xlabel="step", ylabel="loss")
    notes = (["step 0: before training"] if has_initial else []) + \
        ([f"★ reported checkpoint ({_selection(members, metric)})"] if starred else [])
    ax_dev.set(title=f"dev {metric}" + (f"\n{'; '.join(notes)}" if notes else ""), xlabel="step",
               ylabel=f"{metric} x100")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
    handles, names = ax_loss.get_legend_handles_labels()
    if not handles:
        handles, names = ax_dev.get_legend_handles_labels()
    ncol = 1 if len(names) <= 6 else 2
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    rows_of_legend = (len(names) + ncol - 1) // ncol
    fig.tight_layout(rect=(0, min(0.45, 0.06 * rows_of_legend + 0.02), 1, 0.95))
    return fig


def _selection(members: list[Run], metric: str) -> str:
    """How the runs chose the checkpoint they report (``trainer.select_by``)."""
    select_by = {r.config.get("trainer", {}).get("select_by") for r in members}
    if select_by == {"loss"}:
        return "lowest dev loss"
    if select_by == {"metric"}:
        return f"highest dev {metric}"
    return "best dev"


def _mark_selected(ax, config_runs: list[Run], steps: np.ndarray, dev: np.ndarray, color) -> bool:
    """A star on the mean dev curve at each step a run of this configuration reported (its
    ``training.best_step``); True when one was drawn."""
    curve = dict(zip(steps.tolist(), dev.tolist()))
    chosen = sorted({r.training.get("best_step") for r in config_runs} - {None})
    at = [(step, 100 * curve[step]) for step in chosen if step in curve]
    if at:
        xs, ys = zip(*at)
        ax.scatter(xs, ys, marker="*", s=260, color=color, edgecolors="black", linewidths=0.8, zorder=4)
    return bool(at)


def bar_chart(cells: list[Cell], out_dir: Path, with_paper: bool = False) -> list[Path]:
    """One PNG per model: tasks on the x axis, one bar per method (mean, std as error bar)."""
    plt = _pyplot()
    written = []
    for model in sorted({c.model for c in cells}):
        mine = [c for c in cells if c.model == model and c.mean is not None]
        if not mine:
            continue
        fig = _bars_figure(plt, model, mine, with_paper)
        path = out_dir / f"bars_{slug(model)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _bars_figure(plt, model: str, mine: list[Cell], with_paper: bool):
    tasks = list(dict.fromkeys(c.task_label for c in mine))
    methods = sorted({c.method for c in mine}, key=lambda m: rank_in(m, METHOD_ORDER))
    index = {(c.task_label, c.method): c for c in mine}
    width = min(0.8 / len(methods), 0.3)
    span = width * len(methods)
    fig, ax = plt.subplots(figsize=(max(7.5, 2.5 + len(tasks) * len(methods) * 0.55), 5))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    paper_labelled = False
    for j, method in enumerate(methods):
        xs, heights, errs, papers = [], [], [], []
        for i, task in enumerate(tasks):
            cell: Optional[Cell] = index.get((task, method))
            if cell is None:
                continue
            xs.append(i - span / 2 + width * (j + 0.5))
            heights.append(cell.mean)
            errs.append(cell.std if len(cell.test) > 1 else 0)
            papers.append(cell.paper[0] if cell.paper else None)
        ax.bar(xs, heights, width * 0.92, yerr=errs, capsize=3, color=colors[j % 10], label=method)
        for x, h in zip(xs, heights):  # the value inside the bar: clear of error bars and paper marks
            if h >= 12:
                ax.text(x, h / 2, f"{h:.1f}", ha="center", va="center", rotation=90, fontsize=9,
                        color="white", fontweight="bold")
        px = [x for x, p in zip(xs, papers) if p is not None]
        if with_paper and px:
            py = [p for p in papers if p is not None]
            ax.scatter(px, py, marker="_", s=2000 * width, color="black", linewidths=2.5, zorder=3,
                       label=None if paper_labelled else "paper")
            paper_labelled = True
    metric = metric_title(mine)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(f"test {metric} x100" if len(metric) <= 12 else "test metric x100")
    ax.set_ylim(0, 110)
    ax.set_title(f"{model}: test {metric} x100\nmean ± std over seeds, best dev configuration per seed", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig
