"""Bad input is stopped where it enters, with one ZoftUserError naming the file (and line), the bad
value and what is valid; through the command line that is one `error:` line and exit code 2.

Three areas, each table-driven: data records of both task families, model folders, trajectory
files and `zoft replay`. Each area also runs one case through a real subprocess (marked slow)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, compose_config
from cli_helpers import run_train
from zoft.cli import main as zoft_main
from zoft.config.schema import ModelConfig, TaskConfig, TinyArchConfig
from zoft.errors import ZoftUserError
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.data import load_kshot_splits
from zoft.lmbff.formats import LmBffDataError
from zoft.lmbff.kshot import generate_kshot
from zoft.models.folder import ModelFolderError
from zoft.models.loader import check_model_available, load_model
from zoft.optim import MeZO
from zoft.optim.trajectory import TrajectoryError, TrajectoryWriter, check_until_step, read_trajectory
from zoft.replay import replay_run
from zoft.run import run
from zoft.tasks import get_task
from zoft.tasks.data import load_task_data
from zoft.tasks.readers import DataFileError

BINARY = bytes(range(256)) * 8  # NUL bytes and invalid UTF-8: what a copied .bin or .gz looks like
SST2_HEADER = "sentence\tlabel\n"


def run_zoft(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m zoft <args>`` offline, as a user types it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "zoft", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, (part, message)


# -- 1. data records ----------------------------------------------------------------------------
# (task, {file name: content}, what the message must name). Files not given are valid copies, so
# each case has exactly one fault.
CAUSAL_CASES = {
    "sst2 tsv label 7": ("sst2", {"train.tsv": SST2_HEADER + "good film\t1\nbad film\t7\n"},
                         ["train.tsv:3", "label '7'", "valid labels 0, 1"]),
    "sst2 jsonl label 7": ("sst2", {"train.jsonl": '{"sentence": "good", "label": 1}\n\n{"sentence": "bad", "label": 7}\n'},
                           ["train.jsonl:3", "label 7", "valid labels 0, 1"]),
    "sst2 label -1": ("sst2", {"train.tsv": SST2_HEADER + "good film\t-1\n"}, ["train.tsv:2", "label '-1'", "0, 1"]),
    "rte unknown label": ("rte", {"train.jsonl": '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n'},
                          ["train.jsonl:1", "label 'maybe'", "entailment, not_entailment (or 0, 1)"]),
    "cb label 3": ("cb", {"train.jsonl": '{"premise": "a", "hypothesis": "b", "label": 3}\n'},
                   ["train.jsonl:1", "label 3", "entailment, contradiction, neutral (or 0, 1, 2)"]),
    "boolq label 7": ("boolq", {"train.jsonl": '{"passage": "p", "question": "q", "label": 7}\n'},
                      ["train.jsonl:1", "label 7", "0, 1"]),
    "copa label 2": ("copa", {"train.jsonl": '{"premise": "p", "choice1": "a", "choice2": "b", '
                                             '"question": "cause", "label": 2}\n'},
                     ["train.jsonl:1", "label 2", "0, 1"]),
    "binary train.jsonl": ("demo", {"train.jsonl": BINARY}, ["train.jsonl", "binary file", "UTF-8 text"]),
    "latin-1 tsv": ("sst2", {"train.tsv": (SST2_HEADER + "good\t1\ncaf\xe9 film\t0\n").encode("latin-1")},
                    ["train.tsv:3", "not UTF-8", "byte 0xe9"]),
    "missing field": ("sst2", {"train.jsonl": '{"sentence": "a", "label": 1}\n{"text": "b", "label": 0}\n'},
                      ["train.jsonl:2", "missing field 'sentence'", "the record has: text, label"]),
    "missing tsv column": ("sst2", {"train.tsv": "text\tlabel\ngood\t1\n"},
                           ["train.tsv:2", "missing field 'sentence'", "text, label"]),
    "short tsv row": ("sst2", {"train.tsv": SST2_HEADER + "good\t1\nno tab here\n"},
                      ["train.tsv:3", "expected 2 tab-separated columns"]),
    "malformed JSON line": ("demo", {"train.jsonl": '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": 0\n'},
                            ["train.jsonl:2", "not valid JSON"]),
    "JSON line not an object": ("demo", {"train.jsonl": '["a", 1]\n'}, ["train.jsonl:1", "expected a JSON object"]),
    "null text": ("demo", {"train.jsonl": '{"sentence": null, "label": 1}\n'},
                  ["train.jsonl:1", "field 'sentence' is null, expected text"]),
    "cut SQuAD json": ("squad", {"train-v1.1.json": '{"data": [{"title": "t", "paragraphs": [\n'},
                       ["train-v1.1.json:2", "not valid JSON"]),
    "SQuAD question missing": ("squad", {"train-v1.1.json": json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": "c", "qas": [{"id": "1", "answers": [{"text": "c"}]}]}]}]})},
                               ["train-v1.1.json: data[0]", "missing field 'question'"]),
}


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def _valid_copy(task: str, folder: Path) -> None:
    """A valid dataset for ``task`` in ``folder``: the test fixtures (sst2/demo: written here)."""
    if task == "demo":
        _write(folder, {"train.jsonl": '{"sentence": "a", "label": 1}\n', "test.jsonl": '{"sentence": "b", "label": 0}\n'})
    else:
        shutil.copytree(FIXTURES / task, folder, dirs_exist_ok=True)


@pytest.mark.parametrize("case", list(CAUSAL_CASES))
def test_causal_task_data_errors_name_file_line_and_value(tmp_path, case):
    task, files, expected = CAUSAL_CASES[case]
    _valid_copy(task, tmp_path)
    for other in ("train.tsv", "train.jsonl"):  # the bad file must be the one that is read
        if other not in files and other in {p.name for p in tmp_path.iterdir()}:
            (tmp_path / other).unlink()
    _write(tmp_path, files)
    cfg = TaskConfig(name=task, data_dir=str(tmp_path), num_train=1, num_dev=0, num_test=1)
    with pytest.raises(DataFileError) as err:
        load_task_data(get_task(task), cfg)
    assert_names(str(err.value), str(tmp_path), *expected)


SST2K, MRK, COLAK = LMBFF_TASKS["sst-2-kshot"], LMBFF_TASKS["mr-kshot"], LMBFF_TASKS["cola-kshot"]
# (task, file in the k-shot folder, content, what the message must name)
KSHOT_CASES = {
    "sst-2 label 7": (SST2K, "train.tsv", SST2_HEADER + "good film\t1\nbad film\t7\n",
                      ["train.tsv:3", "label '7'", "valid labels: 0, 1"]),
    "mr label 5": (MRK, "train.csv", '0,"a film"\n5,"another"\n', ["train.csv:2", "label '5'", "0, 1"]),
    "mr csv row without text": (MRK, "dev.csv", '0,"a film"\n"1"\n', ["dev.csv:2", "expected 2 columns (label,text)"]),
    "sst-2 binary test.tsv": (SST2K, "test.tsv", BINARY, ["test.tsv", "binary file"]),
    "sst-2 short row": (SST2K, "dev.tsv", SST2_HEADER + "good film\t1\nno label\n",
                        ["dev.tsv:3", "expected at least 2 tab-separated columns"]),
}


@pytest.mark.parametrize("case", list(KSHOT_CASES))
def test_kshot_task_data_errors_name_file_line_and_value(tmp_path, case):
    task, name, content, expected = KSHOT_CASES[case]
    ext = name.rsplit(".", 1)[1]
    good = SST2_HEADER + "good film\t1\nbad film\t0\n" if ext == "tsv" else '0,"a film"\n1,"another"\n'
    _write(tmp_path, {f"{split}.{ext}": good for split in ("train", "dev", "test")})
    _write(tmp_path, {name: content})
    with pytest.raises(LmBffDataError) as err:
        load_kshot_splits(task, str(tmp_path), 16, 42, task.label_words)
    assert_names(str(err.value), str(tmp_path), *expected)


# `zoft kshot` reads the original files: a short row used to be an IndexError (CoLA's label is
# column 1), a binary file became Latin-1 garbage rows.
KSHOT_SOURCE_CASES = {
    "CoLA short row": (COLAK, "train.tsv", "gj04\t0\t*\tA sentence.\ngj04\n", ["train.tsv:2", "at least 4"]),
    "SST-2 binary train.tsv": (SST2K, "train.tsv", BINARY, ["train.tsv", "binary file"]),
    "mr csv row without text": (MRK, "train.csv", '0,"a"\n1\n', ["train.csv:2", "expected 2 columns"]),
}


@pytest.mark.parametrize("case", list(KSHOT_SOURCE_CASES))
def test_kshot_generation_errors_name_file_and_line(tmp_path, case, capsys):
    task, name, content, expected = KSHOT_SOURCE_CASES[case]
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "lmbff" / task.data_name, src)
    _write(src, {name: content})
    with pytest.raises(LmBffDataError) as err:
        generate_kshot(task, src, tmp_path / "out", 2, [13])
    assert_names(str(err.value), str(src), *expected)
    # the same through `zoft kshot`: one line, exit code 2
    assert zoft_main(["kshot", "--task", task.name, "--k", "2", "--seeds", "13", "--data-dir", str(src),
                      "--out", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and expected[0] in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("overrides,files,expected", [
    (["task=demo"], {"train.jsonl": BINARY, "test.jsonl": '{"sentence": "b", "label": 0}\n'},
     ["train.jsonl", "binary file"]),
    (["task=sst-2-kshot", "model=tiny-roberta", "task.k=1", "task.sample_seed=13"],
     {"train.tsv": SST2_HEADER + "good\t1\nbad\t7\n", "dev.tsv": SST2_HEADER + "ok\t1\n",
      "test.tsv": SST2_HEADER + "ok\t0\n"}, ["train.tsv:3", "label '7'"]),
], ids=["demo binary train.jsonl", "sst-2-kshot label 7"])
def test_a_run_stops_at_bad_data_before_any_training(tmp_path, overrides, files, expected):
    """Through zoft.run.run: the data error comes before the model is built or a step is taken,
    so the run folder has no checkpoint and no trajectory."""
    data, out = tmp_path / "data", tmp_path / "run"
    _write(data, files)
    cfg = compose_config([*overrides, f"task.data_dir={data}", f"output_dir={out}", "trainer.checkpoint_steps=1",
                          "trainer.progress_bar=false"])
    with pytest.raises(ZoftUserError) as err:
        run(cfg)
    assert_names(str(err.value), str(data), *expected)
    assert json.loads((out / "results.json").read_text())["status"] == "failed"
    assert not (out / "checkpoints").exists() and not (out / "trajectory.bin").exists()


@pytest.mark.slow
def test_train_cli_bad_label_exits_2_before_training(tmp_path):
    data = tmp_path / "sst2"
    _write(data, {"train.tsv": SST2_HEADER + "good film\t1\nbad film\t7\n", "dev.tsv": SST2_HEADER + "ok\t1\n"})
    proc = run_train(["task=sst2", f"task.data_dir={data}", "task.num_train=1", "task.num_dev=0", "task.num_test=1",
                      "trainer.checkpoint_steps=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"error: {data / 'train.tsv'}:3: sst2 record: label '7'" in proc.stderr
    assert "valid labels 0, 1" in proc.stderr
    assert not (tmp_path / "run").exists()  # bad input: no folder left behind, as for a config error


BOOLQ_32 = ["method=zero-shot", "task=boolq", f"task.data_dir={FIXTURES / 'boolq-fewglue'}"]  # 32 train, 8 test


@pytest.mark.slow
@pytest.mark.parametrize("overrides,expected", [
    (["task.num_train=100000", "trainer.max_steps=2"],
     "error: task.num_train=100000 is larger than the training data (2000 examples); use task.num_train<=2000"),
    ([*BOOLQ_32, "task.num_test=500"],
     "error: task.num_test=500 is larger than the task's test split (8 examples); use task.num_test<=8"),
    ([*BOOLQ_32, "task.num_dev=100"],
     "error: task.num_dev=100 is larger than the train split it is drawn from (32 examples); use task.num_dev<=32"),
], ids=["num_train", "zero-shot num_test", "zero-shot num_dev"])
def test_cli_sample_larger_than_the_data_exits_2_and_leaves_no_folder(tmp_path, overrides, expected):
    """Sizes the data cannot give are known only once it is read (in the run folder); the run then
    stops as a config error does: one line naming the value and what is there, no folder."""
    proc = run_train([*overrides, "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / "run").exists()
    # A folder that already held something else keeps it, and records the failure.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    proc = run_train([*overrides, "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'mine'}"], tmp_path)
    assert proc.returncode == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "kept"
    assert json.loads((tmp_path / "mine" / "results.json").read_text())["status"] == "failed"


# -- 2. model folders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny OPT saved with save_pretrained (model and tokenizer): what model.path points at."""
    from zoft.models.tiny import build_tiny_model, build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-opt")
    arch = TinyArchConfig(hidden_size=16, num_layers=1, num_heads=2, ffn_dim=32, max_positions=64)
    build_tiny_model("opt", "causal", arch, seed=0).save_pretrained(folder)
    build_tiny_tokenizer("opt").save_pretrained(folder)
    return folder


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _to_torch_bin(folder: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _shard_index(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))


