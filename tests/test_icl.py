"""Zero-shot and in-context learning (the original's large_models/run.py): demonstration assembly, per-example
resampling, left truncation keeping BOS, SFC calibration, and evaluation-only runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FAST, compose_config
from zoft.config.schema import ModelConfig
from zoft.models.loader import load_model
from zoft.objectives.candidates import CandidateObjective
from zoft.prompting import encode_example, render_demos
from zoft.run import run
from zoft.tasks import get_task
from zoft.examples import Example
from zoft.tasks.sampling import demo_sets


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelConfig(name="tiny-opt", device="cpu"))


def rte(p: str, h: str, gold: int) -> Example:
    return Example(fields={"premise": p, "hypothesis": h}, candidates=("Yes", "No"), gold=gold)


def test_demos_use_their_gold_answer_joined_by_a_blank_line(tiny):
    spec = get_task("rte")
    demos = [rte("A.", "a", 0), rte("B.", "b", 1)]
    assert render_demos(spec, demos) == (
        'A.\nDoes this mean that "a" is true? Yes or No?\nYes\n\nB.\nDoes this mean that "b" is true? Yes or No?\nNo')
    ex = rte("C.", "c", 0)
    enc = encode_example(spec, ex, tiny.tokenizer, demos=demos)
    plain = encode_example(spec, ex, tiny.tokenizer)
    text = tiny.tokenizer.decode(enc.input_ids[1], skip_special_tokens=True)
    assert text == render_demos(spec, demos) + '\n\nC.\nDoes this mean that "c" is true? Yes or No?\nNo'
    assert enc.input_ids[0][0] == tiny.tokenizer.bos_token_id
    assert enc.option_lens == plain.option_lens  # computed without demonstrations


def test_generation_demos_end_with_answer_and_prompt_ends_with_answer_colon(tiny):
    spec = get_task("squad")
    demo = Example(fields={"title": "T", "context": "C", "question": "Q1"}, answers=("yes", "y"))
    ex = Example(fields={"title": "T", "context": "C", "question": "Q2"}, answers=("no",))
    enc = encode_example(spec, ex, tiny.tokenizer, demos=[demo])
    assert tiny.tokenizer.decode(enc.input_ids[0], skip_special_tokens=True) == \
        "Title: T\nContext: C\nQuestion: Q1\nAnswer: yes\n\nTitle: T\nContext: C\nQuestion: Q2\nAnswer:"


def test_demo_sets_follow_the_original_numpy_protocol():
    pool = list(range(100))
    sets = demo_sets(pool, seed=0, count=5, num_demos=32)
    np.random.seed(0)  # the original: randint under seed 0, then one seeded permutation per example
    seeds = np.random.randint(0, 10000, 5)
    for s, got in zip(seeds, sets):
        np.random.seed(int(s))
        assert got == [pool[i] for i in np.random.permutation(100)[:32]]
    assert len({tuple(s) for s in sets}) == 5  # resampled per test example
    assert demo_sets(pool, 0, 3, 0) == [[], [], []]
    assert sorted(demo_sets(list(range(10)), 1, 1, 32)[0]) == list(range(10))  # small pool: all, shuffled


def test_left_truncation_keeps_bos_and_the_end(tiny):
    spec = get_task("rte")
    demos = [rte(f"Demo number {i} is about the movie.", "it was great", i % 2) for i in range(20)]
    ex = rte("The film was lovely.", "it was great", 0)
    full = encode_example(spec, ex, tiny.tokenizer, demos=demos, max_length=10_000)
    cut = encode_example(spec, ex, tiny.tokenizer, demos=demos, max_length=64)
    for long, short in zip(full.input_ids, cut.input_ids):
        assert len(long) > 64 and len(short) == 64
        assert short[0] == tiny.tokenizer.bos_token_id
        assert short[1:] == long[len(long) - 63:]
    # generation keeps room for the answer: budget = max_length - max_new_tokens
    sq = get_task("squad")
    sdemos = [Example(fields={"title": "T", "context": "C " * 10, "question": "Q"}, answers=("a",))] * 10
    gen = encode_example(sq, Example(fields={"title": "T", "context": "C", "question": "Q"}, answers=("a",)),
                         tiny.tokenizer, demos=sdemos, max_length=100, max_new_tokens=30)
    assert len(gen.input_ids[0]) == 70 and gen.input_ids[0][0] == tiny.tokenizer.bos_token_id


def test_sfc_score_is_sum_minus_calibration_sum(tiny):
    spec = get_task("boolq")
    ex = Example(fields={"passage": "The movie was great.", "question": "was it great"}, candidates=("Yes", "No"), gold=0)
    demo = Example(fields={"passage": "It was dull.", "question": "was it good"}, candidates=("Yes", "No"), gold=1)

    def summed(text_ids, k):
        logp = torch.log_softmax(tiny.model(torch.tensor([text_ids])).logits[0], -1)
        return sum(logp[t - 1, text_ids[t]].item() for t in range(len(text_ids) - k, len(text_ids)))

    for flags, demos in (({"sfc": True}, [demo]), ({"icl_sfc": True}, [demo])):
        obj = CandidateObjective(spec, tiny.tokenizer, torch.device("cpu"), max_length=512,
                                 train_as_classification=True, show_progress=False, **flags)
        item = obj.prepare([ex], train=False, demos=[demos])[0]
        calib_text = tiny.tokenizer.decode(item.calib_enc.input_ids[0], skip_special_tokens=True)
        # sfc: calibration prompt alone; icl_sfc: after the same demonstrations
        assert calib_text == ("Yes" if "sfc" in flags else render_demos(spec, demos) + "\n\nYes")
        result = obj.evaluate(tiny.model, [item], batch_size=1)
        with torch.no_grad():
            expected = [summed(item.eval_enc.input_ids[c], item.eval_enc.option_lens[c])
                        - summed(item.calib_enc.input_ids[c], item.calib_enc.option_lens[c]) for c in range(2)]
        assert result.predictions[0]["scores"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("task,method,extra", [
    ("cb", "zero-shot", []),
    ("cb", "icl", ["method.num_demos=4"]),
    ("copa", "zero-shot", ["method.sfc=true"]),
    ("record", "icl", ["method.num_demos=3", "method.icl_sfc=true"]),
    ("squad", "zero-shot", ["task.max_new_tokens=4"]),
    ("drop", "icl", ["method.num_demos=32", "task.max_new_tokens=4"]),
])
def test_evaluation_only_runs(tmp_path, fixtures_dir, task, method, extra):
    cfg = compose_config(FAST + extra + [f"task={task}", f"task.data_dir={fixtures_dir / task}", f"method={method}",
                                         "task.num_train=4", "task.num_dev=2", f"output_dir={tmp_path}"])
    results = run(cfg)
    metric = "f1" if task in ("squad", "drop") else "accuracy"
    assert results["status"] == "completed" and 0 <= results["metrics"][f"test_{metric}"] <= 1
    assert results["parameters"]["trainable"] == 0 and "training" not in results
    preds = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) == results["data"]["sizes"]["test"]
    if method == "icl":
        assert results["icl"]["num_demos"] == cfg.method.num_demos and "dev_loss" not in results["metrics"]
    else:
        assert f"dev_{metric}" in results["metrics"] and (tmp_path / "predictions_dev.jsonl").is_file()


def test_sfc_on_a_generation_task_is_rejected(tmp_path, fixtures_dir):
    from zoft.config.validate import ConfigError

    cfg = compose_config(FAST + ["task=squad", f"task.data_dir={fixtures_dir / 'squad'}", "method=zero-shot",
                                 "method.sfc=true", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="method.sfc=true but task 'squad' has no calibration"):
        run(cfg)


# -- zero-shot and ICL need no more training data than they use (FewGLUE's 32-example files) --------------------
EVAL_FAST = [o for o in FAST if not o.startswith(("task.num_train=", "task.num_dev="))]


@pytest.mark.parametrize("method,extra", [("zero-shot", []), ("icl", ["method.num_demos=4"])])
def test_evaluation_only_runs_on_a_32_example_train_file(tmp_path, fixtures_dir, method, extra):
    """FewGLUE ships 32 BoolQ training examples; the task's num_train=1000 once refused them."""
    cfg = compose_config(EVAL_FAST + extra + ["task=boolq", f"task.data_dir={fixtures_dir / 'boolq-fewglue'}",
                                              f"method={method}", "task.num_test=8", f"output_dir={tmp_path}"])
    results = run(cfg)
    assert results["status"] == "completed" and results["data"]["sizes"]["test"] == 8
    assert (results["config"]["task"]["num_train"], results["config"]["task"]["num_dev"]) == (0, 0)
    record = results["protocol"]["fields"]
    assert set(record) == {"task.num_train", "task.num_dev", "trainer.precision"}  # no training schedule
    assert record["task.num_train"]["source"].startswith("table: large_models/icl.sh")
    if method == "icl":  # the demonstrations come from the whole 32-example train split
        assert results["icl"]["pool"] == 32 and results["icl"]["num_demos"] == 4


