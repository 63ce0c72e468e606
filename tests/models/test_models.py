"""Tiny offline models and the model loader."""

from __future__ import annotations

import pytest
import torch

from zoft.config.schema import ModelConfig
from zoft.models.loader import ModelUnavailableError, load_model
from zoft.models.tiny import LABEL_WORDS, build_tiny_tokenizer


@pytest.mark.parametrize("family", ["opt", "llama", "roberta"])
def test_label_words_are_single_tokens(family):
    tok = build_tiny_tokenizer(family)
    for word in LABEL_WORDS:
        ids = tok.encode(" " + word, add_special_tokens=False)
        assert len(ids) == 1, (word, tok.convert_ids_to_tokens(ids))


def test_tokenizer_is_deterministic_and_round_trips():
    a, b = build_tiny_tokenizer("opt"), build_tiny_tokenizer("opt")
    text = "Does this mean that \"it rains\" is true? Yes or No?\nYes"
    assert a.encode(text) == b.encode(text)
    assert a.decode(a.encode(text), skip_special_tokens=True) == text


def test_causal_tokenizer_prepends_bos_and_masked_wraps():
    causal, masked = build_tiny_tokenizer("opt"), build_tiny_tokenizer("roberta")
    ids = causal.encode("great")
    assert ids[0] == causal.bos_token_id and ids[-1] != causal.eos_token_id
    ids = masked.encode("great")
    assert ids[0] == masked.cls_token_id and ids[-1] == masked.sep_token_id


@pytest.mark.parametrize("name,family,kind", [("tiny-opt", "opt", "causal"), ("tiny-llama", "llama", "causal"),
                                              ("tiny-roberta", "roberta", "masked")])
def test_tiny_models_forward_and_are_seeded(name, family, kind):
    cfg = ModelConfig(name=name, family=family, kind=kind, device="cpu")
    a, b = load_model(cfg), load_model(cfg)
    ids = a.tokenizer("the movie was great", return_tensors="pt")
    out = a.model(**ids).logits
    assert out.shape[-1] == a.model.config.vocab_size
    assert torch.equal(out, b.model(**ids).logits)  # same init_seed -> same weights
    other = load_model(ModelConfig(name=name, family=family, kind=kind, device="cpu", init_seed=1))
    assert not torch.equal(out, other.model(**ids).logits)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_is_applied(dtype):
    loaded = load_model(ModelConfig(name="tiny-opt", device="cpu", dtype=dtype))
    assert {p.dtype for p in loaded.model.parameters()} == {getattr(torch, dtype)}


def test_hub_model_offline_fails_fast_with_guidance():
    cfg = ModelConfig(name="opt-13b", path="facebook/opt-13b")
    with pytest.raises(ModelUnavailableError) as err:
        load_model(cfg)
    assert "model.path=" in str(err.value) and "facebook/opt-13b" in str(err.value)


def test_local_folder_round_trip(tmp_path):
    loaded = load_model(ModelConfig(name="tiny-opt", device="cpu"))
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_model(ModelConfig(name="local", path=str(tmp_path), device="cpu"))
    ids = loaded.tokenizer("a lovely film", return_tensors="pt")
    assert torch.allclose(loaded.model(**ids).logits, again.model(**ids).logits)


def test_local_folder_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_model(ModelConfig(name="local", path=str(tmp_path)))
