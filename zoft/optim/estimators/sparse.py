"""Sparse MeZO (S-MeZO; Liu et al., NeurIPS 2025, "Sparse MeZO: Less Parameters for Better
Performance in Zeroth-Order LLM Fine-Tuning"): perturb and update only the small-magnitude
weights.

For every weight matrix (tensors with 2+ dimensions) a threshold t is recomputed each step so that
a fraction ``1 - sparsity`` of its entries satisfy |w| <= t; the mask is m = 1[|w| <= t]
(1-D tensors, biases and norms, stay dense: m = 1). With z Gaussian::

    g     = (L(theta + eps m*z) - L(theta - eps m*z)) / (2 eps)
    theta <- theta - lr * (g * m*z + weight_decay * theta)

The mask is never stored: it is recomputed from the weights, chunk by chunk, in every pass. That
needs the weights unmoved while they are perturbed, so S-MeZO always uses the exact shadow
perturbation (needs the model; the restore is exact, also in fp32). Memory: inference plus one
|w| copy of the largest tensor while thresholds are computed. Replayable (the masks are a
function of the weights).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from zoft.optim.estimators.chunks import TransformedSampler
from zoft.optim.mezo import MeZO


class _Masked(TransformedSampler):
    """Direction m * z with m = 1[|x| <= threshold[index]] (no threshold: dense)."""

    uses_weights = True

    def __init__(self, base) -> None:
        super().__init__(base)
        self.thresholds: dict[int, float] = {}

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self.thresholds.get(index)
        if t is None:
            return z
        return z * (x.abs() <= t).to(z.dtype)


def magnitude_threshold(p: torch.Tensor, keep: float) -> float:
    """The smallest t with at least ``keep`` of the entries of p satisfying |p| <= t."""
    k = max(1, math.ceil(keep * p.numel()))
    return float(p.detach().abs().reshape(-1).float().kthvalue(k).values)


class SparseMeZO(MeZO):
    """MeZO on the small-magnitude weights (``optimizer=sparse-mezo``); needs ``model``.

    Args (besides :class:`zoft.optim.MeZO`'s): sparsity: the fraction of each weight matrix
    left unperturbed (the largest |w|), in [0, 1).
    """

    def __init__(self, params: Iterable, sparsity: float = 0.75, model: Optional[torch.nn.Module] = None,
                 perturbation: str = "shadow", **kwargs) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"Sparse MeZO sparsity={sparsity} must be in [0, 1)")
        if perturbation != "shadow" and perturbation != "auto":
            raise ValueError("Sparse MeZO recomputes its mask from unmoved weights: it always uses "
                             "perturbation='shadow'")
        if model is None:
            raise ValueError("Sparse MeZO perturbs through forward hooks and needs the model: "
                             "SparseMeZO(params, model=model, ...)")
        super().__init__(params, model=model, perturbation="shadow", **kwargs)
        self.sparsity = float(sparsity)
        self.use_sampler(_Masked(self.sampler))

    def describe(self) -> dict:
        return {**super().describe(), "rule": "sparse", "sparsity": self.sparsity}

    def _set_thresholds(self) -> None:
        keep = 1.0 - self.sparsity
        self.sampler.thresholds = {i: magnitude_threshold(p, keep) for _, i, p in self._params()
                                   if p.dim() >= 2 and self.sparsity > 0.0}

    def mask_of(self, index: int) -> torch.Tensor:
        """The current mask of tensor ``index`` (bool, parameter-sized; for tests/analysis)."""
        p = self._params()[index][2]
        t = self.sampler.thresholds.get(index)
        return torch.ones_like(p, dtype=torch.bool) if t is None else p.detach().abs() <= t

    def _begin_step(self) -> None:
        self._set_thresholds()  # from the weights the step starts from
