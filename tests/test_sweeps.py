"""Each paper grid in sweeps/ composes and expands (with Hydra's own sweep expansion) to exactly
the grid of the paper (paper Appendix E, Tables 15-16, and Table 3); launchers compose; folder names are readable."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_config
from zoft.train.loop import eval_interval, total_steps

SWEEPS = ROOT / "sweeps"
DATA_SEEDS = {13, 21, 42, 87, 100}

# name -> (grid as stated by the paper, method.name, optimizer.name, trainer values that must hold)
# ("every" is the dev-evaluation interval in steps that the protocol's num_evals gives.)
OPT_MEZO = {"batch_size": 16, "max_steps": 20000, "every": 4000, "lr_scheduler": "constant"}
OPT_FT = {"batch_size": 8, "num_epochs": 5, "lr_scheduler": "linear", "num_evals": 5}
RB_MEZO = {"batch_size": 64, "max_steps": 100000, "every": 10000, "select_by": "metric"}
ZO_OPT = {"batch_size": 16, "max_steps": 20000, "lr_scheduler": "constant"}
RB_FT = {"max_steps": 1000, "every": 100, "lr_scheduler": "linear", "select_by": "metric"}
PAPER_GRIDS = {
    # OPT, Table 16
    "opt-mezo": ({"optimizer.lr": {1e-6, 1e-7}}, "ft", "mezo", {"optimizer.eps": 1e-3}, OPT_MEZO),
    "opt-mezo-qa": ({"optimizer.lr": {1e-6, 5e-7, 1e-7}}, "ft", "mezo", {"optimizer.eps": 1e-3}, OPT_MEZO),
    "opt-mezo-prefix": ({"optimizer.lr": {1e-2, 1e-3}}, "prefix", "mezo",
                        {"optimizer.eps": 1e-1, "method.num_prefix": 5}, OPT_MEZO),
    "opt-mezo-prefix-qa": ({"optimizer.lr": {5e-2, 1e-2, 5e-3}}, "prefix", "mezo",
                           {"optimizer.eps": 1e-1, "method.num_prefix": 5}, OPT_MEZO),
    "opt-mezo-lora": ({"optimizer.lr": {1e-4, 5e-5}}, "lora", "mezo",
                      {"optimizer.eps": 1e-2, "method.lora_r": 8, "method.lora_alpha": 16}, OPT_MEZO),
    "opt-mezo-lora-qa": ({"optimizer.lr": {1e-4, 5e-5, 1e-5}}, "lora", "mezo",
                         {"optimizer.eps": 1e-2, "method.lora_r": 8, "method.lora_alpha": 16}, OPT_MEZO),
    "opt-ft": ({"optimizer.lr": {1e-5, 5e-5, 8e-5}}, "ft", "adam", {}, OPT_FT),
    "opt-head": ({"optimizer.lr": {1e-4, 5e-4}}, "head", "adam", {}, OPT_FT),
    # Non-differentiable objective (paper Table 3; RoBERTa reuses Table 15's MeZO grid)
    "opt-nondiff-mezo": ({"optimizer.lr": {1e-6, 5e-6, 1e-5}}, "ft", "mezo",
                         {"optimizer.eps": 1e-3, "task.objective": "metric"}, {"batch_size": 16}),
    "opt-nondiff-mezo-prefix": ({"optimizer.lr": {1e-1, 5e-2, 1e-2}}, "prefix", "mezo",
                                {"optimizer.eps": 1e-1, "task.objective": "metric"}, {"batch_size": 16}),
    "roberta-nondiff-mezo": ({"optimizer.lr": {1e-7, 1e-6, 1e-5}, "task.k": {512},
                              "task.sample_seed": DATA_SEEDS}, "ft", "mezo",
                             {"optimizer.eps": 1e-3, "task.objective": "metric"}, RB_MEZO),
    # RoBERTa-large, Table 15 (k = 16 and 512, five data seeds)
    "roberta-mezo": ({"optimizer.lr": {1e-7, 1e-6, 1e-5}, "task.k": {16, 512}, "task.sample_seed": DATA_SEEDS},
                     "ft", "mezo", {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.0}, RB_MEZO),
    "roberta-mezo-prefix": ({"optimizer.lr": {1e-2, 5e-3, 1e-3}, "task.k": {16, 512},
                             "task.sample_seed": DATA_SEEDS}, "prefix", "mezo",
                            {"optimizer.eps": 1e-1, "method.num_prefix": 5}, RB_MEZO),
    "roberta-mezo-lora": ({"optimizer.lr": {1e-5, 5e-5, 1e-4}, "task.k": {16, 512},
                           "task.sample_seed": DATA_SEEDS}, "lora", "mezo",
                          {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.1, "method.lora_r": 8}, RB_MEZO),
    "roberta-mezo-adam": ({"optimizer.lr": {1e-6, 1e-5, 1e-4, 5e-4, 1e-3}, "task.k": {16, 512},
                           "task.sample_seed": DATA_SEEDS}, "ft", "mezo-adam", {"optimizer.eps": 1e-3}, RB_MEZO),
    "roberta-ft-adam-k16": ({"trainer.batch_size": {2, 4, 8}, "optimizer.lr": {1e-5, 3e-5, 5e-5},
                             "task.k": {16}, "task.sample_seed": DATA_SEEDS}, "ft", "adam", {}, RB_FT),
    "roberta-ft-adam-k512": ({"trainer.batch_size": {8, 16, 32}, "optimizer.lr": {1e-5, 3e-5, 5e-5},
                              "task.k": {512}, "task.sample_seed": DATA_SEEDS}, "ft", "adam", {}, RB_FT),
    "roberta-ft-sgd-k16": ({"trainer.batch_size": {2, 4, 8}, "optimizer.lr": {1e-4, 5e-4, 1e-3, 5e-3, 1e-2},
                            "task.k": {16}, "task.sample_seed": DATA_SEEDS}, "ft", "sgd", {}, RB_FT),
    "roberta-ft-sgd-k512": ({"trainer.batch_size": {8, 16, 32}, "optimizer.lr": {1e-4, 5e-4, 1e-3, 5e-3, 1e-2},
                             "task.k": {512}, "task.sample_seed": DATA_SEEDS}, "ft", "sgd", {}, RB_FT),
    "roberta-ft-prefix": ({"trainer.batch_size": {8, 16, 32}, "optimizer.lr": {1e-2, 3e-2, 5e-2},
                           "task.k": {16, 512}, "task.sample_seed": DATA_SEEDS}, "prefix", "adam",
                          {"method.num_prefix": 5}, RB_FT),
    "roberta-ft-lora": ({"trainer.batch_size": {4, 8, 16}, "optimizer.lr": {1e-4, 3e-4, 5e-4},
                         "task.k": {16, 512}, "task.sample_seed": DATA_SEEDS}, "lora", "adam",
                        {"method.lora_r": 8, "method.lora_alpha": 16}, RB_FT),
    # Table 4 ablation grid: 10K forward passes = 5,000 MeZO steps, k = 16
    "roberta-ablation": ({"trainer.batch_size": {16, 64}, "optimizer.lr": {1e-5, 1e-6, 1e-7},
                          "optimizer.eps": {1e-3, 1e-5}, "optimizer.weight_decay": {0, 0.1},
                          "task.k": {16}, "task.sample_seed": DATA_SEEDS}, "ft", "mezo", {},
                         {"max_steps": 5000, "lr_scheduler": "constant"}),
    # zoft.optim.estimators on OPT (grids of their authors' code; see each sweep file)
    **{f"opt-{n}": ({"optimizer.lr": {1e-5, 1e-6, 1e-7, 1e-8}, "optimizer.eps": {1e-2, 1e-3, 1e-4}}, "ft", n,
                    {"optimizer.weight_decay": 0.0}, ZO_OPT) for n in ("zo-sgd-sign", "zo-sgd-mmt", "zo-sgd-cons")},
    "roberta-mezo-norm": ({"optimizer.lr": {1e-7, 1e-6, 1e-5}, "optimizer.zo_variant": {"param_norm", "grad_norm"},
                           "task.sample_seed": DATA_SEEDS}, "ft", "mezo-norm",
                          {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.0, "task.k": 16}, RB_MEZO),
    "opt-forward-grad": ({"optimizer.lr": {1e-5, 1e-6, 5e-7, 1e-7, 1e-8}}, "ft", "forward-grad",
                         {"optimizer.weight_decay": 0.0}, ZO_OPT),
    "opt-fzoo": ({"optimizer.lr": {1e-4, 5e-5, 2.5e-5}}, "ft", "fzoo",
                 {"optimizer.eps": 1e-4, "optimizer.n_directions": 8}, {"batch_size": 16}),
    "opt-hizoo-l": ({"optimizer.lr": {1e-6, 1e-7}}, "ft", "hizoo-l",
                    {"optimizer.eps": 1e-3, "optimizer.hessian_smooth": 1e-10}, {"batch_size": 16}),
    "opt-hizoo": ({"optimizer.lr": {1e-6, 1e-7}}, "ft", "hizoo",
                  {"optimizer.eps": 1e-3, "optimizer.hessian_smooth": 1e-10}, {"batch_size": 16}),
    **{f"opt-{n}": ({"optimizer.lr": {1e-6, 1e-7}}, "ft", n, {"optimizer.eps": 1e-3}, ZO_OPT)
       for n in ("sparse-mezo", "mezo-one-point", "mezo-nspsa", "subzero")},
    "opt-lozo": ({"optimizer.lr": {1e-6, 1e-7}, "optimizer.lowrank_rank": {1, 2}, "optimizer.lowrank_interval": {50, 100}},
                 "ft", "lozo", {"optimizer.eps": 1e-3}, ZO_OPT),
}
# Job counts the paper's grids imply (per task), written out rather than recomputed.
PAPER_SIZES = {
    "opt-mezo": 2, "opt-mezo-qa": 3, "opt-mezo-prefix": 2, "opt-mezo-prefix-qa": 3, "opt-mezo-lora": 2,
    "opt-mezo-lora-qa": 3, "opt-ft": 3, "opt-head": 2, "opt-nondiff-mezo": 3, "opt-nondiff-mezo-prefix": 3,
    "roberta-nondiff-mezo": 15, "roberta-mezo": 30, "roberta-mezo-prefix": 30, "roberta-mezo-lora": 30,
    "roberta-mezo-adam": 50, "roberta-ft-adam-k16": 45, "roberta-ft-adam-k512": 45, "roberta-ft-sgd-k16": 75,
    "roberta-ft-sgd-k512": 75, "roberta-ft-prefix": 90, "roberta-ft-lora": 90, "roberta-ablation": 120,
    "opt-zo-sgd-sign": 12, "opt-zo-sgd-mmt": 12, "opt-zo-sgd-cons": 12, "opt-fzoo": 3, "opt-hizoo": 2, "opt-hizoo-l": 2,
    "opt-sparse-mezo": 2, "opt-mezo-one-point": 2, "opt-mezo-nspsa": 2, "opt-lozo": 8, "opt-subzero": 2,
    "opt-forward-grad": 5, "roberta-mezo-norm": 30,
}
NOT_GRIDS = {"optuna-mezo"}  # a search space, not a paper grid


def sweep_params(name: str) -> dict[str, str]:
    return dict(OmegaConf.load(SWEEPS / f"{name}.yaml").hydra.sweeper.params)


def expand(params: dict[str, str], cli: list[str] = ()) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches: config params, then command-line overrides."""
    lines = [f"{k}={v}" for k, v in params.items()] + list(cli)
    overrides = OverridesParser.create().parse_overrides(lines)
    batches = BasicSweeper.split_arguments(overrides, None)
    return [job for batch in batches for job in batch]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:  # a choice (optimizer.zo_variant=grad_norm)
        return text
    return int(value) if value.is_integer() and "e" not in text.lower() and "." not in text else value


