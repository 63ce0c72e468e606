"""Each paper grid in sweeps/ composes and expands (with Hydra's own sweep expansion) to exactly
the grid of its one source, zoft.config.grids (the protocol table's grids plus the fields the
table does not carry); launchers compose; folder names are readable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_config
from zoft.config.grids import BEYOND_TABLE, NOT_GRIDS, sweep_grid, table_grid
from zoft.train.loop import eval_interval, total_steps

SWEEPS = ROOT / "sweeps"

# name -> (method.name, optimizer.name, values the sweep file fixes, trainer values that must hold).
# The grids themselves come from zoft.config.grids. ("every" is the dev-evaluation interval in
# steps that the protocol's num_evals gives.)
OPT_MEZO = {"batch_size": 16, "max_steps": 20000, "every": 4000, "lr_scheduler": "constant"}
OPT_FT = {"batch_size": 8, "num_epochs": 5, "lr_scheduler": "linear", "num_evals": 5}
RB_MEZO = {"batch_size": 64, "max_steps": 100000, "every": 10000, "select_by": "metric"}
ZO_OPT = {"batch_size": 16, "max_steps": 20000, "lr_scheduler": "constant"}
RB_FT = {"max_steps": 1000, "every": 100, "lr_scheduler": "linear", "select_by": "metric"}
PAPER_SWEEPS = {
    # OPT, Table 16
    "opt-mezo": ("ft", "mezo", {"optimizer.eps": 1e-3}, OPT_MEZO),
    "opt-mezo-qa": ("ft", "mezo", {"optimizer.eps": 1e-3}, OPT_MEZO),
    "opt-mezo-prefix": ("prefix", "mezo", {"optimizer.eps": 1e-1, "method.num_prefix": 5}, OPT_MEZO),
    "opt-mezo-prefix-qa": ("prefix", "mezo", {"optimizer.eps": 1e-1, "method.num_prefix": 5}, OPT_MEZO),
    "opt-mezo-lora": ("lora", "mezo", {"optimizer.eps": 1e-2, "method.lora_r": 8, "method.lora_alpha": 16}, OPT_MEZO),
    "opt-mezo-lora-qa": ("lora", "mezo", {"optimizer.eps": 1e-2, "method.lora_r": 8, "method.lora_alpha": 16},
                         OPT_MEZO),
    "opt-ft": ("ft", "adam", {}, OPT_FT),
    "opt-head": ("head", "adam", {}, OPT_FT),
    # Non-differentiable objective (paper Table 3; RoBERTa reuses Table 15's MeZO grid)
    "opt-nondiff-mezo": ("ft", "mezo", {"optimizer.eps": 1e-3, "task.objective": "metric"}, {"batch_size": 16}),
    "opt-nondiff-mezo-prefix": ("prefix", "mezo", {"optimizer.eps": 1e-1, "task.objective": "metric"},
                                {"batch_size": 16}),
    "roberta-nondiff-mezo": ("ft", "mezo", {"optimizer.eps": 1e-3, "task.objective": "metric"}, RB_MEZO),
    # RoBERTa-large, Table 15 (k = 16 and 512, five data seeds)
    "roberta-mezo": ("ft", "mezo", {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.0}, RB_MEZO),
    "roberta-mezo-prefix": ("prefix", "mezo", {"optimizer.eps": 1e-1, "method.num_prefix": 5}, RB_MEZO),
    "roberta-mezo-lora": ("lora", "mezo", {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.1, "method.lora_r": 8},
                          RB_MEZO),
    "roberta-mezo-adam": ("ft", "mezo-adam", {"optimizer.eps": 1e-3}, RB_MEZO),
    "roberta-ft-adam-k16": ("ft", "adam", {}, RB_FT),
    "roberta-ft-adam-k512": ("ft", "adam", {}, RB_FT),
    "roberta-ft-sgd-k16": ("ft", "sgd", {}, RB_FT),
    "roberta-ft-sgd-k512": ("ft", "sgd", {}, RB_FT),
    "roberta-ft-prefix": ("prefix", "adam", {"method.num_prefix": 5}, RB_FT),
    "roberta-ft-lora": ("lora", "adam", {"method.lora_r": 8, "method.lora_alpha": 16}, RB_FT),
    # Table 4 ablation grid: 10K forward passes = 5,000 MeZO steps, k = 16
    "roberta-ablation": ("ft", "mezo", {}, {"max_steps": 5000, "lr_scheduler": "constant"}),
    # zoft.optim.estimators on OPT (grids of their authors' code; see each sweep file)
    **{f"opt-{n}": ("ft", n, {"optimizer.weight_decay": 0.0}, ZO_OPT)
       for n in ("zo-sgd-sign", "zo-sgd-mmt", "zo-sgd-cons")},
    "roberta-mezo-norm": ("ft", "mezo-norm", {"optimizer.eps": 1e-3, "optimizer.weight_decay": 0.0, "task.k": 16},
                          RB_MEZO),
    "opt-forward-grad": ("ft", "forward-grad", {"optimizer.weight_decay": 0.0}, ZO_OPT),
    "opt-fzoo": ("ft", "fzoo", {"optimizer.eps": 1e-4, "optimizer.n_directions": 8}, {"batch_size": 16}),
    "opt-hizoo-l": ("ft", "hizoo-l", {"optimizer.eps": 1e-3, "optimizer.hessian_smooth": 1e-10}, {"batch_size": 16}),
    "opt-hizoo": ("ft", "hizoo", {"optimizer.eps": 1e-3, "optimizer.hessian_smooth": 1e-10}, {"batch_size": 16}),
    **{f"opt-{n}": ("ft", n, {"optimizer.eps": 1e-3}, ZO_OPT)
       for n in ("sparse-mezo", "mezo-one-point", "mezo-nspsa", "subzero")},
    "opt-lozo": ("ft", "lozo", {"optimizer.eps": 1e-3}, ZO_OPT),
}


def sweep_params(name: str) -> dict[str, str]:
    return dict(OmegaConf.load(SWEEPS / f"{name}.yaml").hydra.sweeper.params)


def usage(name: str) -> tuple[str, int]:
    """(the first task of the sweep file's usage line, the job count its header states)."""
    text = (SWEEPS / f"{name}.yaml").read_text()
    task = re.search(rf"^#\s+python train\.py -m \+sweep={re.escape(name)} task=([\w-]+)", text, re.M)
    jobs = re.search(r"(\d+) jobs", text)
    assert task and jobs, f"sweeps/{name}.yaml: its header needs a usage line and the job count"
    return task.group(1), int(jobs.group(1))


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
    assert names == set(BEYOND_TABLE) | set(NOT_GRIDS)
    assert set(PAPER_SWEEPS) == set(BEYOND_TABLE)


def test_sweep_group_is_on_the_config_search_path():
    # conf/sweep is a link to the repository's sweeps/ folder: `+sweep=<name>` finds these files.
    assert (CONF / "sweep").resolve() == SWEEPS.resolve()


@pytest.mark.parametrize("name", sorted(BEYOND_TABLE))
def test_sweep_expands_to_its_paper_grid(name):
    """The jobs of sweeps/<name>.yaml are exactly zoft.config.grids.sweep_grid(name) for the config
    the file composes on its usage line's task, and as many as its header says."""
    missing = _missing_pieces(name)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, which this checkout does not have yet")
    task, stated_jobs = usage(name)
    jobs = expand(sweep_params(name))
    grid = sweep_grid(name, compose_config([f"+sweep={name}", f"task={task}", *jobs[0]]))
    assert grid, f"{name}: no grid in the protocol table or zoft.config.grids"
    assert len({tuple(sorted(j)) for j in jobs}) == len(jobs)  # no duplicate job
    seen: dict[str, set] = {}
    for job in jobs:
        for line in job:
            key, value = line.split("=", 1)
            seen.setdefault(key, set()).add(_number(value))
    assert seen == {field: set(values) for field, values in grid.items()}
    size = 1
    for values in grid.values():
        size *= len(set(values))
    assert size == len(jobs) == stated_jobs


def test_a_sweep_grid_follows_the_protocol_table():
    # opt-mezo's grid is the table's: edit the row and the grid its sweep must run moves with it.
    assert not BEYOND_TABLE["opt-mezo"]
    cfg = compose_config(["+sweep=opt-mezo", "task=sst2"])
    row = next(r for r in cfg.protocol.rows if r.when == {"family": "causal", "optimizer": "zeroth-order"})
    assert sweep_grid("opt-mezo", cfg) == {"optimizer.lr": list(row.grid["optimizer.lr"])}
    row.grid["optimizer.lr"] = [3e-6]
    assert sweep_grid("opt-mezo", cfg) == {"optimizer.lr": [3e-6]}
    # The table's task rows: SQuAD/DROP have their own grid.
    qa = [sweep_grid("opt-mezo-qa", compose_config(["+sweep=opt-mezo-qa", f"task={t}"])) for t in ("sst2", "squad")]
    assert qa[0] != qa[1]
    # A row that sets the LR without a grid (FZOO's) leaves no table grid: grids.py states it.
    fzoo = compose_config(["+sweep=opt-fzoo", "task=sst2"])
    assert "optimizer.lr" not in table_grid(fzoo) and "optimizer.lr" in BEYOND_TABLE["opt-fzoo"]


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
    base = compose_config([f"+sweep={name}", "task=sst2"])  # its optimizer: the keys it has
    for key in list(raw.hydra.sweeper.params) + list(PAPER_SWEEPS[name][2]):
        if OmegaConf.select(base, key, default="__absent__") == "__absent__":
            missing.append(key)
    return missing


@pytest.mark.parametrize("name", sorted(PAPER_SWEEPS))
def test_each_job_of_a_sweep_composes(name):
    method, optimizer, fixed, trainer = PAPER_SWEEPS[name]
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
    if "task.sample_seed" in sweep_params(name):  # RoBERTa grids: the run seed follows the data seed
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
