"""Tiny offline models: real transformers architectures with random weights and a tokenizer
built in code, so tests and the demo never touch the network.

The tokenizer is a byte-level BPE (like OPT's and RoBERTa's) trained in milliseconds on a small
built-in corpus. Every label word of the paper's tasks is in the corpus often enough to become a
single token with a leading space, so prompts render exactly as they would for the real models
and masked-LM label words pass the single-token check.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
)

from zoft.errors import ZoftUserError

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import TinyArchConfig

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BOS, PAD, EOS, UNK, MASK = range(5)
VOCAB_SIZE = 1024

# Label words of every task in the MeZO paper (OPT and LM-BFF), and the words of the templates.
LABEL_WORDS = (
    "terrible great bad okay good subjective objective incorrect correct Description Entity "
    "Expression Human Location Number Yes No Maybe true false"
).split()
TEMPLATE_TEXT = (
    "It was This is Does this mean that is true? Yes or No? Suppose Can we infer that Yes, No, or "
    "Maybe? Question: Answer: Title: Context: Passage: I found this answer Is that correct? "
    "Does the word have the same meaning in these two sentences? In the previous sentence, does "
    "the pronoun refer to so because the movie film story acting plot was is really quite very "
    "not a an and of to in it that what who where when which how many"
)
# Words of zoft's synthetic demo task (zoft.tasks.demo).
DEMO_WORDS = (
    "wonderful excellent fantastic lovely brilliant superb delightful charming awful horrible "
    "dreadful poor boring ugly dull tedious movie film show story acting plot music cast ending "
    "script director seemed felt looked sounded honestly frankly overall"
).split()


def _training_corpus() -> list[str]:
    words = LABEL_WORDS + DEMO_WORDS + TEMPLATE_TEXT.split()
    # Repeat each word with a leading space so " word" becomes one merged token.
    lines = [" ".join(words) for _ in range(40)]
    lines += [TEMPLATE_TEXT] * 20
    lines += [w.capitalize() + " " + w for w in words] * 5
    return lines


@functools.lru_cache(maxsize=None)
def _tokenizer_json(add_bos: bool, add_eos: bool) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer)
    single = ("<s> " if add_bos else "") + "$A" + (" </s>" if add_eos else "")
    pair = ("<s> " if add_bos else "") + "$A </s> </s> $B:1" + (" </s>:1" if add_eos else "")
    tok.post_processor = processors.TemplateProcessing(
        single=single,
        pair=pair,
        special_tokens=[("<s>", BOS), ("</s>", EOS)],
    )
    return tok.to_str()


def build_tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the special-token layout of the family.

    Causal families prepend BOS (like OPT/LLaMA); masked families wrap in ``<s> ... </s>``.
    """
    masked = family in ("roberta", "bert")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(True, masked)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=512,
    )
    return tok


# (family, kind) -> the transformers class of a tiny model.
TINY_CLASSES = {
    ("opt", "causal"): OPTForCausalLM,
    ("llama", "causal"): LlamaForCausalLM,
    ("roberta", "masked"): RobertaForMaskedLM,
    ("roberta", "seq-cls"): RobertaForSequenceClassification,
    ("bert", "masked"): BertForMaskedLM,
    ("bert", "seq-cls"): BertForSequenceClassification,
    # The bare encoder (hidden states only): the similarity objective's sentence encoder.
    ("bert", "encoder"): BertModel,
    ("roberta", "encoder"): RobertaModel,
}


def tiny_config(family: str, arch: TinyArchConfig, num_labels: int = 2):
    """The transformers config of a tiny ``family`` model (no dropout: the tests compare runs)."""
    common = dict(vocab_size=VOCAB_SIZE, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                  hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                  num_attention_heads=arch.num_heads)
    if family == "opt":
        return OPTConfig(ffn_dim=arch.ffn_dim, max_position_embeddings=arch.max_positions,
                         word_embed_proj_dim=arch.hidden_size, dropout=0.0, attention_dropout=0.0, **common)
    if family == "llama":
        return LlamaConfig(num_key_value_heads=arch.num_heads, intermediate_size=arch.ffn_dim,
                           max_position_embeddings=arch.max_positions, tie_word_embeddings=False, **common)
    encoder = dict(intermediate_size=arch.ffn_dim, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                   num_labels=num_labels, **common)
    if family == "roberta":
        return RobertaConfig(max_position_embeddings=arch.max_positions + 2, **encoder)
    # BERT layout (two segment embeddings, a pooler on [CLS] that feeds the classifier), the
    # architecture of the MiniLM sentence encoder; same tokenizer as tiny RoBERTa.
    return BertConfig(max_position_embeddings=arch.max_positions, type_vocab_size=2, **encoder)


class TinyModelError(ZoftUserError, ValueError):
    """No tiny architecture exists for the requested family and kind."""


def build_tiny_model(family: str, kind: str, arch: TinyArchConfig, seed: int, num_labels: int = 2) -> PreTrainedModel:
    """Randomly initialise a small model of the given family; ``seed`` fixes the weights;
    ``num_labels`` sizes a seq-cls head."""
    cls = TINY_CLASSES.get((family, kind))
    if cls is None:
        raise TinyModelError(f"model.path is null, so a tiny model is built in code, but there is none for "
                             f"family={family!r} kind={kind!r} (valid: "
                             + ", ".join(f"{f}/{k}" for f, k in TINY_CLASSES)
                             + "); set model.path=<Hub id or folder>, e.g. model=hf-causal model.path=Qwen/Qwen3-0.6B")
    config = tiny_config(family, arch, num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)