def test_every_sweep_file_is_a_known_grid():
    names = {p.stem for p in SWEEPS.glob("*.yaml")}
    assert names == set(PAPER_GRIDS) | NOT_GRIDS


def test_sweep_group_is_on_the_config_search_path():
    # conf/sweep is a link to the repository's sweeps/ folder: `+sweep=<name>` finds these files.
    assert (CONF / "sweep").resolve() == SWEEPS.resolve()


@pytest.mark.parametrize("name", sorted(PAPER_GRIDS))
def test_sweep_expands_to_the_paper_grid(name):
    grid = PAPER_GRIDS[name][0]
    jobs = expand(sweep_params(name))
    assert len(jobs) == PAPER_SIZES[name]
    assert len({tuple(sorted(j)) for j in jobs}) == len(jobs)  # no duplicate job
    seen: dict[str, set] = {}
    for job in jobs:
        for line in job:
            key, value = line.split("=", 1)
            seen.setdefault(key, set()).add(_number(value))
    assert seen == grid
    size = 1
    for values in grid.values():
        size *= len(values)
    assert size == len(jobs)


def test_command_line_narrows_a_sweep():
    # `task.k=16` on the command line replaces the sweep's task.k values: half the jobs.
    assert len(expand(sweep_params("roberta-mezo"), ["task.k=16"])) == 15
    assert len(expand(sweep_params("opt-mezo"), ["task=sst2,rte"])) == 4


