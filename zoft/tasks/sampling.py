"""The OPT sampling protocol (the original's large_models/run.py ``sample_subset``/``train_set_seed``), with a private RNG so sampling never disturbs any
global random stream."""

from __future__ import annotations

import logging
from typing import Sequence, TypeVar

import numpy as np

from zoft.errors import ZoftUserError

T = TypeVar("T")


class SamplingError(ZoftUserError, ValueError):
    """The requested sample does not fit the data."""


log = logging.getLogger(__name__)


def sample_subset(items: Sequence[T], seed: int, num: int) -> list[T]:
    """The first ``num`` items of a seeded permutation, in permuted order.

    Identical to the original's ``np.random.seed(seed); np.random.permutation(len(items))[:num]``
    (the legacy MT19937 stream), but through a private ``RandomState``.
    """
    order = np.random.RandomState(seed).permutation(len(items))
    return [items[i] for i in order[:num]]


def split_train_dev(items: Sequence[T], seed: int, num_train: int, num_dev: int) -> tuple[list[T], list[T]]:
    """Sample ``num_train + num_dev`` together; dev is the last ``num_dev`` of the sample.

    ``num_train`` beyond the split size is an error. When only train + dev together do not fit,
    the whole split is used: dev keeps its size and train gets the rest (the original's
    behaviour; e.g. WSC: 554 -> 54 train + 500 dev), and a warning says so.
    """
    if num_train > len(items):
        raise SamplingError(
            f"task.num_train={num_train} is larger than the training data ({len(items)} examples); "
            f"use task.num_train<={len(items)}"
        )
    wanted = num_train + num_dev
    picked = sample_subset(items, seed, wanted)
    if len(picked) < wanted:
        log.warning(
            "asked for %d train + %d dev but the train split has only %d examples; "
            "using %d train + %d dev", num_train, num_dev, len(items), max(len(picked) - num_dev, 0),
            min(num_dev, len(picked)),
        )
    dev = picked[len(picked) - num_dev:] if num_dev else []
    train = picked[: len(picked) - len(dev)]
    return train, dev


def demo_sets(pool: Sequence[T], seed: int, count: int, num_demos: int) -> list[list[T]]:
    """One demonstration set per evaluation example, as the original's ICL mode: under ``seed``
    draw ``randint(0, 10000, count)``; set i is ``sample_subset(pool, seed_i, num_demos)``
    (not class-balanced; the whole pool, shuffled, when ``num_demos`` exceeds it)."""
    if num_demos <= 0:
        return [[] for _ in range(count)]
    seeds = np.random.RandomState(seed).randint(0, 10000, count)
    return [sample_subset(pool, int(s), num_demos) for s in seeds]
