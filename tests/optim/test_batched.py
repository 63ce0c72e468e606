"""Batched probes (optimizer.probe_batch): the perturbation axis folded into the batch gives the
estimates and updates of the probes run one after another, for causal and masked models, full
parameters and LoRA; what it cannot batch is refused with a clear error."""

from __future__ import annotations

import pytest
import torch

from conftest import FAST, compose_config
from optim_helpers import lm_closure, option_values
from zoft.config.schema import TinyArchConfig
from zoft.config.validate import ConfigError, validate
from zoft.models.tiny import build_tiny_model
from zoft.optim.build import build_optimizer
from zoft.optim.estimators import FZOO
from zoft.optim.mezo import MeZO
from zoft.optim.registry import OPTIMIZERS
from zoft.optim.spec import capabilities_of

ARCH = TinyArchConfig(hidden_size=32, num_layers=2, num_heads=2, ffn_dim=64)


def tiny(family, dtype=torch.float64):
    kind = "causal" if family == "opt" else "masked"
    return build_tiny_model(family, kind, ARCH, seed=0).to(dtype).eval()


def closure_of(model, seed, family):
    ids = torch.randint(4, 200, (3, 10), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # one padded row: the masks are repeated with the batch

    def closure():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return closure


def trajectories(cls, family, steps=3, **kwargs):
    """(scalars per step, final weights) for sequential shadow probes and for batched ones."""
    out = []
    for batch in (1, kwargs.pop("probe_batch")):
        model = tiny(family)
        opt = cls(model.parameters(), lr=1e-3, eps=1e-3, seed=3, model=model, perturbation="shadow",
                  probe_batch=batch, **kwargs)
        scalars = []
        for s in range(steps):
            opt.step(closure_of(model, s, family))
            scalars.append(list(opt.last_projected_grads))
        out.append((scalars, [p.detach().clone() for p in model.parameters()]))
    return out


@pytest.mark.parametrize("family", ["opt", "roberta"])
@pytest.mark.parametrize("cls, kwargs", [(MeZO, {"n_directions": 3, "probe_batch": 6}),
                                         (MeZO, {"n_directions": 3, "probe_batch": 4}),  # groups of 4 + 2
                                         (FZOO, {"n_directions": 4, "probe_batch": 5})],
                         ids=["mezo-one-forward", "mezo-two-forwards", "fzoo"])
def test_batched_probes_equal_the_probes_run_one_after_another(cls, kwargs, family):
    (seq_scalars, seq_weights), (bat_scalars, bat_weights) = trajectories(cls, family, **kwargs)
    for a, b in zip(seq_scalars, bat_scalars):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    assert any(g != 0.0 for step in seq_scalars for g in step)
    for x, y in zip(seq_weights, bat_weights):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-12)


def test_one_batched_forward_runs_the_model_once_per_group():
    model = tiny("opt")
    calls = []
    model.model.decoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    opt = MeZO(model.parameters(), lr=1e-3, n_directions=2, model=model, probe_batch=4)
    opt.step(closure_of(model, 0, "opt"))
    assert len(calls) == 1 and opt.perturbation == "shadow"
    assert "forward" not in model.__dict__  # the wrapper is gone
    wrapped = model.forward  # an instance attribute of one's own (as accelerate's hooks set) is kept
    model.forward = wrapped
    opt.step(closure_of(model, 1, "opt"))
    assert len(calls) == 2 and model.__dict__["forward"] is wrapped


def test_a_closure_that_changes_its_inputs_between_probes_is_refused():
    model = tiny("opt")
    opt = MeZO(model.parameters(), lr=1e-3, model=model, probe_batch=2)
    before = [p.detach().clone() for p in model.parameters()]
    seeds = iter(range(10))
    with pytest.raises(RuntimeError, match="other inputs for probe 1"):
        opt.step(lambda: closure_of(model, next(seeds), "opt")())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert "forward" not in model.__dict__


def test_a_loss_reduced_inside_the_model_is_refused():
    model = tiny("opt")
    ids = torch.randint(4, 200, (2, 8), generator=torch.Generator().manual_seed(0))
    opt = MeZO(model.parameters(), lr=1e-3, model=model, probe_batch=2)
    with pytest.raises(RuntimeError, match="reduced tensor"):
        opt.step(lambda: model(input_ids=ids, labels=ids).loss)


def test_probe_batch_is_recorded_per_estimator_and_checked_by_the_config():
    for name, record in OPTIMIZERS.items():
        if not record.capabilities.zeroth_order:
            continue
        model = tiny("opt", torch.float32)
        opt = build_optimizer(option_values(name, n_directions=2 if name == "fzoo" else 1),
                              list(model.named_parameters()), seed=0, model=model)
        assert capabilities_of(opt) == record.capabilities, name  # the class and the config read one record
    with pytest.raises(ConfigError, match="hizoo does not batch its probes"):
        validate(compose_config(FAST + ["optimizer=hizoo", "optimizer.probe_batch=2"]))
    with pytest.raises(ConfigError, match="perturbation=inplace cannot"):
        validate(compose_config(FAST + ["optimizer=mezo", "optimizer.probe_batch=2", "optimizer.perturbation=inplace"]))
    with pytest.raises(ConfigError, match=r"n_directions=1 must be >= 2 \(N, the probes per step"):
        validate(compose_config(FAST + ["optimizer=fzoo", "optimizer.n_directions=1"]))


@pytest.mark.parametrize("method", ["ft", "lora"])
def test_batched_probes_through_the_config_path_match_the_sequential_run(tmp_path, method):
    from zoft.run import run

    from zoft.optim.trajectory import read_trajectory

    results, forwards = [], []
    for batch in (1, 4):
        cfg = compose_config(FAST + ["optimizer=mezo", "optimizer.n_directions=2", "optimizer.perturbation=shadow",
                                     f"optimizer.probe_batch={batch}", f"method={method}", "trainer.max_steps=3",
                                     "trainer.eval_steps=0", "trainer.eval_before_training=false",
                                     "model.dtype=float64",  # float32 GEMMs round differently at 4x the rows
                                     f"output_dir={tmp_path / str(batch)}"])
        counter = _count_model_calls()
        with counter:
            results.append(run(cfg))
        forwards.append(counter.calls)
    assert forwards[0] - forwards[1] == 3 * (4 - 1)  # 4 probes per step in one forward instead of four
    sequential, batched = (read_trajectory(tmp_path / str(b) / "trajectory.bin").grads for b in (1, 4))
    assert len(sequential) == 3 and any(g != 0.0 for step in sequential for g in step)
    for a, b in zip(sequential, batched):  # stored as float32
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)
    assert results[0]["metrics"]["dev_loss"] == pytest.approx(results[1]["metrics"]["dev_loss"], rel=1e-9)


class _count_model_calls:
    """Counts forwards of the tiny models' decoders (one per model call, any wrapper above)."""

    def __enter__(self):
        from transformers.models.opt.modeling_opt import OPTDecoder

        self.calls, self._original = 0, OPTDecoder.forward
        counter = self

        def counted(module, *args, **kwargs):
            counter.calls += 1
            return counter._original(module, *args, **kwargs)
        OPTDecoder.forward = counted
        return self

    def __exit__(self, *exc):
        from transformers.models.opt.modeling_opt import OPTDecoder

        OPTDecoder.forward = self._original
