"""Every method x model family: exactly the intended parameters train, one Adam / SGD / MeZO step
moves only them, and the adapted model saves and reloads to the same outputs."""

from __future__ import annotations

import pytest
import torch

from methods_helpers import FAMILIES, LABEL_IDS, adapted, batch, changed, label_loss, snapshot, tiny
from zoft.config.schema import MethodConfig, ModelConfig
from zoft.methods import apply_method
from zoft.errors import MethodError
from zoft.methods.io import load_adapted, save_adapted
from zoft.models.loader import load_model
from zoft.models.tiny import VOCAB_SIZE, build_tiny_tokenizer
from zoft.optim.mezo import MeZO

L, H, R, P = 2, 64, 8, 5  # tiny models: layers, hidden; LoRA rank; prefixes
METHODS = ["lora", "prefix", "head", "prompt"]
QV = {"opt": ("q_proj", "v_proj"), "llama": ("q_proj", "v_proj"), "roberta": ("query", "value")}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_exactly_the_qv_low_rank_factors(family):
    model, named = adapted(family, "lora")
    names = [n for n, _ in named]
    assert len(names) == L * 2 * 2  # A and B of q and v in every layer
    for n in names:
        assert ".lora_A." in n or ".lora_B." in n, n
        assert any(f".{t}." in n for t in QV[family]), n
    assert sum(p.numel() for _, p in named) == L * 2 * R * (H + H) == 4096
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_trains_exactly_the_key_value_prefixes(family):
    model, named = adapted(family, "prefix")
    assert sorted(n for n, _ in named) == sorted(
        [f"prefix_kv.keys.{i}" for i in range(L)] + [f"prefix_kv.values.{i}" for i in range(L)])
    assert all(p.shape == (P, H) for _, p in named)
    assert sum(p.numel() for _, p in named) == L * 2 * P * H == 1280


@pytest.mark.parametrize("family", FAMILIES)
def test_head_tuning_trains_only_the_vocabulary_projection(family):
    model, named = adapted(family, "head")
    head = model.get_output_embeddings()
    assert {id(p) for _, p in named} == {id(p) for p in (head.weight, head.bias) if p is not None}
    expected = VOCAB_SIZE * H + (VOCAB_SIZE if head.bias is not None else 0)
    assert sum(p.numel() for _, p in named) == expected
    # Tied families train the shared matrix (it appears once, under the embedding's name).
    if family in ("opt", "roberta"):
        assert head.weight is model.get_input_embeddings().weight


@pytest.mark.parametrize("family", ["opt", "roberta"])
def test_untie_head_trains_a_copy_and_leaves_the_embedding(family):
    model, named = adapted(family, "head", untie_head=True)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is not emb.weight and torch.equal(head.weight, emb.weight)
    assert not emb.weight.requires_grad
    assert any(p is head.weight for _, p in named)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_tuning_body_builds_no_graph(family):
    model, _ = adapted(family, "head")
    seen = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    loss = label_loss(model, batch(family))
    handle.remove()
    assert seen[0].grad_fn is None and not seen[0].requires_grad  # the body kept no activations
    assert loss.requires_grad


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_trains_only_the_soft_tokens(family):
    model, named = adapted(family, "prompt")
    assert [(n, tuple(p.shape)) for n, p in named] == [("soft_prompt", (P, H))]


@pytest.mark.parametrize("family", FAMILIES)
def test_soft_prompt_is_perturbed_exactly_through_the_shadow_hooks(family):
    """The prompt hook reads the model's current soft_prompt, so shadow perturbation (the default
    for fp16/bf16 weights) sees theta +- eps z: the same projected gradient as in place (before
    this, it read the unperturbed tensor and every g was 0)."""
    grads = []
    for mode in ("inplace", "shadow"):
        model, named = adapted(family, "prompt")
        opt = MeZO([p for _, p in named], lr=1e-2, eps=1e-2, seed=3, perturbation=mode, model=model)
        data = batch(family)
        opt.step(lambda: label_loss(model, data))
        grads.append(opt.last_projected_grads[0])
    assert grads[0] != 0.0
    assert grads[1] == pytest.approx(grads[0], rel=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_probe_owns_the_head_and_lp_then_trains_everything(family):
    model, named = adapted(family, "linear-probe")
    head = model.get_output_embeddings()
    assert {id(p) for _, p in named} == {id(p) for p in (head.weight, head.bias) if p is not None}
    model, named = adapted(family, "linear-probe", lp_then="mezo")
    assert len(named) == len(list(model.parameters()))


def test_method_rejects_an_unsupported_family():
    with pytest.raises(MethodError, match="family='bert'"):
        apply_method(tiny("opt"), MethodConfig(name="prompt"), "bert")


def _step(model, named, optimizer_name, data):
    params = [p for _, p in named]
    if optimizer_name == "mezo":
        opt = MeZO(params, lr=1e-2, eps=1e-2, seed=3)

        def closure():
            with torch.inference_mode():
                return label_loss(model, data)
    else:
        opt = (torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0) if optimizer_name == "adam"
               else torch.optim.SGD(params, lr=1.0))

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = label_loss(model, data)
            loss.backward()
            return loss
    opt.step(closure)
    return opt


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd", "mezo"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_changes_only_the_trainable_parameters(family, method, optimizer_name):
    model, named = adapted(family, method)
    data = batch(family)
    before = snapshot(model)
    _step(model, named, optimizer_name, data)
    moved = changed(model, before)
    trainable = {n for n, _ in named}
    assert moved and moved <= trainable, (moved - trainable)
    if optimizer_name == "mezo":
        assert moved == trainable  # every trainable tensor moves along its own z
    if method == "lora" and optimizer_name != "mezo":
        # B starts at zero, so only B has a gradient on the first backprop step.
        assert moved == {n for n in trainable if ".lora_B." in n}