def _missing_pieces(name: str) -> list[str]:
    """Options or keys a sweep references that this checkout does not have (yet)."""
    raw = OmegaConf.load(SWEEPS / f"{name}.yaml")
    missing = []
    for entry in raw.get("defaults", []):
        for key, option in dict(entry).items():
            group = key.split(" ")[-1].lstrip("/")
            if group.startswith("hydra/"):
                continue
            if not (CONF / group / f"{option}.yaml").exists():
                missing.append(f"{group}={option}")
    base = compose_config(["task=sst2"])
    for key in list(raw.hydra.sweeper.params) + list(PAPER_GRIDS[name][3]):
        if OmegaConf.select(base, key, default="__absent__") == "__absent__":
            missing.append(key)
    return missing


@pytest.mark.parametrize("name", sorted(PAPER_GRIDS))
def test_each_job_of_a_sweep_composes(name):
    grid, method, optimizer, fixed, trainer = PAPER_GRIDS[name]
    missing = _missing_pieces(name)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, which this checkout does not have yet")
    first_job = expand(sweep_params(name))[0]
    cfg = compose_config([f"+sweep={name}", "task=sst2", *first_job])
    assert cfg.method.name == method
    assert cfg.optimizer.name == optimizer
    for line in first_job:
        key, value = line.split("=", 1)
        assert OmegaConf.select(cfg, key) == pytest.approx(_number(value)), key
    for key, value in fixed.items():
        assert OmegaConf.select(cfg, key) == value, key
    for key, value in trainer.items():
        if key == "every":
            assert eval_interval(cfg.trainer, total_steps(cfg.trainer, 1000)) == value
        else:
            assert cfg.trainer[key] == value, key
    if "task.sample_seed" in grid:  # RoBERTa grids: the run seed follows the data seed
        assert cfg.seed == cfg.task.sample_seed
    # The paper's model unless the command line picks another.
    assert cfg.model.name == ("opt-13b" if name.startswith("opt") else "roberta-large")
    assert compose_config([f"+sweep={name}", "task=sst2", "model=tiny-opt"]).model.name == "tiny-opt"


