"""eNTK kernels on tiny RoBERTa: formulas against naive autograd, PSD-ness, solvers, files."""

from __future__ import annotations

import pytest
import torch

from kernel_helpers import naive_gradients, splits, tiny_roberta
from zoft.kernel import LabelWordLogits, ParamSubset, compute_kernel, split_params
from zoft.kernel.compute import KernelConfigError
from zoft.kernel.params import ParamSubsetError


@pytest.fixture(scope="module")
def setup():
    model, tok = tiny_roberta()
    train, dev = splits(tok)
    return model, train, dev


def _naive_kernel(grads_x, grads_y, op) -> torch.Tensor:
    n, c, m = len(grads_x), len(grads_x[0]), len(grads_y)
    k = torch.zeros(n, c, m, len(grads_y[0]), dtype=torch.float64)
    for i in range(n):
        for a in range(c):
            for j in range(m):
                for b in range(len(grads_y[0])):
                    k[i, a, j, b] = sum(op(u, v) for u, v in zip(grads_x[i][a], grads_y[j][b]))
    return k


def dot(u, v):
    return (u.double() * v.double()).sum()


def sign_dot(u, v):
    return (u.sign().double() * v.sign().double()).sum()


@pytest.mark.parametrize("binary,subset", [(False, ParamSubset()), (True, ParamSubset(exclude_embeddings=True))])
def test_sgd_kernel_is_the_gram_matrix_of_per_example_gradients(setup, binary, subset):
    model, train, dev = setup
    fn = LabelWordLogits(model, train.label_word_ids, binary=binary)
    params, fixed = split_params(fn, subset)
    k = compute_kernel(fn, params, fixed, train, dev, "sgd", outer_batch_size=2, inner_batch_size=1)
    names = list(params)
    expected = _naive_kernel(naive_gradients(fn, train, names), naive_gradients(fn, dev, names), dot)
    c = 1 if binary else 2
    assert k.shape == (5, c, 2, c) and k.dtype == torch.float64
    torch.testing.assert_close(k, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_sgd_train_kernel_is_symmetric_psd(setup):
    model, train, _ = setup
    fn = LabelWordLogits(model, train.label_word_ids)
    params, fixed = split_params(fn, ParamSubset())
    k = compute_kernel(fn, params, fixed, train, train, "sgd", outer_batch_size=3, inner_batch_size=2)
    flat = k.reshape(10, 10)
    scale = flat.abs().max().item()
    torch.testing.assert_close(flat, flat.T, rtol=0, atol=1e-5 * scale)
    eig = torch.linalg.eigvalsh((flat + flat.T) / 2)
    assert eig.min().item() >= -1e-6 * scale, eig
    assert eig.max().item() > 0


def test_signgd_matches_naive_sign_inner_products(setup):
    model, train, dev = setup
    fn = LabelWordLogits(model, train.label_word_ids)
    params, fixed = split_params(fn, ParamSubset(exclude_embeddings=True))
    # Attention key biases get mathematically zero gradients (softmax is shift-invariant), so
    # their signs are rounding noise that differs between batched and one-at-a-time backprop:
    # compare on every other parameter, where the signs are well defined.
    fixed.update({n: params.pop(n) for n in list(params) if n.endswith("key.bias")})
    k = compute_kernel(fn, params, fixed, train, dev, "signgd", outer_batch_size=4, inner_batch_size=2)
    names = list(params)
    expected = _naive_kernel(naive_gradients(fn, train, names), naive_gradients(fn, dev, names), sign_dot)
    assert torch.equal(k, expected), (k - expected).abs().max()


def test_asymmetric_signgd_and_its_flipped_kernel(setup):
    model, train, dev = setup
    fn = LabelWordLogits(model, train.label_word_ids, binary=True)
    params, fixed = split_params(fn, ParamSubset(only_biases=True))
    k = compute_kernel(fn, params, fixed, train, dev, "asymmetric_signgd", outer_batch_size=2, inner_batch_size=2)
    assert k.shape == (2, 5, 1, 2, 1)
    names = list(params)
    assert names and all(n.endswith("bias") for n in names)
    gx, gy = naive_gradients(fn, train, names), naive_gradients(fn, dev, names)
    standard = _naive_kernel(gx, gy, lambda u, v: (u.sign().double() * v.double()).sum())
    flipped = _naive_kernel(gx, gy, lambda u, v: (u.double() * v.sign().double()).sum())
    tol = 1e-4 * max(standard.abs().max().item(), flipped.abs().max().item())
    torch.testing.assert_close(k[0], standard, rtol=1e-4, atol=tol)
    torch.testing.assert_close(k[1], flipped, rtol=1e-4, atol=tol)


def test_parameter_subsets_select_by_name(setup):
    model, train, _ = setup
    fn = LabelWordLogits(model, train.label_word_ids)
    all_names = [n for n, _ in fn.named_parameters()]
    no_emb, _ = split_params(fn, ParamSubset(exclude_embeddings=True))
    assert all("embed" not in n for n in no_emb) and len(no_emb) < len(all_names)
    no_head, _ = split_params(fn, ParamSubset(exclude_head=True))
    assert all("head" not in n for n in no_head)
    upper, _ = split_params(fn, ParamSubset(exclude_first_layers=1))
    assert not any(".layer.0." in n for n in upper) and any(".layer.1." in n for n in upper)
    with pytest.raises(ParamSubsetError, match="LoRA"):
        split_params(fn, ParamSubset(lora_only=True))
    with pytest.raises(ParamSubsetError, match="excludes every parameter"):
        split_params(fn, ParamSubset(exclude_embeddings=True, exclude_head=True, only_biases=True, exclude_first_layers=9))


def test_subset_kernel_is_a_partial_sum_of_the_full_kernel(setup):
    """K over all parameters = K over the head + K over the rest (gradient inner products add)."""
    model, train, dev = setup
    fn = LabelWordLogits(model, train.label_word_ids)
    full = compute_kernel(fn, *split_params(fn, ParamSubset()), train, dev, "sgd", 5, 2)
    no_head = compute_kernel(fn, *split_params(fn, ParamSubset(exclude_head=True)), train, dev, "sgd", 5, 2)
    head_only_params = {n: p.detach() for n, p in fn.named_parameters() if "head" in n}
    fixed = {n: p.detach() for n, p in fn.named_parameters() if "head" not in n}
    head = compute_kernel(fn, head_only_params, fixed, train, dev, "sgd", 5, 2)
    torch.testing.assert_close(full, no_head + head, rtol=1e-4, atol=1e-4 * full.abs().max().item())


def test_bad_kernel_settings_fail_clearly(setup):
    model, train, dev = setup
    fn = LabelWordLogits(model, train.label_word_ids)
    params, fixed = split_params(fn, ParamSubset())
    with pytest.raises(KernelConfigError, match="kernel.formula='ntk'.*sgd, signgd, asymmetric_signgd"):
        compute_kernel(fn, params, fixed, train, dev, "ntk", 2, 2)
    with pytest.raises(KernelConfigError, match="binary"):
        compute_kernel(fn, params, fixed, train, dev, "asymmetric_signgd", 2, 2)


def test_lora_only_kernel_on_a_peft_model():
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_roberta()
    train, dev = splits(tok)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"]))
    fn = LabelWordLogits(peft_model, train.label_word_ids, binary=True)
    params, fixed = split_params(fn, ParamSubset(lora_only=True, exclude_head=True))
    assert len(params) == 8 and all("lora_" in n for n in params)  # 2 layers x (q, v) x (A, B)
    k = compute_kernel(fn, params, fixed, train, dev, "sgd", outer_batch_size=3, inner_batch_size=2)
    names = list(params)
    expected = _naive_kernel(naive_gradients(fn, train, names), naive_gradients(fn, dev, names), dot)
    assert expected.abs().max() > 0
    torch.testing.assert_close(k, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