def test_the_protocol_block_of_evaluation_only_runs_shows_what_they_use():
    from zoft.config.protocol import format_block, settle

    blocks = {}
    for method in ("zero-shot", "icl", "mezo"):
        command = [f"method={method}", "task=boolq", "model=opt-13b"]
        cfg = compose_config(command)
        blocks[method] = format_block(cfg, settle(cfg, command)), cfg
    for method in ("zero-shot", "icl"):
        block, cfg = blocks[method]
        assert block.startswith(f"protocol (paper) for method={method} family=causal: evaluation only, nothing trains")
        lines = {line.split()[0] + " " + line.split()[1]: line for line in block.splitlines()[1:]}
        assert lines["train set"].split()[2] == "0" and lines["dev set"].split()[2] == "0"
        assert lines["test set"].split()[2] == "1000" and "precision" in block
        for training_word in ("lr", "steps", "batch", "eps", "schedule", "optimizer=", "adam"):
            assert training_word not in block.split(), (method, training_word)
        assert (cfg.task.num_train, cfg.task.num_dev) == (0, 0)
    assert "demos        32        per test example" in blocks["icl"][0] and "demos" not in blocks["zero-shot"][0]
    block, cfg = blocks["mezo"]  # a training run keeps the task's sizes and its schedule
    assert "train set    1000      task file (conf/task/boolq.yaml)" in block and "steps        20000" in block
    assert (cfg.task.num_train, cfg.task.num_dev) == (1000, 500)


