"""Methods through the whole run (config -> results.json) on the causal tiny models, the presets'
composed values, the family check, and saving an adapter from a run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST, TINY64, compose_config
from zoft.config.schema import ModelConfig
from zoft.config.validate import ConfigError, validate
from zoft.methods.io import load_adapted
from zoft.models.loader import load_model
from zoft.run import run

COUNTS = {"lora": 4096, "prefix": 1280, "prompt": 320}  # TINY64: 2 layers, hidden 64


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("model", ["tiny-opt", "tiny-llama"])
@pytest.mark.parametrize("method,lr", [("lora", "1e-2"), ("prefix", "3e-2"), ("head", "1e-3"), ("prompt", "3e-2")])
def test_adam_run_with_each_method_lowers_the_training_loss(tmp_path, model, method, lr):
    cfg = compose_config(FAST + TINY64 + [f"model={model}", f"method={method}", "optimizer=adam", f"optimizer.lr={lr}",
                                 "trainer.max_steps=100", "trainer.log_steps=1", "trainer.eval_steps=0",
                                 "trainer.lr_scheduler=constant",
                                 f"output_dir={tmp_path}"])
    results = run(cfg)
    assert results["status"] == "completed"
    if method in COUNTS:
        assert results["parameters"]["trainable"] == COUNTS[method]
    losses = _losses(tmp_path)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    # On a randomly initialised body a prefix or soft prompt can only learn little more than the
    # class prior (the loss floor is about 0.685 < ln 2), so their margin is smaller.
    margin = 0.005 if method in ("prefix", "prompt") else 0.02
    assert last < first - margin, (first, last)


@pytest.mark.parametrize("preset", ["mezo-lora", "mezo-prefix"])
def test_mezo_presets_run_on_the_candidate_objective(tmp_path, preset):
    cfg = compose_config(FAST + TINY64 + [f"method={preset}", "task=demo", "trainer.max_steps=20", "trainer.eval_steps=10",
                                 f"output_dir={tmp_path}"])
    results = run(cfg)
    assert results["status"] == "completed" and results["training"]["forward_passes"] == 40
    assert results["parameters"]["trainable"] == COUNTS[preset.split("-")[1]]


def test_presets_compose_their_parameterisation():
    # The presets' LR/eps/weight decay per family are in tests/config/test_protocol.py (GOLDEN).
    for preset, name in (("mezo-lora", "lora"), ("mezo-prefix", "prefix"), ("mezo", "ft")):
        cfg = compose_config([f"method={preset}", "task=sst2"])
        assert cfg.method.name == name and cfg.optimizer.name == "mezo" and cfg.method.preset == preset
        assert cfg.method.lora_r == 8 and cfg.method.lora_alpha == 16 and cfg.method.num_prefix == 5


def test_a_method_on_an_unsupported_family_is_a_clear_error():
    cfg = compose_config(["method=prompt", "model=tiny-roberta", "model.family=bert", "task=sst2"])
    with pytest.raises(ConfigError, match="method.name='prompt' does not support model.family='bert'"):
        validate(cfg)


def test_run_saves_a_lora_adapter_that_reloads(tmp_path):
    cfg = compose_config(FAST + TINY64 + ["method=mezo-lora", "optimizer.lr=1e-2", "save_model=true",
                                 f"output_dir={tmp_path}"])
    run(cfg)
    folder = tmp_path / "model"
    assert (folder / "adapter.safetensors").is_file() and (folder / "method.json").is_file()
    base = load_model(ModelConfig(name="tiny-opt", device="cpu"))
    named = load_adapted(base.model, folder)
    assert sum(p.numel() for _, p in named) == COUNTS["lora"]
    assert any(p.abs().sum() > 0 for n, p in named if ".lora_B." in n)  # trained, not the zero init
    ids = torch.tensor([[2, 300, 301, 302]])
    fresh = load_model(ModelConfig(name="tiny-opt", device="cpu")).model
    assert not torch.allclose(base.model(input_ids=ids).logits, fresh(input_ids=ids).logits)
