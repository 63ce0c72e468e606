"""The protocol golden test: commands composed with no trainer override give the paper's protocol.

GOLDEN is written by hand from the paper's Appendix E (Table 15: RoBERTa-large; Table 16: OPT)
and the original repository's scripts (large_models/{mezo,finetune,icl}.sh and README,
medium_models/{mezo,finetune}.sh and README), not from conf/protocol/paper.yaml. Each row is
composed as ``python train.py <command>`` would compose it and every listed field compared.
Every registered optimizer and method must appear in some row, so a new one fails this test until
its protocol is written down here.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cli_helpers import run_train
from conftest import CONF, compose_config
from zoft.config.protocol import describe, settle
from zoft.config.validate import ConfigError, check_preset, validate
from zoft.methods.registry import METHODS
from zoft.optim.registry import OPTIMIZERS

SHORT = {"steps": "trainer.max_steps", "epochs": "trainer.num_epochs", "batch": "trainer.batch_size",
         "lr": "optimizer.lr", "eps": "optimizer.eps", "wd": "optimizer.weight_decay",
         "schedule": "trainer.lr_scheduler", "evals": "trainer.num_evals", "select": "trainer.select_by",
         "precision": "trainer.precision"}

# The paper's schedules, one dict per (family, optimizer kind).
OPT_MEZO = dict(steps=20000, epochs=None, batch=16, eps=1e-3, wd=0.0, schedule="constant", evals=5,
                select="loss", precision="pure")  # Table 16; mezo.sh: 20K steps, eval every 4K, fp16
OPT_FT = dict(epochs=5, batch=8, wd=0.0, schedule="linear", evals=5, select="loss",
              precision="amp")  # finetune.sh: 5 epochs, eval per epoch, fp32 weights + --fp16
RB_MEZO = dict(steps=100000, epochs=None, batch=64, eps=1e-3, wd=0.0, schedule="constant", evals=10,
               select="metric", precision="pure")  # Table 15; mezo.sh: 100K steps, eval every 10K
RB_FT = dict(steps=1000, epochs=None, batch=8, wd=0.0, schedule="linear", evals=10, select="metric",
             precision="amp")  # finetune.sh: 1K steps, eval every 100, by dev accuracy

OPT13 = "model=opt-13b task=sst2"
RB = "model=roberta-large task=sst-2-kshot"
GOLDEN = [
    # The table of commands, then every pair the paper ran.
    ("optimizer=adam task=sst2 model=opt-1.3b", {**OPT_FT, "lr": 1e-5}),
    ("method=lora task=sst2 model=opt-1.3b", {**OPT_FT, "lr": 1e-4}),
    ("method=prefix task=sst2 model=opt-1.3b", {**OPT_FT, "lr": 1e-2}),
    ("method=head task=sst2 model=opt-1.3b", {**OPT_FT, "lr": 1e-4, "precision": "fp32"}),
    (f"method=mezo {RB}", {**RB_MEZO, "lr": 1e-6}),
    (f"method=mezo-lora {RB}", {**RB_MEZO, "lr": 1e-4, "eps": 1e-3, "wd": 0.1}),
    (f"optimizer=adam {RB}", {**RB_FT, "lr": 1e-5}),
    ("optimizer=adam model=opt-125m", {**OPT_FT, "lr": 1e-5}),  # opt-125m's file says float16
    (f"method=mezo {OPT13}", {**OPT_MEZO, "lr": 1e-6}),
    (f"method=mezo-prefix {OPT13}", {**OPT_MEZO, "lr": 1e-3, "eps": 1e-1}),
    (f"method=mezo-lora {OPT13}", {**OPT_MEZO, "lr": 5e-5, "eps": 1e-2}),
    ("optimizer=adam task=cb model=opt-13b", {**OPT_FT, "lr": 1e-5}),
    ("method=mezo task=squad model=opt-13b", {**OPT_MEZO, "lr": 1e-6}),
    (f"method=ft optimizer=mezo {OPT13}", {**OPT_MEZO, "lr": 1e-6}),
    (f"method=lora optimizer=mezo {OPT13}", {**OPT_MEZO, "lr": 5e-5, "eps": 1e-2}),
    (f"method=prefix optimizer=mezo {OPT13}", {**OPT_MEZO, "lr": 1e-3, "eps": 1e-1}),
    (f"method=ft {OPT13}", {**OPT_FT, "lr": 1e-5}),
    (f"method=zero-shot {OPT13}", {"precision": "pure"}),  # icl.sh: --load_float16
    (f"method=icl {OPT13}", {"precision": "pure"}),
    (f"method=linear-probe {OPT13}", {"precision": "amp"}),
    ("method=mezo model=llama-2-7b task=sst2", {**OPT_MEZO, "lr": 1e-6}),
    (f"method=mezo-prefix {RB}", {**RB_MEZO, "lr": 1e-2, "eps": 1e-1}),
    (f"method=ft optimizer=mezo-adam {RB}", {**RB_MEZO, "lr": 1e-5}),  # Table 7 / 15
    (f"method=ft optimizer=sgd {RB}", {**RB_FT, "lr": 1e-3}),  # Table 15 FT (SGD), grid centre
    (f"method=lora {RB}", {**RB_FT, "lr": 1e-4}),
    (f"method=prefix {RB}", {**RB_FT, "lr": 1e-2}),
    (f"method=lp-mezo {RB}", {**RB_MEZO, "lr": 1e-6}),
    (f"method=linear-probe {RB}", {"select": "metric"}),
    (f"method=zero-shot {RB}", {"precision": "pure"}),
    (f"method=mezo {RB} model=roberta-base", {**RB_MEZO, "lr": 1e-6}),
    (f"method=mezo task=sst-2-kshot model=tiny-roberta-cls", {**RB_MEZO, "steps": 1000, "lr": 1e-2}),
    # Combinations the paper never ran take zoft's stated defaults within the family schedule.
    (f"method=ft optimizer=mezo-sgd {OPT13}", {**OPT_MEZO, "lr": 1e-6}),
    (f"method=prompt {OPT13}", {**OPT_FT, "lr": 1e-5}),
    (f"method=ft optimizer=sgd {OPT13}", {**OPT_FT, "lr": 1e-4}),
    (f"method=ft optimizer=mezo-adam {OPT13}", {**OPT_MEZO, "lr": 1e-5}),
    # The successor estimators: their authors' values on the family's MeZO schedule.
    (f"method=ft optimizer=zo-sgd-sign {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),  # ZO-Bench
    (f"method=ft optimizer=zo-sgd-mmt {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),
    (f"method=ft optimizer=zo-sgd-cons {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),
    (f"method=ft optimizer=forward-grad {OPT13}", {**OPT_MEZO, "lr": 5e-7}),  # ZO-Bench forward_grad sweep
    (f"method=ft optimizer=fzoo {OPT13}", {**OPT_MEZO, "lr": 5e-5, "eps": 1e-4}),  # FZOO README
    (f"method=ft optimizer=hizoo {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),  # HiZOO README
    (f"method=lora optimizer=hizoo {OPT13}", {**OPT_MEZO, "lr": 1e-5, "eps": 1e-2}),
    (f"method=ft optimizer=hizoo-l {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),  # HiZOO's values
    (f"method=ft optimizer=lozo {OPT13}", {**OPT_MEZO, "lr": 1e-7, "eps": 1e-3}),  # LOZO README
    (f"method=prompt optimizer=subzero {OPT13}", {**OPT_MEZO, "lr": 1e-3, "eps": 1e-2}),  # SubZero README
    (f"method=ft optimizer=sparse-mezo {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),
    (f"method=ft optimizer=mezo-one-point {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),
    (f"method=ft optimizer=mezo-nspsa {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),
    (f"method=ft optimizer=mezo-norm {OPT13}", {**OPT_MEZO, "lr": 1e-6, "eps": 1e-3}),  # Appendix B: MeZO's values
    (f"method=ft optimizer=mezo-norm {RB}", {**RB_MEZO, "lr": 1e-6}),
    # Tiny models: the family's protocol with demo-sized budgets.
    ("", {**OPT_MEZO, "steps": 2500, "lr": 2e-3}),  # the demo
    ("experiment=demo", {**OPT_MEZO, "steps": 2500, "lr": 2e-3}),
    ("optimizer=adam", {**OPT_FT, "lr": 3e-3}),
    ("optimizer=sgd", {**OPT_FT, "lr": 5e-2}),
    ("method=mezo-lora", {**OPT_MEZO, "steps": 2500, "lr": 5e-2, "eps": 1e-2}),
    ("method=mezo task=sst-2-kshot model=tiny-roberta", {**RB_MEZO, "steps": 1000, "lr": 1e-2}),
    ("optimizer=adam task=sst-2-kshot model=tiny-roberta", {**RB_FT, "lr": 3e-3}),
    ("experiment=opt-13b-mezo", {**OPT_MEZO, "lr": 1e-6}),
    ("experiment=roberta-large-mezo", {**RB_MEZO, "lr": 1e-6}),
]


def _protocol(command: str) -> dict:
    cfg = compose_config(command.split())
    return {e.field: e.value for e in settle(cfg, command.split())}, cfg


@pytest.mark.parametrize("command,expected", GOLDEN, ids=[c or "(no overrides)" for c, _ in GOLDEN])
def test_each_command_composes_the_papers_protocol(command, expected):
    values, cfg = _protocol(command)
    for short, want in expected.items():
        field = SHORT[short]
        got = values.get(field, cfg.trainer.get(field.split(".", 1)[1]) if field.startswith("trainer") else None)
        assert got == (pytest.approx(want) if isinstance(want, float) else want), (command, field, got, want)
    # The settled config holds plain values: no lookup left for the run to trip on.
    assert "${" not in str(cfg.trainer) + str(cfg.optimizer)


def test_every_optimizer_and_method_has_a_golden_row():
    text = " ".join(c for c, _ in GOLDEN)
    missing = [f"optimizer={name}" for name in OPTIMIZERS if f"optimizer={name}" not in text
               and not (name == "mezo" and "mezo" in text)]
    presets = {"ft": "method=mezo", "lora": "method=mezo-lora", "prefix": "method=mezo-prefix"}
    missing += [f"method={name}" for name in METHODS
                if f"method={name}" not in text and presets.get(name, "~") not in text]
    assert not missing, f"add protocol rows (and GOLDEN rows) for: {missing}"


def test_the_eval_cadence_is_every_fifth_tenth_or_epoch():
    from zoft.train.loop import eval_interval, total_steps

    _, opt_mezo = _protocol(f"method=mezo {OPT13}")
    assert eval_interval(opt_mezo.trainer, total_steps(opt_mezo.trainer, 1000)) == 4000
    _, rb_mezo = _protocol(f"method=mezo {RB}")
    assert eval_interval(rb_mezo.trainer, total_steps(rb_mezo.trainer, 32)) == 10000
    _, rb_ft = _protocol(f"optimizer=adam {RB}")
    assert eval_interval(rb_ft.trainer, total_steps(rb_ft.trainer, 32)) == 100
    _, opt_ft = _protocol("optimizer=adam task=sst2 model=opt-13b")
    assert total_steps(opt_ft.trainer, 1000) == 625 and eval_interval(opt_ft.trainer, 625) == 125
    # CB: 150 train examples, batch 8 -> 19 steps per epoch; the original evaluates 5 times.
    steps = total_steps(opt_ft.trainer, 150)
    assert steps == 95 and [s for s in range(1, steps + 1) if s % eval_interval(opt_ft.trainer, steps) == 0] == \
        [19, 38, 57, 76, 95]


@pytest.mark.parametrize("typed,field,want", [
    (["method=mezo", "task=sst2", "model=opt-13b", "optimizer.lr=1e-7"], "optimizer.lr", 1e-7),
    (["method=mezo", "task=sst2", "model=opt-13b", "trainer.batch_size=4"], "trainer.batch_size", 4),
    (["optimizer=adam", "task=sst2", "model=opt-13b", "trainer.max_steps=50"], "trainer.max_steps", 50),
    (["+sweep=roberta-ablation", "task=sst-2-kshot", "trainer.max_steps=7"], "trainer.max_steps", 7),
    (["experiment=roberta-large-mezo", "optimizer.eps=1e-5"], "optimizer.eps", 1e-5),
])
def test_a_typed_value_wins_over_every_preset_and_table(typed, field, want):
    cfg = compose_config(typed)
    entries = {e.field: e for e in settle(cfg, typed)}
    assert entries[field].value == pytest.approx(want) and entries[field].source == "command line"
    if field == "trainer.max_steps":  # the table's epochs give way to the typed length
        assert cfg.trainer.num_epochs is None and cfg.trainer.max_steps == want


def test_a_typed_group_choice_wins_over_the_presets_choice():
    cfg = compose_config(["experiment=opt-13b-mezo", "model=opt-125m", "task=rte"])
    assert (cfg.model.name, cfg.task.name, cfg.optimizer.name) == ("opt-125m", "rte", "mezo")
    cfg = compose_config(["+sweep=opt-ft", "optimizer=sgd"])
    assert cfg.optimizer.name == "sgd"


def test_a_preset_value_is_labelled_as_such():
    cfg = compose_config(["+sweep=roberta-ablation", "task=sst-2-kshot"])
    entries = {e.field: e for e in describe(cfg, ["+sweep=roberta-ablation", "task=sst-2-kshot"])}
    assert entries["trainer.max_steps"].value == 5000 and entries["trainer.max_steps"].source == "preset"
    assert {e.field: e for e in describe(cfg)}["trainer.max_steps"].source == "set"  # no command line known
    assert entries["optimizer.lr"].source.startswith("table: paper Table 15")


@pytest.mark.parametrize("preset", ["mezo", "mezo-lora", "mezo-prefix", "lp-mezo"])
def test_a_preset_with_a_contradicting_optimizer_is_an_error(preset):
    cfg = compose_config([f"method={preset}", "optimizer=adam"])
    problems = check_preset(cfg)
    assert problems and f"method={preset}" in problems[0] and "optimizer=adam" in problems[0]
    with pytest.raises(ConfigError, match="or method=" + preset + " alone"):
        settle(cfg), validate(cfg)


def test_the_default_method_gives_way_to_a_typed_optimizer():
    cfg = compose_config(["optimizer=adam"])
    assert cfg.method.name == "ft" and cfg.optimizer.name == "adam" and not check_preset(cfg)
    cfg = compose_config(["method=mezo", "optimizer=mezo"])
    assert not check_preset(cfg)


@pytest.mark.slow
def test_cli_contradiction_exits_2_naming_both(tmp_path):
    proc = run_train(["method=mezo", "optimizer=adam", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "method=mezo" in proc.stderr and "optimizer=adam" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_cfg_job_resolve_shows_the_protocol(tmp_path):
    proc = run_train(["method=mezo", "task=sst2", "model=opt-13b", "--cfg", "job", "--resolve"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max_steps: 20000" in proc.stdout and "batch_size: 16" in proc.stdout and "lr: 1.0e-06" in proc.stdout


def test_protocol_block_and_results_record(tmp_path):
    from conftest import FAST
    from zoft.run import run

    results = run(compose_config(FAST + [f"output_dir={tmp_path}", "trainer.max_steps=4"]))
    record = results["protocol"]["fields"]
    assert record["trainer.max_steps"]["value"] == 4
    assert record["optimizer.eps"]["source"].startswith("table: ")
    assert "grid" not in record["optimizer.lr"] or isinstance(record["optimizer.lr"]["grid"], list)
    assert results["protocol"]["key"].startswith("method=ft optimizer=mezo family=causal")
    assert "rows" not in results["config"]["protocol"]


def test_a_protocol_table_without_a_value_is_a_clear_error():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["protocol.rows=[]"])
    with pytest.raises(Exception, match="protocol table has no value of trainer.max_steps"):
        settle(cfg)


def _block(overrides: list[str]) -> str:
    from zoft.config.protocol import format_block

    cfg = compose_config(overrides)
    return format_block(cfg, settle(cfg, overrides), overrides)


def test_the_block_states_the_evaluations_the_run_makes():
    """trainer.eval_steps replaces num_evals: one line, the loop's count (it used to print both
    "evaluations 5" and "eval every 100" for a run that made 3)."""
    block = _block(["trainer.max_steps=300", "trainer.eval_steps=100"])
    (line,) = [row for row in block.splitlines() if row.strip().startswith(("evaluations", "eval every"))]
    assert line.split()[:2] == ["evaluations", "3"] and "at steps 100, 200, 300" in line
    assert "trainer.eval_steps=100 (command line)" in line and "num_evals" not in line
    line = next(row for row in _block(["trainer.max_steps=7"]).splitlines() if "evaluations" in row)
    assert line.split()[:2] == ["evaluations", "4"] and "at steps 2, 4, 6, 7" in line  # 5 asked, 4 fit
    line = next(row for row in _block(["optimizer=adam", "task=sst2", "model=opt-13b"]).splitlines()
                if "evaluations" in row)
    assert "once per epoch" in line  # epochs: the steps depend on the train set's size
    block = _block(["trainer.max_steps=7", "task.num_dev=0"])
    assert "no dev set" in block and "selection" not in block  # nothing to evaluate or select
    assert "  eps " not in _block(["optimizer=forward-grad"]) and "  eps " in _block([])  # a jvp has no eps


def test_the_block_shows_the_optimizers_own_settings_with_their_sources():
    """HiZOO's hessian_smooth and Sparse MeZO's thresholds decide the run as much as the LR does;
    the block used to leave them out."""
    def row(block, key):
        return next((line for line in block.splitlines() if line.split()[:1] == [key]), None)

    block = _block(["optimizer=hizoo"])
    assert row(block, "hessian_smooth").split()[:3] == ["hessian_smooth", "3e-05", "table:"]
    assert "median h 37 over the tiny OPT demo" in row(block, "hessian_smooth")
    assert row(_block(["optimizer=hizoo", "optimizer.hessian_smooth=0"]), "hessian_smooth").split() == [
        "hessian_smooth", "0.0", "command", "line"]
    assert row(_block(["optimizer=hizoo", "+sweep=opt-hizoo"]), "hessian_smooth").split() == [
        "hessian_smooth", "1e-10", "preset"]
    block = _block(["optimizer=sparse-mezo"])
    assert row(block, "sparsity").split() == ["sparsity", "0.75", "optimizer", "file",
                                              "(conf/optimizer/sparse-mezo.yaml)"]
    assert row(block, "threshold_update").split()[:3] == ["threshold_update", "fixed", "table:"]
    assert row(_block(["optimizer=sparse-mezo", "method=lora"]), "threshold_update").split()[:3] == [
        "threshold_update", "every_step", "table:"]
    assert row(_block(["optimizer=zo-sgd-sign"]), "sign_of").split()[:2] == ["sign_of", "estimate"]
    block = _block(["optimizer=mezo"])  # MeZO has none of its own; another optimizer's keys stay out
    assert not any(row(block, key) for key in ("hessian_smooth", "sparsity", "threshold_update", "sign_of",
                                                "momentum"))
    cfg = compose_config(["optimizer=hizoo"])  # results.json's protocol record has them too
    assert {e.field: e for e in settle(cfg, ["optimizer=hizoo"])}["optimizer.hessian_smooth"].value == 3e-5


def test_each_optimizer_file_sets_exactly_the_settings_its_class_declares():
    from omegaconf import OmegaConf

    from zoft.optim.registry import RESERVED

    for name, record in OPTIMIZERS.items():
        written = OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml"), resolve=False)
        assert written["name"] == name and written["_target_"] == record.target, name
        assert sorted(set(written) - set(RESERVED)) == sorted(record.settings), name
        assert set(record.own) <= set(record.settings), name


@pytest.mark.parametrize("steps", [1, 7, 12, 300, 20000])
@pytest.mark.parametrize("eval_steps,num_evals", [(None, 0), (None, 5), (None, 10), (0, 5), (3, 5), (100, 5),
                                                  (50000, 5)])
def test_the_evaluation_count_is_the_loops(steps, eval_steps, num_evals):
    from types import SimpleNamespace

    from zoft.config.protocol import evaluation_count
    from zoft.train.loop import eval_interval

    every = eval_interval(SimpleNamespace(eval_steps=eval_steps, num_evals=num_evals), steps)
    made = [s for s in range(1, steps + 1) if (every and s % every == 0) or s == steps]  # the loop's test
    assert evaluation_count(steps, eval_steps, num_evals) == (every, len(made))


def test_the_run_makes_the_evaluations_its_block_announced(tmp_path, capsys):
    from conftest import FAST
    from zoft.run import run

    run(compose_config(FAST + [f"output_dir={tmp_path}", "trainer.max_steps=7", "trainer.eval_steps=3"]))
    line = next(row for row in capsys.readouterr().out.splitlines() if row.strip().startswith("evaluations"))
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dev_loss" in r] == [3, 6, 7]
    assert line.split()[:2] == ["evaluations", "3"] and "at steps 3, 6, 7" in line


def test_dry_run_prints_the_block_with_its_sources_and_writes_nothing(tmp_path, monkeypatch):
    from zoft.dry_run import dry_run
    from zoft.frontend import Stop

    monkeypatch.chdir(tmp_path)
    text = dry_run(["method=mezo", "task=sst2", "model=opt-13b", "optimizer.lr=1e-7"], CONF)
    assert text.startswith("protocol (paper) for method=ft optimizer=mezo family=causal:")
    assert "lr           1e-07     command line" in text
    assert "steps        20000     table: paper Table 16; large_models/mezo.sh" in text
    assert "nothing was loaded or written" in text and not list(tmp_path.iterdir())
    for argv, expected in ((["optimizer.lr=-1"], "optimizer.lr=-1.0 must be >= 0"),
                           (["-m", "optimizer.lr=1e-3,1e-4"], "drop -m"),
                           (["optimzer=adam"], "did you mean optimizer")):
        with pytest.raises(Stop) as stop:
            dry_run(argv, CONF)
        assert stop.value.code == 2 and expected in stop.value.message
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_dry_run_exits_0_without_a_folder(tmp_path):
    proc = run_train(["trainer.max_steps=300", "trainer.eval_steps=100", "--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evaluations  3" in proc.stdout and "dry run: tiny-opt on demo" in proc.stdout
    assert not list(tmp_path.iterdir())  # no outputs/ folder, no .hydra, no log
