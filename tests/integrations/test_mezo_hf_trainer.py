"""The Hugging Face Trainer drop-in trains a tiny model with forward passes only, and its
updates are exactly MeZO's (replayed from the recorded trajectory)."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from zoft.config.schema import TinyArchConfig
from zoft.integrations.hf_trainer import MeZOTrainer
from zoft.models.tiny import build_tiny_model
from zoft.optim.mezo import MeZO
from zoft.optim.trajectory import TrajectoryWriter, read_trajectory, replay_into

ARCH = TinyArchConfig(hidden_size=32, num_layers=1, num_heads=2, ffn_dim=64)


def dataset(n=8, length=10):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 200, (n, length), generator=g)
    return [{"input_ids": row, "labels": row} for row in ids]


def args(tmp_path, **kw):
    settings = dict(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                    learning_rate=1e-3, weight_decay=0.01, max_grad_norm=0.0, report_to=[],
                    use_cpu=True, save_strategy="no", logging_steps=1, seed=3,
                    lr_scheduler_type="linear", disable_tqdm=True)
    return TrainingArguments(**{**settings, **kw})


def test_trainer_updates_equal_mezo_replay(tmp_path):
    model = build_tiny_model("opt", "causal", ARCH, 0)
    trainer = MeZOTrainer(model=model, args=args(tmp_path), train_dataset=dataset(), zo_eps=1e-3)
    opt = trainer.create_optimizer()
    assert isinstance(opt, MeZO)
    opt.attach_trajectory(TrajectoryWriter(tmp_path / "t.bin", opt))
    trainer.train()
    traj = read_trajectory(tmp_path / "t.bin")
    assert traj.steps == [0, 1, 2, 3] and traj.lrs[0] > traj.lrs[-1]  # Trainer's schedule applies
    assert all(p.grad is None for p in model.parameters())  # no backward pass ran
    # The same groups (Trainer's decay split) replayed with plain MeZO give the same weights.
    base = build_tiny_model("opt", "causal", ARCH, 0)
    names = dict(base.named_parameters())
    groups = [[names[n] for n, p in model.named_parameters() if any(p is q for q in g["params"])]
              for g in opt.param_groups]
    again = MeZO([{"params": ps, "weight_decay": g["weight_decay"]} for ps, g in zip(groups, opt.param_groups)],
                 lr=1e-3, eps=1e-3, seed=3)
    replay_into(again, traj)
    for (n, a), b in zip(model.state_dict().items(), base.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("zo_optimizer", ["mezo", "mezo-adam"])
def test_trainer_with_gradient_accumulation_lowers_the_loss(tmp_path, zo_optimizer):
    model = build_tiny_model("opt", "causal", ARCH, 0)
    data = dataset(4)
    lr = 3e-3 if zo_optimizer == "mezo" else 1e-2
    trainer = MeZOTrainer(model=model, args=args(tmp_path, max_steps=60, gradient_accumulation_steps=2,
                                                 per_device_train_batch_size=2, learning_rate=lr),
                          train_dataset=data, zo_optimizer=zo_optimizer)
    ids = torch.stack([d["input_ids"] for d in data])

    def loss():
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    before = loss()
    trainer.train()
    assert trainer.state.global_step == 60
    assert loss() < before - 0.05, (before, loss())
