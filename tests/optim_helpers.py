"""Small models and closures the optimizer tests share (tests/test_mezo.py, test_estimators.py,
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