# (how the folder is damaged, the bad file, what the message must say)
FOLDER_CASES = {
    "config not JSON": (lambda f: (f / "config.json").write_text('{"model_type": "opt",'), "config.json",
                        "is not valid JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[]"), "config.json", "is not a JSON object"),
    "weights truncated": (lambda f: _cut(f / "model.safetensors", 20_000), "model.safetensors", "is truncated"),
    "weights header cut": (lambda f: _cut(f / "model.safetensors", 100), "model.safetensors", "is truncated"),
    "weights empty": (lambda f: _cut(f / "model.safetensors", 0), "model.safetensors", "is truncated"),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors or pytorch_model.bin",
                        "no weights in"),
    "torch bin truncated": (lambda f: (_to_torch_bin(f), _cut(f / "pytorch_model.bin", 20_000)),
                            "pytorch_model.bin", "is truncated"),
    "shard missing": (_shard_index, "model-00002-of-00002.safetensors", "is missing"),
    "tokenizer missing": (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                          "tokenizer.json", "no tokenizer files in"),
    "tokenizer corrupt": (lambda f: _cut(f / "tokenizer.json", 500), "tokenizer.json", "is not valid JSON"),
    "tokenizer config corrupt": (lambda f: (f / "tokenizer_config.json").write_bytes(BINARY),
                                 "tokenizer_config.json", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_damaged_model_folder_is_one_error_naming_the_file(model_folder, tmp_path, case):
    damage, bad_file, expected = FOLDER_CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    damage(folder)
    cfg = ModelConfig(name="local", path=str(folder), device="cpu")
    with pytest.raises(ModelFolderError) as err:
        check_model_available(cfg)  # before any data work
    assert_names(str(err.value), f"model.path={str(folder)!r}", bad_file, expected)
    with pytest.raises(ModelFolderError):
        load_model(cfg)


def test_what_transformers_refuses_still_names_the_folder(model_folder, tmp_path):
    """A well-formed folder transformers cannot load (an unknown architecture) is one error too."""
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="no-such-architecture")))
    with pytest.raises(ModelFolderError) as err:
        load_model(ModelConfig(name="local", path=str(folder), device="cpu"))
    assert_names(str(err.value), str(folder), "transformers cannot load the model", "no-such-architecture", "save_pretrained")


