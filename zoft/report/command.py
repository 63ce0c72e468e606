"""The ``zoft report`` subcommand: argument parsing and output files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from zoft.report.aggregate import aggregate, csv_text, markdown
from zoft.report.paper import PAPER_MODELS
from zoft.report.runs import ReportError, load_runs

log = logging.getLogger("zoft")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="aggregate run folders as the paper reports them (table, CSV, plots)",
        description="Per seed, pick the configuration with the best dev metric; report mean (population "
                    "std) of its test metric over seeds, x100 (as medium_models/tools/gather_result.py).")
    p.add_argument("folders", nargs="+", type=Path, help="multirun or run folders (searched for results.json)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <first folder>/report)")
    p.add_argument("--metric", default=None,
                   help="report this metric for the tasks whose runs have it; the other tasks keep their own "
                        "(default: each task's own: accuracy, F1 for SQuAD/DROP, ...)")
    p.add_argument("--paper", action="store_true", help="add the paper's numbers and the difference")
    p.add_argument("--paper-model", choices=PAPER_MODELS, default=None,
                   help="compare with this model's numbers (default: the runs' model when the paper has it)")
    p.add_argument("--plot", action="store_true", help="write learning curves and a bar chart as PNG")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    runs = load_runs(args.folders)
    cells = aggregate(runs, metric=args.metric, paper_model=args.paper_model)
    if not any(c.test for c in cells):
        failures = [f for c in cells for f in c.failures][:5]
        raise ReportError(f"none of the {len(runs)} runs completed" + (": " + "; ".join(failures) if failures else ""))
    out = args.out or Path(args.folders[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(cells, with_paper=args.paper)
    (out / "report.md").write_text(table)
    (out / "report.csv").write_text(csv_text(cells))
    print(table)
    written = [out / "report.md", out / "report.csv"]
    if args.plot:
        from zoft.report.plots import bar_chart, learning_curves

        written += learning_curves(runs, cells, out)
        written += bar_chart(cells, out, with_paper=args.paper)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