def test_optuna_sweep_composes_with_the_optuna_sweeper():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+sweep=optuna-mezo"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and "interval(1e-7, 1e-4)" in sweeper.params["optimizer.lr"]


def _hydra_cfg(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher,target", [
    ("local", "BasicLauncher"), ("joblib", "JoblibLauncher"), ("slurm", "hydra_plugins.zoft_launchers.slurm.SlurmLauncher"),
])
def test_launchers_compose(launcher, target):
    if launcher == "slurm":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _hydra_cfg([f"launcher={launcher}"])
    assert cfg.hydra.runtime.choices.launcher == launcher
    assert cfg.hydra.launcher._target_.endswith(target)


def test_job_folder_names_put_overrides_first_and_seeds_last():
    from zoft.config.resolvers import job_subdir

    assert job_subdir(3, "optimizer.lr=1e-06,task.k=16", 13, 13) == "3_optimizer.lr=1e-06,task.k=16,sample_seed=13,seed=13"
    assert job_subdir(0, "", 0, 42) == "0_sample_seed=0,seed=42"
    long_a, long_b = ",".join(f"trainer.key{i}=value" for i in range(40)), ",".join(f"trainer.key{i}=other" for i in range(40))
    name_a, name_b = job_subdir(7, long_a, 13, 13), job_subdir(7, long_b, 13, 13)
    assert len(name_a.encode()) < 255 and name_a.endswith(",sample_seed=13,seed=13") and name_a != name_b
    excluded = _hydra_cfg([]).hydra.job.config.override_dirname.exclude_keys
    assert {"seed", "task.sample_seed", "sweep"} <= set(excluded)


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_reports_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import json
    import os
    import subprocess
    import sys

    import yaml

    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "+sweep=optuna-mezo", "hydra.sweeper.n_trials=3",
         "task.num_train=16", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=4", "trainer.eval_steps=2",
         "trainer.progress_bar=false", "trainer.eval_before_training=false", f"hydra.sweep.dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json")]
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials)
    assert best["best_value"] == max(t["metrics"]["dev_accuracy"] for t in trials)
    assert 1e-7 <= best["best_params"]["optimizer.lr"] <= 1e-4