def test_an_intact_folder_loads(model_folder):
    loaded = load_model(ModelConfig(name="local", path=str(model_folder), device="cpu"))
    assert loaded.model.config.model_type == "opt" and len(loaded.tokenizer("a lovely film")["input_ids"]) > 1


@pytest.mark.slow
def test_train_cli_truncated_weights_exits_2(model_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    _cut(folder / "model.safetensors", 20_000)
    proc = run_train([f"model.path={folder}", "task.num_train=8", "task.num_dev=4", "task.num_test=4",
                      f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"{folder / 'model.safetensors'} is truncated" in proc.stderr and "save_pretrained" in proc.stderr


# -- 3. trajectories and `zoft replay` ----------------------------------------------------------
STEPS = 5


@pytest.fixture
def trajectory(tmp_path) -> Path:
    """A 5-step MeZO trajectory (on a 2-parameter model; the errors come before any model)."""
    optimizer = MeZO(torch.nn.Linear(1, 1).parameters(), lr=1e-3, seed=0)
    path = tmp_path / "trajectory.bin"
    writer = TrajectoryWriter(path, optimizer, ["weight", "bias"], config={})
    for step in range(STEPS):
        writer.record(step, 1e-3, [0.5 + step])
    writer.close()
    return path


def _header_size(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 8)[0]


def _swap_last_two_records(path: Path) -> None:
    data = path.read_bytes()
    a, b = len(data) - 32, len(data) - 16
    path.write_bytes(data[:a] + data[b:] + data[a:b])


# (how the file is damaged, the --step given, what the message must say)
REPLAY_CASES = {
    "--step -5": (None, -5, ["--step -5 is out of range", f"has {STEPS} recorded steps", f"pass 0..{STEPS}"]),
    "--step 99999": (None, 99999, ["--step 99999 is out of range", f"pass 0..{STEPS}"]),
    "header cut": (lambda p: _cut(p, 12 + _header_size(p) // 2), None, ["the header is truncated", "declares"]),
    "header length cut": (lambda p: _cut(p, 10), None, ["the header is truncated", "before the header's length"]),
    "header not JSON": (lambda p: p.write_bytes(p.read_bytes()[:12] + b"#" + p.read_bytes()[13:]), None,
                        ["the header is not valid JSON"]),
    "not a trajectory": (lambda p: p.write_text('{"status": "completed"}'), None,
                         ["not a zoft trajectory", "ZOFTTRJ1"]),
    "empty file": (lambda p: p.write_bytes(b""), None, ["the file is empty"]),
    "record section cut": (lambda p: _cut(p, p.stat().st_size - 5), None,
                           ["the record section is truncated", f"{STEPS - 1} whole records", "11 bytes",
                            f"--step {STEPS - 1}"]),
    "records out of order": (_swap_last_two_records, None, ["the record section is damaged",
                                                            f"record {STEPS - 2}", f"step {STEPS - 2} was expected"]),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), None, ["is a folder, not a file"]),
}


@pytest.mark.parametrize("case", list(REPLAY_CASES))
def test_replay_input_errors_name_the_file_and_the_fix(trajectory, tmp_path, case, capsys):
    damage, step, expected = REPLAY_CASES[case]
    if damage is not None:
        damage(trajectory)
    with pytest.raises(TrajectoryError) as err:
        replay_run(trajectory, until_step=step, step_option="--step")
    assert_names(str(err.value), str(trajectory), *expected)
    argv = ["replay", "--trajectory", str(trajectory), "--out", str(tmp_path / "out")]
    assert zoft_main(argv + ([] if step is None else ["--step", str(step)])) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and expected[0] in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_step_range_is_inclusive_and_a_cut_file_replays_its_whole_records(trajectory):
    traj = read_trajectory(trajectory)
    for ok in (0, STEPS, None):
        check_until_step(traj, ok, "--step")
    _cut(trajectory, trajectory.stat().st_size - 5)
    cut = read_trajectory(trajectory)  # still readable: a killed run's file
    assert len(cut) == STEPS - 1 and cut.cut_bytes == 11
    check_until_step(cut, STEPS - 1, "--step")
    with pytest.raises(TrajectoryError, match=f"--step {STEPS} is out of range.*plus 11 bytes of a cut record"):
        check_until_step(cut, STEPS, "--step")


@pytest.mark.slow
def test_zoft_replay_cli_step_out_of_range_exits_2(trajectory, tmp_path):
    proc = run_zoft(["replay", "--trajectory", str(trajectory), "--out", str(tmp_path / "out"), "--step", "99999"],
                    tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (f"error: --step 99999 is out of range: {trajectory} has {STEPS} recorded steps; "
                                   f"pass 0..{STEPS} (the number of steps to apply; 0 = the base model)")
    assert not (tmp_path / "out").exists()


def test_optimizer_kernel_of_earlier_versions_points_to_mode_kernel(tmp_path):
    """On the command line (before Hydra) and through validate (a saved config, default_config)."""
    from zoft.config.validate import validate
    from zoft.run import default_config

    proc = run_train(["optimizer=kernel", f"output_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2 and "mode=kernel" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(ZoftUserError, match="mode=kernel"):
        validate(default_config(optimizer={"name": "kernel"}, task={"name": "demo"}))
