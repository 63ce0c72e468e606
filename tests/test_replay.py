"""Trajectories: recorded by every ZO run, identical for equal seeds, compact, readable after a
kill, and replayed into bit-identical weights (CPU, fp32) through the API and `zoft replay`."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from conftest import FAST, compose_config
from zoft.cli import main
from zoft.config.schema import ModelConfig
from zoft.models.loader import load_model
from zoft.optim.trajectory import TrajectoryError, read_trajectory
from zoft.replay import replay_run
from zoft.run import run

ZO = FAST + ["method=mezo", "optimizer.lr=1e-3", "trainer.eval_steps=0", "trainer.max_steps=12",
             "trainer.lr_scheduler=linear", "optimizer.weight_decay=0.1", "save_model=true", "trainer.log_steps=1"]


def trained_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_model(ModelConfig(name="saved", path=str(run_dir / "model"), device="cpu")).model.state_dict()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def mezo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = run(compose_config(ZO + [f"output_dir={out}"]))
    assert results["training"]["best_step"] == 12
    return out


def test_trajectory_is_compact_and_complete(mezo_run):
    traj = read_trajectory(mezo_run / "trajectory.bin")
    assert traj.steps == list(range(12))
    assert traj.lrs[0] == pytest.approx(1e-3) and traj.lrs[-1] < traj.lrs[0]  # the linear schedule
    size = (mezo_run / "trajectory.bin").stat().st_size
    assert (size - traj.header_bytes) / len(traj) == 16
    metrics = [json.loads(line) for line in (mezo_run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["projected_grad"] for r in metrics if "projected_grad" in r]
    assert logged == [g[0] for g in traj.grads]


def test_same_seed_same_trajectory(mezo_run, tmp_path):
    run(compose_config(ZO + [f"output_dir={tmp_path}"]))
    a, b = read_trajectory(mezo_run / "trajectory.bin"), read_trajectory(tmp_path / "trajectory.bin")
    assert (b.steps, b.lrs, b.grads) == (a.steps, a.lrs, a.grads)
    assert_same(trained_weights(mezo_run), trained_weights(tmp_path))
    run(compose_config(ZO + [f"output_dir={tmp_path / 'other'}", "optimizer.zo_seed=99"]))
    assert read_trajectory(tmp_path / "other" / "trajectory.bin").grads != a.grads


def test_replay_rebuilds_bit_identical_weights(mezo_run):
    model, summary = replay_run(mezo_run / "trajectory.bin")
    assert summary["steps_applied"] == 12
    assert_same(trained_weights(mezo_run), model.state_dict())


def test_replay_cli_and_partial_steps(mezo_run, tmp_path):
    assert main(["replay", "--trajectory", str(mezo_run / "trajectory.bin"), "--out", str(tmp_path)]) == 0
    assert_same(trained_weights(mezo_run), trained_weights(tmp_path))
    five, _ = replay_run(mezo_run / "trajectory.bin", until_step=5)
    assert not torch.equal(five.state_dict()["lm_head.weight"], trained_weights(mezo_run)["lm_head.weight"])


def test_truncated_file_is_readable_and_wrong_base_is_refused(mezo_run, tmp_path):
    data = (mezo_run / "trajectory.bin").read_bytes()
    cut = tmp_path / "killed.bin"
    cut.write_bytes(data[:-5])  # killed in the middle of the last record
    assert len(read_trajectory(cut)) == 11
    header_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[12:12 + header_len])
    header["config"]["model"]["init_seed"] = 5  # another base model
    blob = json.dumps(header).encode()
    other = tmp_path / "other.bin"
    other.write_bytes(data[:8] + struct.pack("<I", len(blob)) + blob + data[12 + header_len:])
    with pytest.raises(TrajectoryError, match="differ from those the run started from"):
        replay_run(other)
    assert main(["replay", "--trajectory", str(tmp_path / "missing.bin"), "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("extra", [["method=ft", "optimizer=mezo-adam", "optimizer.lr=1e-3"],
                                   ["optimizer.n_directions=2", "optimizer.direction=rademacher"],
                                   ["model.dtype=bfloat16"]])  # shadow perturbation: replay is the updates alone
def test_replay_of_variants(tmp_path, extra):
    base = [o for o in ZO if not (extra[0].startswith("method=") and o.startswith("method="))]
    run(compose_config(base + [f"output_dir={tmp_path}", "trainer.max_steps=5", *extra]))
    model, _ = replay_run(tmp_path / "trajectory.bin")
    assert_same(trained_weights(tmp_path), model.state_dict())


def test_replay_after_a_divergence_rollback(tmp_path):
    """A rollback drops the abandoned steps from the trajectory, so replay follows the redone
    ones; the redone steps carry the halved LR."""
    run(compose_config(ZO + [f"output_dir={tmp_path}", "trainer.max_steps=40", "trainer.lr_scheduler=constant",
                             "trainer.checkpoint_steps=10", "trainer.on_divergence=rollback",
                             "trainer.divergence_factor=1e-9", "trainer.max_rollbacks=1"]))
    traj = read_trajectory(tmp_path / "trajectory.bin")
    steps = [r.step for r in traj.records] if hasattr(traj, "records") else None
    model, summary = replay_run(tmp_path / "trajectory.bin")
    assert summary["steps_applied"] == 40
    assert_same(trained_weights(tmp_path), model.state_dict())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == list(range(1, 41))  # the abandoned step 21 was dropped and redone
    rollback = [r for r in rows if "rollback_from" in r]
    assert len(rollback) == 1 and rollback[0]["step"] == 20 and rollback[0]["lr_scale"] == 0.5
    lrs = {r["step"]: r["lr"] for r in rows if "loss" in r}
    assert lrs[21] == pytest.approx(lrs[20] / 2) and lrs[40] == pytest.approx(lrs[20] / 2)
    del steps


def test_replay_rebuilds_the_reported_best_step_by_default(tmp_path, capsys):
    """A run that restores its best dev step (6 of 12: dev loss 0.5 there, 5 to 170 elsewhere,
    measured) reports that step's weights; replay rebuilds them by default and says so, and
    --step last rebuilds step 12."""
    results = run(compose_config(FAST + ["method=mezo", "optimizer.lr=5e-2", "trainer.eval_steps=3",
                                         "trainer.max_steps=12", "save_model=true", f"output_dir={tmp_path / 'run'}"]))
    best = results["training"]["best_step"]
    assert best == 6
    trajectory = str(tmp_path / "run" / "trajectory.bin")
    capsys.readouterr()  # the run's own output
    model, summary = replay_run(trajectory)
    assert summary["steps_applied"] == 6 and summary["rebuilt"].startswith("step 6 of 12: the run's best dev step")
    assert_same(trained_weights(tmp_path / "run"), model.state_dict())  # the saved (reported) model
    assert main(["replay", "--trajectory", trajectory, "--out", str(tmp_path / "best")]) == 0
    out = capsys.readouterr()
    assert "rebuilt step 6 of 12" in out.err and "--step last" in out.err
    assert json.loads(out.out)["steps_applied"] == 6
    assert main(["replay", "--trajectory", trajectory, "--out", str(tmp_path / "last"), "--step", "last"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_applied"] == 12
    assert not torch.equal(trained_weights(tmp_path / "last")["lm_head.weight"], model.state_dict()["lm_head.weight"])
    with pytest.raises(SystemExit):
        main(["replay", "--trajectory", trajectory, "--out", str(tmp_path / "x"), "--step", "first"])


FLAT_LEFTOVERS = {"momentum": 0.0, "betas": [0.9, 0.999], "adam_eps": 1e-8, "max_grad_norm": 1.0,
                  "hessian_smooth": 1e-8, "sparsity": 0.75, "sign_of": "estimate", "zo_variant": "param_norm"}


@pytest.mark.parametrize("optimizer", ["lozo", "mezo-adam"])
def test_a_trajectory_recorded_with_the_flat_optimizer_schema_still_replays(tmp_path, optimizer):
    """Runs recorded before each option had its own settings carry every option's keys in the
    header's config (and no _target_); LOZO / MeZO-Adam were LowRankZO / ZOFirstOrder then."""
    base = [o for o in ZO if not o.startswith("method=")]
    run(compose_config(base + [f"output_dir={tmp_path}", "trainer.max_steps=5", "method=ft",
                               f"optimizer={optimizer}", "optimizer.lr=1e-3"]))
    path = tmp_path / "trajectory.bin"
    data = path.read_bytes()
    magic = data[:data.index(b"{") - 4]
    (length,) = struct.unpack("<I", data[len(magic):len(magic) + 4])
    header = json.loads(data[len(magic) + 4:len(magic) + 4 + length])
    assert header["optimizer"]["class"] == {"lozo": "LowRankZO", "mezo-adam": "ZOFirstOrder"}[optimizer]
    old = {k: v for k, v in header["config"]["optimizer"].items() if not k.startswith("_")}
    header["config"]["optimizer"] = {**FLAT_LEFTOVERS, **old}
    blob = json.dumps(header).encode()
    path.write_bytes(magic + struct.pack("<I", len(blob)) + blob + data[len(magic) + 4 + length:])
    model, _ = replay_run(path)
    assert_same(trained_weights(tmp_path), model.state_dict())