def test_job_folders_are_named_by_the_overrides_that_vary(tmp_path):
    """train.py pins the sweep folder (the clock read once) and leaves the overrides every job
    shares (typed constants, a sweep file's single values) out of the job folder names."""
    from zoft.config.resolvers import job_subdir
    from zoft.frontend import preflight

    typed = ["+sweep=roberta-mezo", "task=sst2", "task.k=16", "trainer.progress_bar=false"]
    argv = preflight(["-m", *typed, f"hydra.sweep.dir={tmp_path}/${{now:%H-%M-%S-%f}}"], CONF)
    pinned = [a for a in argv if a.startswith(("hydra.sweep.dir=", "hydra.job.config"))]
    assert len(pinned) == 2 and "${" not in pinned[0]
    job = _hydra_cfg([*typed, *pinned, "optimizer.lr=1e-07", "task.sample_seed=13"]).hydra.job
    assert job.override_dirname == "optimizer.lr=1e-07"
    assert job_subdir(0, job.override_dirname, 13, 13) == "0_optimizer.lr=1e-07,sample_seed=13,seed=13"


def test_the_sweep_ends_with_its_folder_and_the_report_command(tmp_path):
    from zoft.sweep_summary import job_label, summary_lines

    lines = summary_lines({"completed": [tmp_path / "0_a"], "failed": [tmp_path / "1_b"]}, tmp_path)
    assert lines == ["sweep: 2 jobs: 1 completed, 1 failed", f"  failed: {tmp_path / '1_b'}",
                     f"sweep folder: {tmp_path}", f"report: zoft report {tmp_path}"]
    assert job_label() == ""  # not in a multirun job
