"""Sparse MeZO (S-MeZO; Liu et al., NeurIPS 2025, "Sparse MeZO: Less Parameters for Better
Performance in Zeroth-Order LLM Fine-Tuning"): perturb and update only the small-magnitude
weights.

Every weight matrix (tensors with 2+ dimensions) has a threshold t, the smallest value with a
fraction ``1 - sparsity`` of its entries satisfying |w| <= t; its mask is m = 1[|w| <= t] (1-D
tensors, biases and norms, stay dense: m = 1). With z Gaussian::

    g     = (L(theta + eps m*z) - L(theta - eps m*z)) / (2 eps)
    theta <- theta - lr * (g * m*z + weight_decay * theta)

When t is computed (``threshold_update``):

* ``fixed`` (the default): once, from the weights the optimizer is built on (the pretrained
  weights), then kept; the mask is recomputed from the current weights against these fixed
  thresholds. This is zoft's reading of the paper, whose memory-efficient implementation keeps
  one threshold per layer and forms the mask inside the forward pass (the authors' code could
  not be consulted; see docs/estimators.md).
* ``every_step``: recomputed as the quantile of the current weights at the start of every step,
  so exactly ``1 - sparsity`` of each matrix is perturbed at every step (zoft's rule before it
  followed the paper). Needed where a matrix starts at zero (LoRA's B): its fixed threshold
  would be 0 and it would stop training after one step.

The mask is never stored: it is recomputed from the weights, chunk by chunk, in every pass. That
needs the weights unmoved while they are perturbed, so S-MeZO always uses the exact shadow
perturbation (needs the model; the restore is exact, also in fp32). Memory: inference plus one
|w| copy of the largest tensor while thresholds are computed (once with ``fixed``). Replayable
(the masks are a function of the weights and the thresholds); fixed thresholds are saved in
``state_dict`` and written in the trajectory header, so resume and replay use the same ones.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from zoft.optim.estimators.chunks import TransformedSampler
from zoft.optim.mezo import MeZO
from zoft.optim.spec import Capabilities, Setting


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
    """The smallest t with at least ``keep`` of the entries of p satisfying |p| <= t (an entry of
    |p|, exact: fp16/bf16 are widened to float32, float64 is kept)."""
    k = max(1, math.ceil(keep * p.numel()))
    return float(p.detach().abs().reshape(-1).to(torch.promote_types(p.dtype, torch.float32)).kthvalue(k).values)


class SparseMeZO(MeZO):
    """MeZO on the small-magnitude weights (``optimizer=sparse-mezo``); needs ``model``.

    Args (besides :class:`zoft.optim.MeZO`'s): sparsity: the fraction of each weight matrix
    left unperturbed (the largest |w|), in [0, 1). threshold_update: ``fixed`` (thresholds from
    the weights given here, kept) or ``every_step`` (recomputed from the weights at every step).
    """

    capabilities = Capabilities(summary="Sparse MeZO: MeZO on the small-magnitude weights (thresholds fixed or "
                                "every step, mask recomputed per pass)", zeroth_order=True, batches_probes=True,
                                forward_passes="2n")
    settings = {
        "sparsity": Setting("float", "[0,1)", "the fraction of weights left unperturbed"),
        "threshold_update": Setting("str", ("fixed", "every_step"), "when the magnitude thresholds are computed: "
                                    "fixed (from the starting weights) or every_step"),
        "perturbation": Setting("str", ("shadow", "auto"), "how theta +- eps z is applied (Sparse MeZO recomputes "
                                "its mask from unmoved weights: always shadow)"),
    }

    def __init__(self, params: Iterable, sparsity: float = 0.75, threshold_update: str = "fixed",
                 model: Optional[torch.nn.Module] = None, perturbation: str = "shadow", **kwargs) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"Sparse MeZO sparsity={sparsity} must be in [0, 1)")
        valid = self.settings["threshold_update"].valid
        if threshold_update not in valid:
            raise ValueError(f"Sparse MeZO threshold_update={threshold_update!r}; valid: {', '.join(valid)}")
        if perturbation != "shadow" and perturbation != "auto":
            raise ValueError("Sparse MeZO recomputes its mask from unmoved weights: it always uses "
                             "perturbation='shadow'")
        if model is None:
            raise ValueError("Sparse MeZO perturbs through forward hooks and needs the model: "
                             "SparseMeZO(params, model=model, ...)")
        super().__init__(params, model=model, perturbation="shadow", **kwargs)
        self.sparsity = float(sparsity)
        self.threshold_update = threshold_update
        self.use_sampler(_Masked(self.sampler))
        if threshold_update == "fixed":
            self._set_thresholds()  # from the weights the optimizer starts from

    def describe(self) -> dict:
        described = {**super().describe(), "rule": "sparse", "sparsity": self.sparsity}
        if self.threshold_update == "fixed":  # a replay must use the same thresholds
            described.update(threshold_update="fixed", thresholds=self._saved_thresholds())
        return described  # every_step: the header of earlier zoft versions, whose rule it is

    def _set_thresholds(self) -> None:
        keep = 1.0 - self.sparsity
        self.sampler.thresholds = {i: magnitude_threshold(p, keep) for _, i, p in self._params()
                                   if p.dim() >= 2 and self.sparsity > 0.0}

    def thresholds(self) -> dict[int, float]:
        """The thresholds in use, by tensor index (matrices only; for tests/analysis)."""
        return dict(self.sampler.thresholds)

    def mask_of(self, index: int) -> torch.Tensor:
        """The current mask of tensor ``index`` (bool, parameter-sized; for tests/analysis)."""
        p = self._params()[index][2]
        t = self.sampler.thresholds.get(index)
        return torch.ones_like(p, dtype=torch.bool) if t is None else p.detach().abs() <= t

    def _begin_step(self) -> None:
        if self.threshold_update == "every_step":
            self._set_thresholds()  # from the weights the step starts from

    def _saved_thresholds(self) -> dict[str, float]:
        return {str(i): t for i, t in sorted(self.sampler.thresholds.items())}

    def _zo_state(self) -> dict:
        state = super()._zo_state()
        if self.threshold_update == "fixed":
            state["thresholds"] = self._saved_thresholds()  # python floats: torch does not cast them
        return state

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        super()._load_zo_state(zo)
        if zo is not None and self.threshold_update == "fixed" and "thresholds" in zo:
            self.sampler.thresholds = {int(i): float(t) for i, t in zo["thresholds"].items()}