@pytest.mark.parametrize("method", ["lora", "prefix"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mezo_with_adapters_keeps_inference_memory(family, method):
    """No gradient buffers, no optimizer state, no graph: what a forward pass needs, nothing more."""
    model, named = adapted(family, method)
    opt = _step(model, named, "mezo", batch(family))
    assert all(p.grad is None for p in model.parameters())
    assert len(opt.state) == 0
    assert opt.last_projected_grads and opt.last_projected_grads[0] != 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_mezo_moves_the_lora_output_after_eval(family):
    """The original RoBERTa LoRA (loralib 0.1.2) merged weights on eval() and then ignored A/B, so
    MeZO learned nothing (a defect of the original with loralib >= 0.1.2). Here the LoRA branch stays live in eval mode."""
    model, named = adapted(family, "lora")
    model.eval()
    data = batch(family)
    with torch.inference_mode():
        out0 = label_loss(model, data).item()
    layers = [m for m in model.modules() if hasattr(m, "merged")]
    assert layers and not any(m.merged for m in layers)
    opt = MeZO([p for _, p in named], lr=0.5, eps=1e-2, seed=0)
    for _ in range(3):
        model.eval()
        opt.step(lambda: label_loss(model, data))
    assert opt.last_projected_grads[-1] != 0.0  # perturbing A/B changes the loss
    assert not any(m.merged for m in layers)
    with torch.inference_mode():
        out1 = label_loss(model, data).item()
    assert out1 != out0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_round_trips(family, method, tmp_path):
    model, named = adapted(family, method)
    data = batch(family)
    _step(model, named, "mezo", data)  # move away from the initialisation
    with torch.no_grad():
        for _, p in named:
            p.add_(0.01 * torch.randn_like(p))
    with torch.inference_mode():
        expected = label_loss(model, data)
    save_adapted(model, build_tiny_tokenizer(family), MethodConfig(name=method), family, named, tmp_path)
    if method in ("lora", "prefix", "prompt"):
        again = tiny(family)  # the same base weights (init seed 0)
        load_adapted(again, tmp_path)
    else:
        again = load_model(ModelConfig(name="saved", family=family, kind=FAMILIES[family],
                                       path=str(tmp_path), device="cpu")).model
    with torch.inference_mode():
        got = label_loss(again, data)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert label_loss(tiny(family), data).item() != pytest.approx(expected.item(), abs=1e-6)


def test_head_untied_save_reload_keeps_the_embedding(tmp_path):
    model, named = adapted("opt", "head", untie_head=True)
    with torch.no_grad():
        model.get_output_embeddings().weight.add_(1.0)
    save_adapted(model, build_tiny_tokenizer("opt"), MethodConfig(name="head", untie_head=True), "opt", named, tmp_path)
    again = load_model(ModelConfig(name="saved", path=str(tmp_path), device="cpu")).model
    torch.testing.assert_close(again.get_output_embeddings().weight, model.get_output_embeddings().weight)
    torch.testing.assert_close(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("method,lr", [("lora", 1e-2), ("prefix", 1e-2), ("head", 1e-2), ("prompt", 1e-2)])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_short_adam_run_lowers_the_loss(family, method, lr):
    model, named = adapted(family, method)
    data = batch(family, rows=16)
    opt = torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=0.0)
    with torch.no_grad():
        first = label_loss(model, data).item()
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        label_loss(model, data).backward()
        opt.step()
    with torch.no_grad():
        last = label_loss(model, data).item()
    assert last < first - 0.05, (first, last)


@pytest.mark.parametrize("method,lr,eps", [("lora", 5e-2, 1e-2), ("prefix", 5e-1, 1e-1)])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_short_mezo_run_lowers_the_loss(family, method, lr, eps):
    model, named = adapted(family, method)
    data = batch(family, rows=16)
    opt = MeZO([p for _, p in named], lr=lr, eps=eps, seed=0)
    with torch.inference_mode():
        first = label_loss(model, data).item()
    for _ in range(300):
        opt.step(lambda: label_loss(model, data))
    with torch.inference_mode():
        last = label_loss(model, data).item()
    assert last < first - 0.05, (first, last)