def test_the_evaluation_only_block_states_the_sizes_really_drawn(tmp_path, fixtures_dir, capsys):
    """A size from the task file or the table is used as far as the data goes, and the block
    says how many (it used to print the 1000 asked for while 8 were scored); a typed one larger
    than the data is refused, naming both numbers."""
    from zoft.config.protocol import check_evaluation_sample, format_block, settle
    from zoft.tasks.sampling import SamplingError

    command = ["method=zero-shot", "task=boolq", "model=opt-13b"]
    cfg = compose_config(command)
    entries = settle(cfg, command)
    block = format_block(cfg, entries, command, sizes={"dev": 0, "test": 8})
    assert "  test set     8         the task's whole test split; task.num_test=1000 asked, the split has only 8" \
        in block.splitlines()
    assert "  test set     1000      sampled from the task's test split" in format_block(cfg, entries, command)
    check_evaluation_sample(cfg, {"dev": 0, "test": 8}, command)  # not typed: no refusal
    for typed, sizes, message in (
            (["task.num_test=500"], {"dev": 0, "test": 8},
             "task.num_test=500 is larger than the task's test split (8 examples); use task.num_test<=8"),
            (["task.num_dev=100"], {"dev": 32, "test": 8},
             "task.num_dev=100 is larger than the train split it is drawn from (32 examples); use task.num_dev<=32")):
        cfg = compose_config(command + typed)
        entries = settle(cfg, command + typed)
        with pytest.raises(SamplingError) as err:
            check_evaluation_sample(cfg, sizes, command + typed)
        assert str(err.value) == message
        if typed[0].startswith("task.num_dev"):  # the block of a run from code (nothing typed) says it
            line = next(x for x in format_block(cfg, entries, [], sizes=sizes).splitlines() if "dev set" in x)
            assert line.split()[2] == "32" and "100 asked, the train split has only 32" in line
    # Through zoft.run.run (no command line): the run goes on with all 8 and its block says 8.
    run(compose_config(["method=zero-shot", "task=boolq", f"task.data_dir={fixtures_dir / 'boolq-fewglue'}",
                        "trainer.progress_bar=false", f"output_dir={tmp_path}"]))
    out = capsys.readouterr().out
    assert "evaluation only, nothing trains" in out
    assert "test set     8         the task's whole test split; task.num_test=1000 asked" in out


@pytest.mark.parametrize("typed", [["task.num_train=5"], ["task.num_dev=7"]])
def test_a_typed_sample_size_wins_over_the_evaluation_only_row(typed):
    from zoft.config.protocol import settle

    command = ["method=zero-shot", "task=record"] + typed
    cfg = compose_config(command)
    entries = {e.field: e for e in settle(cfg, command)}
    field, value = typed[0].split("=")
    assert entries[field].value == int(value) and entries[field].source == "command line"
    assert cfg.task[field.split(".")[1]] == int(value)


def test_zero_shot_needs_no_train_file_and_icl_says_it_does(tmp_path, fixtures_dir):
    """A folder with only the test split (val.jsonl) scores a model zero-shot; ICL, which draws its
    demonstrations from the train split, stops naming the missing file."""
    only_test = tmp_path / "boolq-test-only"
    only_test.mkdir()
    (only_test / "val.jsonl").write_text((fixtures_dir / "boolq-fewglue" / "val.jsonl").read_text())
    common = EVAL_FAST + ["task=boolq", f"task.data_dir={only_test}", "task.num_test=8"]
    results = run(compose_config(common + ["method=zero-shot", f"output_dir={tmp_path / 'zs'}"]))
    assert results["status"] == "completed" and results["data"]["sizes"]["test"] == 8
    assert results["data"]["sizes"]["train"] == 0
    with pytest.raises(Exception, match=r"method=icl draws 4 demonstrations .* has no train file"):
        run(compose_config(common + ["method=icl", "method.num_demos=4", f"output_dir={tmp_path / 'icl'}"]))
    typed_rows = common + ["method=zero-shot", "task.num_dev=4", f"output_dir={tmp_path / 'dev'}"]
    with pytest.raises(Exception, match="none of train.jsonl"):  # a dev set is sampled from the train split
        run(compose_config(typed_rows))
