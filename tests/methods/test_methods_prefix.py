"""Prefix tuning against independent computations: the real-activation prefix equals running the
random tokens in front (causal LMs), attention with the prefix matches a hand-written attention
(RoBERTa), padding does not leak, and cached generation with the prefix matches a no-cache loop."""

from __future__ import annotations

import math

import pytest
import torch

from methods_helpers import ARCH, tiny
from zoft.config.schema import MethodConfig
from zoft.methods import apply_method
from zoft.models.tiny import PAD, VOCAB_SIZE, build_tiny_model

P = 5


def with_prefix(family, seed=1):
    model = tiny(family)
    torch.manual_seed(seed)
    apply_method(model, MethodConfig(name="prefix", num_prefix=P), family)
    return model


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_real_activation_prefix_equals_the_tokens_in_front(family):
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB_SIZE, (1, P))  # what the initialisation draws
    model, base = with_prefix(family, seed=1), tiny(family)
    x = torch.randint(5, VOCAB_SIZE, (2, 9), generator=torch.Generator().manual_seed(0))
    q = x.shape[1]
    got = model(input_ids=x, attention_mask=torch.ones_like(x),
                position_ids=torch.arange(q).expand(2, q)).logits
    full = torch.cat([tokens.expand(2, P), x], dim=1)
    # Same positions as the prefix pass: the random tokens at 0..P-1, the real tokens again from 0.
    positions = torch.cat([torch.arange(P), torch.arange(q)]).expand(2, P + q)
    ref = base(input_ids=full, attention_mask=torch.ones_like(full), position_ids=positions).logits[:, P:]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["opt", "llama", "roberta"])
def test_padding_does_not_change_real_tokens(family):
    model = with_prefix(family)
    x = torch.randint(5, VOCAB_SIZE, (1, 8), generator=torch.Generator().manual_seed(0))
    pad = torch.full((1, 3), PAD)
    if family == "roberta":  # right padding, RoBERTa's convention
        ids, mask, real = torch.cat([x, pad], 1), torch.cat([torch.ones(1, 8), torch.zeros(1, 3)], 1).long(), slice(0, 8)
    else:
        ids, mask, real = torch.cat([pad, x], 1), torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], 1).long(), slice(3, 11)
    alone = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    padded = model(input_ids=ids, attention_mask=mask).logits[:, real]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def test_roberta_attention_with_prefix_matches_a_hand_computation():
    model = with_prefix("roberta")
    attn = model.roberta.encoder.layer[0].attention.self
    seen = {}
    handle = attn.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(h=args[0] if args else kwargs["hidden_states"], out=out[0]),
        with_kwargs=True)
    x = torch.randint(5, VOCAB_SIZE, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(x)
    mask[1, -2:] = 0
    model(input_ids=x, attention_mask=mask)
    handle.remove()
    h, heads = seen["h"], model.config.num_attention_heads
    b, t, d = h.shape
    hd = d // heads

    def split(z):  # (b, T, d) -> (b, heads, T, hd)
        return z.view(b, -1, heads, hd).transpose(1, 2)

    pk = model.prefix_kv.keys[0].expand(b, P, d)
    pv = model.prefix_kv.values[0].expand(b, P, d)
    q = split(attn.query(h))
    k = split(torch.cat([pk, attn.key(h)], 1))
    v = split(torch.cat([pv, attn.value(h)], 1))
    visible = torch.cat([torch.ones(b, P), mask.float()], 1)  # every query sees the prefix
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + (1 - visible)[:, None, None, :] * -1e9
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    torch.testing.assert_close(seen["out"], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_generation_with_the_prefix_matches_a_no_cache_loop(family):
    def plain():  # without the test's scaled label rows, which would dominate greedy decoding
        return build_tiny_model(family, "causal", ARCH, seed=0).eval()

    model = plain()
    torch.manual_seed(1)
    apply_method(model, MethodConfig(name="prefix", num_prefix=P), family)
    x = torch.randint(5, VOCAB_SIZE, (1, 6), generator=torch.Generator().manual_seed(0))
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False,
                         pad_token_id=PAD, output_logits=True, return_dict_in_generate=True)
    seq, steps = x, []
    for _ in range(5):
        logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits[:, -1]
        steps.append(logits)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert out.sequences.tolist() == seq.tolist()
    for cached, full in zip(out.logits, steps):  # every cached step saw the prefix and right positions
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    base = plain()(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1]
    assert (base - steps[0]).abs().max() > 1e-2  # the prefix matters
