"""zoft report: the paper's protocol on hand-made runs, the paper's numbers, and a real joblib
multirun on tiny models (with failing jobs) turned into a table, CSV and plots."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from zoft.cli import main as zoft_main
from zoft.report.aggregate import aggregate, markdown
from zoft.report.paper import PAPER, paper_number
from zoft.report.runs import load_runs, method_label


def write_run(root: Path, name: str, *, task="sst2", model="opt-13b", method="ft", optimizer="mezo", lr=1e-6,
              sample_seed=0, seed=0, dev=None, test=None, status="completed", k=None, objective=None, curve=(),
              metric="accuracy", extra_metrics=None, training=None, model_kind=None):
    folder = root / name
    folder.mkdir(parents=True)
    task_cfg = {"name": task, "sample_seed": sample_seed, "objective": objective}
    if k is not None:
        task_cfg["k"] = k
    metrics = dict(extra_metrics or {})
    if dev is not None:
        metrics[f"dev_{metric}"] = dev
    if test is not None:
        metrics[f"test_{metric}"] = test
    payload = {"status": status, "metrics": metrics, "training": training,
               "config": {"model": {"name": model, **({"kind": model_kind} if model_kind else {})}, "task": task_cfg, "method": {"name": method},
                          "optimizer": {"name": optimizer, "lr": lr}, "trainer": {"max_steps": 10, "select_by": "loss"},
                          "seed": seed}}
    if status == "failed":
        payload["error"] = {"type": "RuntimeError", "message": "boom"}
    (folder / "results.json").write_text(json.dumps(payload))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return folder


def test_best_dev_config_per_seed_then_mean_and_population_std(tmp_path):
    # seed 1: lr 1e-6 wins on dev (0.8 > 0.7) -> test 0.90; seed 2: lr 1e-7 wins (0.9 > 0.6) -> 0.80.
    write_run(tmp_path, "a1", lr=1e-6, seed=1, dev=0.8, test=0.90)
    write_run(tmp_path, "b1", lr=1e-7, seed=1, dev=0.7, test=0.95)
    write_run(tmp_path, "a2", lr=1e-6, seed=2, dev=0.6, test=0.70)
    write_run(tmp_path, "b2", lr=1e-7, seed=2, dev=0.9, test=0.80)
    # A failed run (even with a better dev number) and an unfinished one are left out.
    write_run(tmp_path, "c2", lr=1e-5, seed=2, dev=0.99, test=0.1, status="failed")
    write_run(tmp_path, "d2", lr=1e-5, seed=2, status="running")
    (cell,) = aggregate(load_runs([tmp_path]))
    assert cell.method == "MeZO" and cell.metric == "accuracy"
    assert cell.test == [0.90, 0.80]
    assert cell.chosen == ["optimizer.lr=1e-06", "optimizer.lr=1e-07"]
    assert (cell.mean, cell.std) == (85.0, 5.0)  # population std of {90, 80}
    assert (cell.n_runs, cell.n_failed, cell.n_unfinished) == (6, 1, 1)
    assert cell.paper == (91.4, None) and cell.diff == -6.4  # OPT-13B SST-2 MeZO, Table 1
    table = markdown([cell], with_paper=True)
    assert "| sst2 | 85.0 (5.0) [1 failed] · paper 91.4 · Δ -6.4 |" in table


def test_groups_by_task_k_and_method(tmp_path):
    for seed, test in ((13, 0.9), (21, 0.8)):
        write_run(tmp_path, f"m{seed}", task="sst-2-kshot", model="roberta-large", k=16, sample_seed=seed,
                  seed=seed, dev=0.5, test=test)
        write_run(tmp_path, f"f{seed}", task="sst-2-kshot", model="roberta-large", k=512, optimizer="adam",
                  sample_seed=seed, seed=seed, dev=0.5, test=test - 0.1)
    cells = aggregate(load_runs([tmp_path]))
    assert [(c.task_label, c.method, c.mean, c.std) for c in cells] == [
        ("sst-2-kshot k=16", "MeZO", 85.0, 5.0), ("sst-2-kshot k=512", "FT", 75.0, 5.0)]
    assert [c.paper for c in cells] == [(90.5, 1.2), (93.9, 0.7)]  # Table 18


def test_method_labels_follow_the_paper_rows():
    def label(method, optimizer, objective=None, **extra):
        return method_label({"method": {"name": method, **extra}, "optimizer": {"name": optimizer},
                             "task": {"objective": objective}})

    assert label("ft", "mezo") == "MeZO"
    assert label("lora", "mezo") == "MeZO (LoRA)"
    assert label("prefix", "mezo") == "MeZO (prefix)"
    assert label("ft", "mezo-adam") == "MeZO-Adam"
    assert label("ft", "adam") == "FT"
    assert label("prefix", "adam") == "FT (prefix)"
    assert label("ft", "sgd") == "FT (SGD)"
    assert label("head", "adam") == "Head tuning"
    assert label("linear-probe", "adam") == "LP"
    assert label("zero-shot", "mezo") == "Zero-shot" and label("icl", "adam") == "ICL"
    assert label("ft", "mezo", objective="metric") == "MeZO (metric objective)"
    # Every other optimizer is named, never folded into FT or MeZO (issue 29).
    assert label("ft", "fzoo") == "FZOO" and label("lora", "fzoo") == "FZOO (LoRA)"
    assert label("ft", "mezo-sgd") == "MeZO-SGD" and label("prefix", "hizoo") == "HiZOO (prefix)"
    assert label("head", "mezo") == "Head tuning (MeZO)" and label("head", "sgd") == "Head tuning (SGD)"
    assert label("linear-probe", "adam", lp_then=True) == "LP-FT"
    assert label("linear-probe", "sgd", lp_then=True) == "LP-FT (SGD)"
    assert label("ft", "some-new-estimator") == "some-new-estimator"
    from zoft.optim.registry import OPTIMIZERS

    names = {label(m, o) for m in ("ft", "lora") for o in OPTIMIZERS}
    assert len(names) == 2 * len(OPTIMIZERS)  # one row per (method, optimizer)


def test_a_sweep_mixing_mezo_fzoo_and_adam_never_pools_optimizers(tmp_path):
    """Full-parameter FZOO is not the paper's FT row, and LoRA-FZOO is not a configuration of
    FT (LoRA), even with the better dev number."""
    for seed in (1, 2):
        write_run(tmp_path, f"mezo{seed}", optimizer="mezo", seed=seed, dev=0.6, test=0.80)
        write_run(tmp_path, f"fzoo{seed}", optimizer="fzoo", lr=5e-5, seed=seed, dev=0.7, test=0.70)
        write_run(tmp_path, f"adam{seed}", optimizer="adam", lr=1e-5, seed=seed, dev=0.8, test=0.90)
        write_run(tmp_path, f"lora-adam{seed}", method="lora", optimizer="adam", lr=1e-4, seed=seed, dev=0.5,
                  test=0.60)
        write_run(tmp_path, f"lora-fzoo{seed}", method="lora", optimizer="fzoo", lr=1e-4, seed=seed, dev=0.9,
                  test=0.50)
    cells = {c.method: c for c in aggregate(load_runs([tmp_path]))}
    assert sorted(cells) == ["FT", "FT (LoRA)", "FZOO", "FZOO (LoRA)", "MeZO"]
    assert {m: (c.mean, c.n_runs) for m, c in cells.items()} == {
        "MeZO": (80.0, 2), "FZOO": (70.0, 2), "FT": (90.0, 2), "FT (LoRA)": (60.0, 2), "FZOO (LoRA)": (50.0, 2)}
    assert cells["FT"].paper == (92.0, None) and cells["FZOO"].paper is None
    assert cells["FT (LoRA)"].chosen == ["default", "default"]  # one configuration: LoRA-Adam alone
    assert "| task | MeZO | FT | FT (LoRA) | FZOO | FZOO (LoRA) |" in markdown(list(cells.values()))


def test_each_task_is_reported_in_its_own_metric(tmp_path):
    """SQuAD in F1 and SST-2 in accuracy in one table; --metric f1 changes only the tasks that
    have F1 (it used to blank the accuracy tasks)."""
    write_run(tmp_path, "sst2", task="sst2", dev=0.8, test=0.9)
    write_run(tmp_path, "squad", task="squad", metric="f1", dev=0.7, test=0.8,
              extra_metrics={"dev_em": 0.5, "test_em": 0.6})
    cells = {c.task: c for c in aggregate(load_runs([tmp_path]))}
    assert (cells["sst2"].metric, cells["sst2"].mean) == ("accuracy", 90.0)
    assert (cells["squad"].metric, cells["squad"].mean) == ("f1", 80.0)
    table = markdown(list(cells.values()))
    assert "test accuracy (f1: squad) x100" in table and "| squad | 80.0 |" in table and "| sst2 | 90.0 |" in table
    cells = {c.task: c for c in aggregate(load_runs([tmp_path]), metric="em")}
    assert (cells["squad"].metric, cells["squad"].mean) == ("em", 60.0)
    assert (cells["sst2"].metric, cells["sst2"].mean) == ("accuracy", 90.0)


def test_paper_tables_hold_the_spec_numbers():
    assert paper_number("opt-13b", "drop", None, "FT") == (31.3, None)
    assert paper_number("opt-13b", "record", None, "Head tuning") == (27.1, None)  # LP row = head tuning
    assert paper_number("opt-13b", "record", None, "LP") is None
    assert paper_number("opt-66b", "squad", None, "MeZO") is None  # "needs more tuning"
    assert paper_number("roberta-large", "trec-kshot", 512, "FT (prefix)") == (97.4, 0.2)
    assert paper_number("roberta-large", "mnli-kshot", 16, "Zero-shot") == (48.8, None)
    assert paper_number("roberta-large", "sst-5-kshot", 512, "MeZO (metric objective)") == (48.9, None)
    assert len(PAPER[("opt-13b", None)]) == 11 and len(PAPER[("roberta-large", 16)]) == 6


def test_report_errors_are_one_line(tmp_path, capsys):
    assert zoft_main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    write_run(tmp_path, "x", dev=0.5, test=0.5)
    assert zoft_main(["report", str(tmp_path), "--metric", "bleu"]) == 2
    assert "--metric 'bleu'" in capsys.readouterr().err


@pytest.mark.slow
def test_joblib_multirun_with_failing_jobs_then_report_table_csv_and_plots(tmp_path):
    """Four jobs train, four fail (optimizer.lr=-1); the sweep finishes and zoft report builds
    the table and the plots from the folder."""
    sweep_dir = tmp_path / "mr"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "+sweep=opt-mezo", "method=ft", "model=tiny-opt", "launcher=joblib",
         "optimizer=mezo,adam", "optimizer.lr=1e-3,-1", "task.sample_seed=1,2", "task.num_train=32",
         "task.num_dev=16", "task.num_test=16", "trainer.max_steps=20", "trainer.log_steps=2", "trainer.eval_steps=10",
         "trainer.batch_size=8", "trainer.progress_bar=false", "trainer.eval_before_training=false",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1, proc.stderr[-3000:]  # some jobs failed: the sweep says so
    assert "sweep: 8 jobs: 4 completed, 4 failed" in proc.stdout
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    assert len(results) == 8
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 4 and all("optimizer.lr=-1" in r["error"]["message"] for r in failed)
    assert sum(r["status"] == "completed" for r in results) == 4
    # Folder names: overrides first, the seeds last.
    assert all(p.name.endswith((",sample_seed=1,seed=42", ",sample_seed=2,seed=42"))
               for p in sweep_dir.iterdir() if p.is_dir())

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "zoft", "report", str(sweep_dir), "--plot", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| task | MeZO | FT |" in report.stdout
    assert "8 runs: 4 completed, 4 failed" in report.stdout
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert {r["method"] for r in rows} == {"MeZO", "FT"}
    for row in rows:
        per_seed = json.loads(row["test_per_seed"])
        assert len(per_seed) == 2 and row["n_failed"] == "2"
        values = [100 * v for v in per_seed.values()]
        assert float(row["mean"]) == pytest.approx(round(sum(values) / 2, 1), abs=0.051)
    import matplotlib.image

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["bars_tiny-opt.png", "curves_tiny-opt_demo_FT.png", "curves_tiny-opt_demo_MeZO.png"]
    for name in pngs:
        height, width = matplotlib.image.imread(out / name).shape[:2]
        assert height >= 400 and width >= 600


def test_runs_of_other_objectives_than_the_natural_one_get_their_own_rows(tmp_path):
    """minilm-l6 is a bare encoder (similarity); with model.kind=seq-cls it trains its cls head.
    Both were one "MeZO-SGD" row; the natural objective keeps the plain label."""
    def label(model, task="sst-2-kshot", kind=None, objective=None, method="ft", optimizer="mezo-sgd", **task_extra):
        return method_label({"model": {"name": model, **({"kind": kind} if kind else {})},
                             "task": {"name": task, "objective": objective, **task_extra},
                             "method": {"name": method}, "optimizer": {"name": optimizer}})

    assert label("minilm-l6", kind="encoder") == "MeZO-SGD"  # its own kind: similarity
    assert label("minilm-l6", kind="encoder", objective="similarity") == "MeZO-SGD"
    assert label("minilm-l6", kind="seq-cls", objective="cls-head") == "MeZO-SGD (cls-head)"
    assert label("minilm-l6", kind="seq-cls") == "MeZO-SGD (cls-head)"  # the kind alone changes it
    assert label("tiny-bert-cls", kind="seq-cls") == "MeZO-SGD"  # a classifier's own objective
    assert label("tiny-bert-cls", kind="encoder", objective="similarity") == "MeZO-SGD (similarity)"
    assert label("roberta-large", optimizer="mezo") == "MeZO"
    assert label("roberta-large", objective="mlm-prompt", optimizer="mezo") == "MeZO"
    assert label("roberta-large", kind="seq-cls", method="lora", optimizer="mezo") == "MeZO (LoRA, cls-head)"
    assert label("roberta-large", objective="metric", optimizer="mezo") == "MeZO (metric objective)"
    assert label("minilm-l6", kind="seq-cls", method="zero-shot") == "Zero-shot (cls-head)"
    # OPT-protocol tasks: candidates (lm for generation, or without train_as_classification)
    assert label("opt-13b", task="sst2", optimizer="mezo") == "MeZO"
    assert label("opt-13b", task="sst2", objective="lm", optimizer="mezo") == "MeZO (lm)"
    assert label("opt-13b", task="squad", objective="lm", optimizer="mezo") == "MeZO"
    assert label("opt-13b", task="copa", objective="lm", optimizer="mezo", train_as_classification=False) == "MeZO"

    for seed in (13, 21):
        for kind, objective, test in (("encoder", None, 0.8), ("encoder", "similarity", 0.8),
                                      ("seq-cls", "cls-head", 0.6)):
            write_run(tmp_path, f"{kind}-{objective}-{seed}", task="sst-2-kshot", model="minilm-l6", k=16,
                      model_kind=kind, objective=objective, optimizer="mezo-sgd", sample_seed=seed, seed=seed,
                      dev=0.5, test=test)
    cells = aggregate(load_runs([tmp_path]))
    assert sorted((c.method, c.mean, len(c.test)) for c in cells) == [
        ("MeZO-SGD", 80.0, 2), ("MeZO-SGD (cls-head)", 60.0, 2)]


def test_kernel_runs_get_their_own_row_label():
    from zoft.report.runs import method_label

    kernel = {"mode": {"name": "kernel"}, "method": {"name": "ft"}, "optimizer": {"name": "mezo"},
              "task": {"name": "sst-2-kshot"},
              "kernel": {"formula": "signgd", "solver": "lstsq"}}
    assert method_label(kernel) == "Kernel (signgd, lstsq)"
    assert method_label({**kernel, "mode": {"name": "train"}}) == "MeZO"


def test_curves_start_before_training_mark_the_reported_checkpoint_and_title_what_is_drawn(tmp_path):
    from zoft.report.plots import _pyplot, curves_figure

    plt = _pyplot()
    curve = [{"step": s, "loss": 1.0 / s} for s in (10, 20, 30, 40)] + \
        [{"step": 20, "dev_accuracy": 0.75}, {"step": 40, "dev_accuracy": 0.70}]
    write_run(tmp_path, "few", dev=0.75, test=0.8, curve=curve, training={"steps": 40, "best_step": 20},
              extra_metrics={"initial_dev_accuracy": 0.5})
    fig = curves_figure(plt, load_runs([tmp_path / "few"]), "accuracy")
    ax_loss, ax_dev = fig.axes[:2]
    assert ax_loss.get_title() == "training loss"  # 4 points: drawn raw, each marked, nothing smoothed
    (loss_line,) = ax_loss.get_lines()
    assert loss_line.get_marker() == "o" and list(loss_line.get_xdata()) == [10, 20, 30, 40]
    (dev_line,) = ax_dev.get_lines()
    assert list(dev_line.get_xdata()) == [0, 20, 40]  # step 0: the evaluation before training
    assert list(dev_line.get_ydata()) == pytest.approx([50.0, 75.0, 70.0])
    (star,) = ax_dev.collections
    assert star.get_offsets().tolist() == [[20.0, 75.0]]  # the best step the run restored
    assert "step 0: before training" in ax_dev.get_title() and "reported checkpoint" in ax_dev.get_title()
    plt.close(fig)

    many = [{"step": s, "loss": 1.0 / s} for s in range(1, 61)] + [{"step": 60, "dev_accuracy": 0.7}]
    write_run(tmp_path, "many", dev=0.7, test=0.8, curve=many, training={"steps": 60, "best_step": 60})
    fig = curves_figure(plt, load_runs([tmp_path / "many"]), "accuracy")
    assert fig.axes[0].get_title() == "training loss (faint: raw, bold: smoothed)" and len(fig.axes[0].get_lines()) == 2
    assert fig.axes[1].get_title() == "dev accuracy\n★ reported checkpoint (lowest dev loss)"
    plt.close(fig)
