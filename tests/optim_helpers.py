"""Small models and closures the optimizer tests share (tests/optim/test_mezo.py, test_estimators.py,
test_batched.py): a tiny OPT with a language-modelling loss, and a float64 MLP regression."""

from __future__ import annotations

import torch

from zoft.config.schema import TinyArchConfig
from zoft.models.tiny import build_tiny_model


def tiny_opt(dtype=torch.float32, seed=0):
    return build_tiny_model("opt", "causal", TinyArchConfig(hidden_size=32, num_layers=1, num_heads=2, ffn_dim=64), seed).to(dtype)


def lm_closure(model, seed=0, batch=4, length=12):
    ids = torch.randint(4, 200, (batch, length), generator=torch.Generator().manual_seed(seed))

    def closure():
        # Cross-entropy in the model's dtype (HF's built-in loss upcasts only to float32).
        logits = model(input_ids=ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return closure


def mlp(d_in=8, hidden=16, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()


def regression_closure(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    return lambda: ((model(x) - y) ** 2).mean()


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in params])


# The values the optimizer tests were written with (the schema's defaults when one flat optimizer
# config held every option's keys); option_values keeps those the chosen option has.
TEST_DEFAULTS = dict(lr=1e-6, eps=1e-3, weight_decay=0.0, momentum=0.0, betas=[0.9, 0.999], adam_eps=1e-8,
                     n_directions=1, direction="gaussian", perturbation="auto", probe_batch=1, zo_seed=None,
                     hessian_smooth=1e-8, sparsity=0.75, threshold_update="fixed", sign_of="estimate",
                     sample_scheduler="constant", sample_steps=None, scale_lr_with_samples=False,
                     lowrank_rank=2, lowrank_interval=50, zo_variant="param_norm", zo_by_layer=False,
                     recompute_norms=0, change_grad_estimate=False, scale_norm_by_num_params=False,
                     norm_running_update=False)


def option_values(name: str, **values) -> dict:
    """``optimizer=<name>``'s settings for build_optimizer: TEST_DEFAULTS updated by ``values``,
    keeping only the keys the option has (its record in zoft.optim.registry)."""
    from zoft.optim.registry import OPTIMIZERS

    merged = {**TEST_DEFAULTS, **values}
    return {"name": name, **{k: v for k, v in merged.items() if k in OPTIMIZERS[name].settings}}
