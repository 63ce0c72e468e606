"""Training precision: first-order runs never train pure fp16/bf16 master weights; MeZO keeps
loading in half precision as the paper did."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import FAST, TINY64, compose_config
from zoft.config.validate import ConfigError, validate
from zoft.run import run
from zoft.train.precision import LossScaler, plan_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("method", ["ft", "lora", "prefix", "head", "prompt"])
@pytest.mark.parametrize("optimizer,lr", [("adam", "1e-3"), ("sgd", "1e-2")])
def test_first_order_on_float16_weights_trains_without_nan(tmp_path, method, optimizer, lr):
    cfg = compose_config(FAST + TINY64 + [f"method={method}", f"optimizer={optimizer}", f"optimizer.lr={lr}",
                                          "model.dtype=float16", "trainer.max_steps=12", "trainer.log_steps=1",
                                          f"output_dir={tmp_path}"])
    results = run(cfg)
    assert results["status"] == "completed"
    assert results["protocol"]["fields"]["trainer.precision"]["value"] == ("fp32" if method == "head" else "amp")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert all(math.isfinite(v) for v in results["metrics"].values())


def test_pure_half_first_order_is_refused_with_the_reason():
    cfg = compose_config(["optimizer=adam", "model.dtype=float16", "trainer.precision=pure"])
    with pytest.raises(ConfigError, match="trainer.precision=pure with model.dtype=float16 and optimizer=adam"):
        validate(cfg)


def test_mezo_keeps_half_weights(tmp_path):
    cfg = compose_config(FAST + ["method=mezo", "model.dtype=float16", "trainer.max_steps=4", f"output_dir={tmp_path}"])
    validate(cfg)
    assert cfg.trainer.precision == "pure"
    assert plan_precision(cfg.trainer.precision, cfg.model.dtype, CPU).load_dtype == "float16"
    assert run(cfg)["status"] == "completed"


def test_plans():
    amp_cpu = plan_precision("amp", "float16", CPU)
    assert amp_cpu.load_dtype == "float32" and amp_cpu.autocast_dtype is None and "without float16 autocast" in amp_cpu.notice
    amp_cuda = plan_precision("amp", "bfloat16", CUDA)
    assert amp_cuda.load_dtype == "float32" and amp_cuda.autocast_dtype == torch.bfloat16 and amp_cuda.notice is None
    assert plan_precision("fp32", "float16", CUDA).autocast_dtype is None
    assert plan_precision("amp", "float64", CPU).load_dtype == "float64"  # full precision is kept
    assert plan_precision("pure", "bfloat16", CPU).load_dtype == "bfloat16"


def test_loss_scaler_skips_an_overflowed_step_and_backs_off():
    w = torch.nn.Parameter(torch.ones(3))
    scaler = LossScaler(init_scale=8.0, growth_interval=2)
    w.grad = torch.tensor([8.0, 16.0, float("inf")])
    assert not scaler.unscale_or_skip([w]) and w.grad is None and scaler.scale == 4.0
    opt = torch.optim.AdamW([w], lr=0.1)
    opt.step()  # no gradient: AdamW leaves the weight alone
    assert torch.equal(w.detach(), torch.ones(3))
    w.grad = torch.tensor([4.0, 8.0, 12.0])
    assert scaler.unscale_or_skip([w]) and torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0]))
    w.grad = torch.tensor([4.0, 4.0, 4.0])
    assert scaler.unscale_or_skip([w]) and scaler.scale == 8.0  # two clean steps: the scale grows
