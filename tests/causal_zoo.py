"""Tiny Hugging Face causal LMs of the families real users bring (Qwen3, Mistral, Gemma), built in
code with transformers' own config classes and saved as a Hub-layout folder, each with a
tokenizer built in code that follows its family's rules for special tokens:

* Qwen: byte-level BPE (spaces are part of the next token, as OPT's) and no BOS token at all;
* Mistral (and Llama 2): SentencePiece-style BPE, spaces written ``▁`` and one ``▁`` in front of
  the text, ``<s>`` prepended;
* Gemma: SentencePiece-style BPE without the leading ``▁``, ``<bos>`` prepended.

The BPE is trained in milliseconds on zoft's tiny corpus (zoft.models.tiny), so the demo task's
label words are single tokens, as with the real tokenizers.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (GemmaConfig, GemmaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen3Config, Qwen3ForCausalLM)

from zoft.models.tiny import _training_corpus


@dataclass(frozen=True)
class TokenizerStyle:
    spaces: str  # "byte-level" | "metaspace" (▁ in front of the text too) | "metaspace-inner" (not in front)
    specials: tuple[str, ...]
    bos: Optional[str]
    eos: str
    pad: Optional[str]
    unk: Optional[str]


STYLES = {
    "qwen": TokenizerStyle("byte-level", ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), bos=None,
                           eos="<|endoftext|>", pad="<|endoftext|>", unk=None),
    "sentencepiece": TokenizerStyle("metaspace", ("<unk>", "<s>", "</s>"), bos="<s>", eos="</s>", pad=None,
                                    unk="<unk>"),
    "gemma": TokenizerStyle("metaspace-inner", ("<pad>", "<eos>", "<bos>", "<unk>"), bos="<bos>", eos="<eos>",
                            pad="<pad>", unk="<unk>"),
}
VOCAB = 1024


@functools.lru_cache(maxsize=None)
def _tokenizer_json(style_name: str) -> str:
    style = STYLES[style_name]
    if style.spaces == "byte-level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        scheme = "first" if style.spaces == "metaspace" else "never"
        tok = Tokenizer(models.BPE(unk_token=style.unk))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
        alphabet = sorted(set(string.printable) - set(" \t\r\x0b\x0c") | {"▁"})
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=list(style.specials), initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(_training_corpus(), trainer)
    if style.bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{style.bos} $A", pair=f"{style.bos} $A $B:1", special_tokens=[(style.bos, tok.token_to_id(style.bos))])
    return tok.to_str()


def build_tokenizer(style_name: str) -> PreTrainedTokenizerFast:
    style = STYLES[style_name]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(style_name)),
                                   bos_token=style.bos, eos_token=style.eos, pad_token=style.pad,
                                   unk_token=style.unk, model_max_length=2048)


# family -> (config class, model class, tokenizer style, architecture options of the real checkpoints)
ZOO = {
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, "qwen", dict(head_dim=8, tie_word_embeddings=True)),
    "mistral": (MistralConfig, MistralForCausalLM, "sentencepiece", dict(sliding_window=4096, tie_word_embeddings=False)),
    "gemma": (GemmaConfig, GemmaForCausalLM, "gemma", dict(head_dim=8, tie_word_embeddings=True)),
}


def build(family: str, seed: int = 0):
    """(model, tokenizer) of a tiny ``family`` model: 2 layers, hidden 32, 4 query and 2 key/value heads."""
    config_cls, model_cls, style, options = ZOO[family]
    tokenizer = build_tokenizer(style)
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **ids, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    return model, tokenizer


def save(family: str, folder: Path) -> Path:
    """Write a tiny ``family`` model and its tokenizer to ``folder`` as save_pretrained does."""
    model, tokenizer = build(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
