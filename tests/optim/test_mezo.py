"""MeZO: the estimate against autograd, n-SPSA, schedules, RNG isolation, resume, first-order
consumers of the ZO estimate (the engine's parts: test_directions, test_displacement,
test_shadow, test_trajectory)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from optim_helpers import flat, lm_closure, mlp, regression_closure, tiny_opt, option_values
from zoft.config.schema import TinyArchConfig
from zoft.models.tiny import build_tiny_model
from zoft.optim.build import build_optimizer
from zoft.optim.mezo import MeZO, ZOFirstOrder


@pytest.mark.parametrize("direction", ["gaussian", "rademacher"])
def test_projected_gradient_matches_autograd_directional_derivative(direction):
    model = tiny_opt(torch.float64)
    closure = lm_closure(model)
    params = list(model.parameters())
    closure().backward()
    grads = [p.grad.clone() for p in params]
    opt = MeZO(params, lr=0.0, eps=1e-6, direction=direction, seed=3)
    opt.step(closure)
    g = opt.last_projected_grads[0]
    exact = sum(float((opt.direction_of(i, 0).double() * gr).sum()) for i, gr in enumerate(grads))
    # g is stored in float32 (the trajectory's precision): 6e-8 relative, far below the bound.
    assert abs(g - exact) / abs(exact) < 1e-4, (g, exact)


def test_mean_of_estimates_approaches_the_gradient():
    cosines = []
    for n in (1, 10, 100, 1000):
        model = mlp()
        closure = regression_closure(model)
        params = list(model.parameters())
        closure().backward()
        true = flat(p.grad for p in params)
        before = flat(params)
        opt = MeZO(params, lr=1.0, eps=1e-6, n_directions=n, seed=11)
        opt.step(closure)
        estimate = before - flat(params)  # lr/n * sum g_k z_k
        cosines.append(float(torch.nn.functional.cosine_similarity(estimate, true, dim=0)))
    assert cosines == sorted(cosines), cosines
    assert cosines[-1] > 0.85 and cosines[0] < 0.5, cosines


def test_n_spsa_update_is_the_average_of_the_directions():
    model = mlp()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    opt = MeZO(params, lr=0.1, eps=1e-4, n_directions=3, seed=5)
    opt.step(regression_closure(model))
    gs = opt.last_projected_grads
    assert len(gs) == 3 and len(set(gs)) == 3
    for i, (p, b) in enumerate(zip(params, before)):
        expected = b - 0.1 / 3 * sum(g * opt.direction_of(i, 0, k).double() for k, g in enumerate(gs))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)


def test_weight_decay_and_lr_schedule_apply():
    model = mlp()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    opt = MeZO([{"params": params[:1], "weight_decay": 0.5}, {"params": params[1:], "weight_decay": 0.0}],
               lr=0.2, eps=1e-4, seed=1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.25)  # lr is 0.05 from the first step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    opt.step(regression_closure(model))
    sched.step()
    g = opt.last_projected_grads[0]
    for i, (p, b) in enumerate(zip(params, before)):
        wd = 0.5 if i == 0 else 0.0
        expected = b - 0.05 * (g * opt.direction_of(i, 0).double() + wd * b)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)


def test_builder_skips_decay_for_biases_and_llama_norms():
    model = build_tiny_model("llama", "causal", TinyArchConfig(hidden_size=32, num_layers=1, num_heads=2, ffn_dim=64), 0)
    named = list(model.named_parameters())
    opt = build_optimizer(option_values("mezo", weight_decay=0.1), named, seed=0)
    names = {id(p): n for n, p in named}
    no_decay = [names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert no_decay and all("norm" in n or "bias" in n for n in no_decay)
    decay = [names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert not any("norm" in n for n in decay)


def test_global_rng_is_untouched_and_any_scalar_closure_works():
    model = mlp()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    opt = MeZO(model.parameters(), lr=1e-3, eps=1e-3, seed=0)
    calls = []

    def accuracy_closure():  # non-differentiable objective: a plain Python float
        calls.append(1)
        return -0.5 if len(calls) % 2 else -0.75

    loss = opt.step(accuracy_closure)
    assert torch.equal(torch.get_rng_state(), state)
    assert float(loss) == -0.5 and opt.last_projected_grads[0] == pytest.approx(0.25 / 2e-3)


def _train(model, opt, steps, seed=0):
    for s in range(steps):
        opt.step(lm_closure(model, seed=seed + s))


@pytest.mark.parametrize("kind", ["mezo", "mezo-adam", "mezo-sgd"])
def test_resume_from_saved_state_continues_bit_identically(kind):
    def make(model):
        cfg = option_values(kind, lr=1e-3, eps=1e-3, momentum=0.9, zo_seed=7)
        return build_optimizer(cfg, list(model.named_parameters()), seed=0, model=model)

    straight = tiny_opt()
    opt = make(straight)
    _train(straight, opt, 6)

    first = tiny_opt()
    opt1 = make(first)
    _train(first, opt1, 3)
    saved_weights, saved_state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict())
    resumed = tiny_opt(seed=1)  # different init, overwritten by the checkpoint
    resumed.load_state_dict(saved_weights)
    opt2 = make(resumed)
    opt2.load_state_dict(saved_state)
    _train(resumed, opt2, 3, seed=3)
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def test_zo_first_order_writes_the_estimate_into_grad():
    model = mlp()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    opt = ZOFirstOrder(params, inner="sgd", lr=0.1, eps=1e-4, seed=6)
    opt.step(regression_closure(model))
    g = opt.last_projected_grads[0]
    for i, (p, b) in enumerate(zip(params, before)):
        z = opt.direction_of(i, 0).double()
        torch.testing.assert_close(p.grad, g * z, rtol=0, atol=1e-12)
        torch.testing.assert_close(p.detach(), b - 0.1 * g * z, rtol=0, atol=1e-12)
    net = mlp()
    adam = ZOFirstOrder(list(net.parameters()), inner="adam", lr=0.01, eps=1e-4)
    assert adam.inner.param_groups[0] is not adam.param_groups[0]  # composed, not aliased
    torch.optim.lr_scheduler.LambdaLR(adam, lambda s: 0.5)
    adam.step(regression_closure(net))
    assert adam.inner.param_groups[0]["lr"] == pytest.approx(0.005)  # schedules drive the inner optimizer


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="eps=0"):
        MeZO(mlp().parameters(), eps=0)
    with pytest.raises(ValueError, match="direction='normal'"):
        MeZO(mlp().parameters(), direction="normal")
    with pytest.raises(ValueError, match="closure"):
        MeZO(mlp().parameters()).step()
    assert math.isnan(float(MeZO(mlp().parameters()).replay([0.0])))


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_zo_first_order_resumed_mid_schedule_equals_a_straight_run(inner):
    """The inner optimizer has its own groups: a checkpoint must still carry the LR the next
    step uses (a resumed run once took the previous step's LR)."""
    x, y = torch.randn(20, 16, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 2

    def train(resume_at=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(), torch.nn.Linear(24, 2))
        make = lambda: ZOFirstOrder(net.parameters(), inner=inner, lr=1e-2, eps=1e-3, weight_decay=0.1,  # noqa: E731
                                    momentum=0.9 if inner == "sgd" else 0.0, seed=2)
        opt = make()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 30)
        for i in range(20):
            if i == resume_at:  # as the loop resumes: build both, then load both
                states = opt.state_dict(), sched.state_dict()
                opt = make()
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 30)
                opt.load_state_dict(states[0])
                sched.load_state_dict(states[1])
            opt.step(lambda: torch.nn.functional.cross_entropy(net(x), y))
            sched.step()
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(train(), train(resume_at=10)):
        assert torch.equal(a, b)
