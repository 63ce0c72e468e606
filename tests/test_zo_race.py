"""The zeroth-order race harness (benchmarks/zo_race.py): its statistics, its pretrained start's
cache, and a smoke run checking the JSON and the forward-pass counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import race_pretrain  # noqa: E402
from race_runs import Outcome, RunSpec, eval_every  # noqa: E402
from zo_race import parse_args, spread, to_target  # noqa: E402


def _outcome(curve):
    spec = RunSpec("mezo", 1e-3, 1, 300, (), (), "unused")
    return Outcome(spec, 2, curve=curve)


def test_forward_passes_to_target_is_the_first_evaluation_at_or_below_it():
    outcome = _outcome([(0, 0.7, 0.5), (100, 0.5, 0.6), (200, 0.3, 0.9), (300, 0.35, 0.9)])
    assert to_target(outcome, 0.5) == 100
    assert to_target(outcome, 0.3) == 200
    assert to_target(outcome, 0.2) is None


def test_spread_counts_a_run_that_never_reached_as_infinite():
    assert spread([300, None, 100]) == {"median": 300, "min": 100, "max": None, "reached": 2, "runs": 3}
    assert spread([None, None, 100])["median"] is None  # most never reached: no median


@pytest.mark.parametrize("flag", ["--seeds", "--budget", "--workers"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_zero_or_negative_counts_are_refused_not_taken_for_the_default(flag, value, capsys):
    """``--seeds 0`` / ``--budget 0`` once fell back to the defaults (a truthiness test)."""
    with pytest.raises(SystemExit) as exit_:
        parse_args([flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {int(value)} must be at least 1" in err


def test_unset_counts_take_the_defaults_and_set_ones_are_kept():
    args = parse_args([])
    assert (args.seeds, args.budget, args.workers) == (4, 2000, 2)
    assert (parse_args(["--quick"]).seeds, parse_args(["--quick"]).budget) == (1, 200)
    args = parse_args(["--seeds", "1", "--budget", "7", "--quick"])
    assert (args.seeds, args.budget) == (1, 7)


def test_evaluations_come_at_least_every_100_forward_passes():
    for per_step in (1, 2, 3, 5, 9, 100, 150):
        assert eval_every(per_step) >= 1
        assert eval_every(per_step) * per_step <= max(100, per_step)


def test_the_pretrained_start_is_cached_by_content(tmp_path):
    cfg = race_pretrain.PretrainConfig(steps=2, sentences=16, batch_size=4)
    folder = race_pretrain.pretrained_folder(tmp_path, cfg, log=lambda _: None)
    assert (folder / "config.json").is_file() and (folder / "pretrain.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert race_pretrain.pretrained_folder(tmp_path, cfg, log=lambda _: None) == folder  # not trained again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = race_pretrain.PretrainConfig(steps=3, sentences=16, batch_size=4)
    assert race_pretrain.cache_key(other) != race_pretrain.cache_key(cfg)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_the_pretraining_corpus_avoids_the_demo_label_words():
    corpus = race_pretrain.pretraining_corpus(200, seed=0)
    assert all(line.endswith((" It was good", " It was bad")) for line in corpus)
    assert not any(" great" in line or " terrible" in line for line in corpus)


@pytest.mark.slow
def test_quick_race_reports_medians_and_counts_forward_passes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "zo_race.py"), "--quick", "--budget", "150", "--seeds", "2",
         "--estimators", "mezo", "fzoo", "adam", "--out", str(tmp_path / "race"),
         "--cache-dir", str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["setup"] == "tiny" and report["seeds"] == [1, 2] and "best_forward_ratio" in report
    assert (tmp_path / "race" / "zo_race_tiny.png").is_file()
    per_step = {"mezo": 2, "fzoo": 9, "adam": 3}  # FZOO: N + 1 = 9; AdamW: forward + backward (2)
    for name, expected in per_step.items():
        entry = report["estimators"][name]
        assert entry["forward_per_step"] == expected
        assert set(entry["forward_passes_to_target"]) >= {"median", "min", "max"}
        assert 0 <= entry["final_dev"] <= 1 and 0 <= entry["final_test"] <= 1
        assert len(entry["runs"]) == 2
        for run in entry["runs"]:
            assert run["forward_passes"] == run["steps"] * expected <= 150
            assert run["forward_passes"] > 150 - expected  # the whole budget is spent
            points = run["evaluated_at"]
            assert points[0] == 0 and points[-1] == run["forward_passes"]
            assert all(0 < b - a <= 100 for a, b in zip(points, points[1:]))
    # MeZO's own median sets the target, so at least half of its runs reach it.
    assert report["estimators"]["mezo"]["forward_passes_to_target"]["reached"] >= 1
    memory = {n: report["estimators"][n]["peak_mem_over_inference"] for n in per_step}
    assert memory["mezo"] < 1.5 and memory["fzoo"] < 1.5  # inference-level memory
    assert memory["adam"] > 2.5  # gradients and two moment buffers beside the weights
