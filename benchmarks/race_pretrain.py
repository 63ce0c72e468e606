"""The pretrained start of the tiny zeroth-order race: a small OPT trained with AdamW in code, cached.

The successors of MeZO (LOZO, SubZero, HiZOO, Sparse MeZO, FZOO) argue from pretrained models,
whose fine-tuning landscape has a low effective rank; a randomly initialised model learning from
scratch tests none of that. This module pre-trains a small OPT (the architecture and the tokenizer
of ``zoft.models.tiny``) by causal language modelling on a corpus related to zoft's demo task:

- half of the demo's sentiment adjectives (the knowledge the fine-tuning can reuse) and other
  sentiment words, in sentences made of other nouns, verbs and openers than the demo's, and
- other label words (" good"/" bad") after the demo's prompt words ("It was"),

so the demo's own label words (" great"/" terrible") and half its adjectives are never seen: at the
start of the race the demo is not solved, yet much of the representation that solves it is there.

The result is a ``save_pretrained`` folder (model and tokenizer) under a content key: the hash of
:class:`PretrainConfig` and of this file's text, so a change to either trains a new one and the race
pays for pre-training once. It is loaded by runs with ``model.path=<folder>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from zoft.config.schema import TinyArchConfig
from zoft.models.tiny import build_tiny_model, build_tiny_tokenizer
from zoft.tasks.demo import NEGATIVE, POSITIVE

# Other words than the demo's (zoft.tasks.demo.NOUNS/VERBS/OPENERS); some are several BPE tokens.
PRETRAIN_NOUNS = ("director", "answer", "passage", "question", "sentence", "word", "book", "scene")
PRETRAIN_VERBS = ("is", "was", "really is", "was very", "is quite", "remained")
PRETRAIN_OPENERS = ("", "so ", "well ", "in short ")
PRETRAIN_LABELS = ("bad", "good")  # the demo's: terrible / great
# Sentiment words of pre-training: half of each of the demo's lists, and other words. The demo's
# other half is never seen, so fine-tuning has something to learn besides the label words.
SEEN = 3 * len(POSITIVE) // 4
PRETRAIN_ADJECTIVES = (NEGATIVE[:SEEN] + ("sad", "weak", "messy", "bland"),
                       POSITIVE[:SEEN] + ("nice", "fine", "pleasant", "sweet"))


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the pretrained weights (part of the cache key)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 128
    max_positions: int = 64
    init_seed: int = 0
    data_seed: int = 0
    sentences: int = 4000
    steps: int = 2500  # ~1 minute on one thread of a 2-core VM
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01

    def arch(self) -> TinyArchConfig:
        return TinyArchConfig(hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                              ffn_dim=self.ffn_dim, max_positions=self.max_positions)


def pretraining_corpus(n: int, seed: int) -> list[str]:
    """``n`` sentences "<opener>the <noun> <verb> <adjective> It was <good|bad>" (seeded)."""
    rng = np.random.RandomState(seed)
    lines = []
    for _ in range(n):
        label = int(rng.randint(2))
        words = PRETRAIN_ADJECTIVES[label]
        adjective = words[rng.randint(len(words))]
        lines.append(f"{PRETRAIN_OPENERS[rng.randint(len(PRETRAIN_OPENERS))]}the "
                     f"{PRETRAIN_NOUNS[rng.randint(len(PRETRAIN_NOUNS))]} "
                     f"{PRETRAIN_VERBS[rng.randint(len(PRETRAIN_VERBS))]} {adjective} It was {PRETRAIN_LABELS[label]}")
    return lines


def cache_key(cfg: PretrainConfig) -> str:
    """A hash of the configuration and of this module's code (and of the torch/transformers versions)."""
    import transformers

    text = json.dumps(asdict(cfg), sort_keys=True) + Path(__file__).read_text() + torch.__version__ \
        + transformers.__version__
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrain(cfg: PretrainConfig):
    """The model after ``cfg.steps`` AdamW steps of causal LM on :func:`pretraining_corpus` (one thread)."""
    tokenizer = build_tiny_tokenizer("opt")
    model = build_tiny_model("opt", "causal", cfg.arch(), seed=cfg.init_seed)
    corpus = pretraining_corpus(cfg.sentences, cfg.data_seed)
    encoded = tokenizer(corpus, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]  # (sentences, longest)
    labels = ids.masked_fill(mask == 0, -100)  # no loss on padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = torch.Generator().manual_seed(cfg.data_seed)
    model.train()
    for _ in range(cfg.steps):
        rows = torch.randint(len(corpus), (cfg.batch_size,), generator=order)
        loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer, float(loss.detach())


def pretrained_folder(cache_dir: Path, cfg: PretrainConfig = PretrainConfig(), log=print) -> Path:
    """The cached ``save_pretrained`` folder of ``cfg``'s model, trained first if it is not there.

    The folder is written under a temporary name and renamed when complete, so an interrupted run
    never leaves a half-written model under the key.
    """
    folder = cache_dir / f"tiny-opt-pretrained-{cache_key(cfg)}"
    if (folder / "pretrain.json").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        model, tokenizer, loss = pretrain(cfg)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    partial = cache_dir / f".{folder.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "pretrain.json").write_text(json.dumps({**asdict(cfg), "final_train_loss": loss,
                                                       "seconds": round(seconds, 1)}, indent=1) + "\n")
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same key first: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    log(f"pre-trained {folder.name}: {cfg.steps} AdamW steps in {seconds:.0f}s, final LM loss {loss:.3f}")
    return folder
