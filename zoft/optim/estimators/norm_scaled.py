"""The MeZO paper's Appendix B variants (the original's medium_models/src/trainer.py,
``--zo_variant``, ``--zo_by_layer``, ``--use_zo_grad_est``, ``--recompute_norms``,
``--change_grad_estimate``, ``--scale_norm_by_num_params``, ``--norm_running_update``):
per-layer scales c_l that reshape the perturbation and the estimate.

The trainable tensors fall into groups by name, as in the original: the embeddings (names with
``embed``), ``lm_head``, and each transformer layer (``layers.{i}.`` for OPT/LLaMA,
``layer.{i}.`` for RoBERTa/BERT); anything else (final norm, classifier) is group ``other``
with c = 1. Per group, c_l is

* ``param_norm``: the norm of the group's weights, sqrt(sum ||w||^2) (divided by
  sqrt(#weights) with ``scale_by_num_params``);
* ``grad_norm``: |(L(theta + eps z_l) - L(theta - eps z_l)) / (2 eps)| with z_l a direction
  on the group alone (the original's ``--use_zo_grad_est``; 2 forward passes per group);

computed at the first step and again every ``recompute_every`` steps (the original's
``--recompute_norms``: at each epoch start). c = 0 is taken as 1. With z Gaussian::

    g     = (L(theta + eps z/c) - L(theta - eps z/c)) / (2 eps)        (z/c: z_l / c_l per group)
    theta <- theta - lr * (g * z*c + weight_decay * theta)              (variance-modified)
    theta <- theta - lr * (g * z   + weight_decay * theta)              (change_grad_estimate)

``by_layer`` estimates each group on its own (2 forward passes per group and direction, the
other groups unperturbed), and with ``running_update`` (``grad_norm`` only) sets c_l to the
group's new |g| after each step.

Differences from the original, on purpose (its bugs, fixed):

* ``scale_norm_by_num_params`` with ``param_norm`` divides by sqrt(#weights), as its help says;
  the original divides the norm by its own square root;
* ``by_layer`` also perturbs and updates the ``other`` group; the original skips the tensors
  outside the named groups, so they never train;
* the plain (not by-layer) path applies z*c unless ``change_grad_estimate``, in both of the
  original's code paths; its path without the trainer optimizer always applied z;
* c = 0 (an untouched group) is 1 in every path; the original divides by it outside
  ``by_layer``;
* the gradient-norm variant by backpropagation (the original's debugging path) is not offered:
  zoft's loop never builds a graph.

Memory: inference (no parameter-sized state; one scalar per group). Replayable: ``param_norm``
recomputes c from the replayed weights; ``grad_norm`` records its c_l with every step.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Optional, Sequence

import torch

from zoft.optim.directions import Job, Term
from zoft.optim.estimators.chunks import TransformedSampler
from zoft.optim.mezo import MeZO, _f32
from zoft.optim.spec import Capabilities, Setting

_LAYER = re.compile(r"(?:^|\.)(layers?)\.(\d+)\.")
# Directions k >= this estimate the grad-norm scales (one per group), apart from the step's own.
_ESTIMATE_K = 1 << 20


def norm_group(name: str) -> str:
    """The group of a parameter name, in the original's order: ``embed``, ``lm_head``, the
    layer (``layers.3.``), else ``other``."""
    if "embed" in name:
        return "embed"
    if "lm_head" in name:
        return "lm_head"
    m = _LAYER.search(name)
    return f"{m.group(1)}.{m.group(2)}." if m else "other"


def _group_order(key: str) -> tuple:
    m = _LAYER.search("." + key)
    rank = {"embed": 0, "lm_head": 1}.get(key, 3 if key == "other" else 2)
    return rank, int(m.group(2)) if m else 0


class _GroupScaled(TransformedSampler):
    """Directions s(index, k) * z: a scalar per tensor and direction, folded into each term's
    coefficient, so the base sampler draws and applies z exactly as MeZO's."""

    def __init__(self, base, scale: Callable[[int, int], float]) -> None:
        super().__init__(base)
        self.scale = scale

    def transform(self, index: int, c: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("_GroupScaled scales coefficients in apply()")

    def apply(self, jobs: Sequence[Job]) -> None:
        self.base.apply([Job(dst, src, index, beta, tuple(Term(t.step, t.k, t.alpha * self.scale(index, t.k))
                                                          for t in terms))
                         for dst, src, index, beta, terms in jobs])


class NormScaledZO(MeZO):
    """MeZO with per-layer perturbation scales (``optimizer=mezo-norm``); needs ``model``
    (the groups come from the parameter names).

    Args (besides :class:`zoft.optim.MeZO`'s): variant: ``param_norm`` or ``grad_norm``;
    by_layer: estimate each group separately; recompute_every: steps between recomputations of
    c (0: only at the first step); change_grad_estimate: update along z instead of z*c;
    scale_by_num_params: divide each weight norm by sqrt(#weights); running_update
    (``grad_norm`` with ``by_layer``): c_l <- |g_l| after every step.
    """

    # accumulates=False: the scales are estimated inside the step.
    capabilities = Capabilities(summary="the MeZO paper's Appendix B variants: per-layer scales (parameter or "
                                "gradient norm) of the perturbation and the estimate", zeroth_order=True,
                                accumulates=False, forward_passes="2n per group with zo_by_layer (+2 per group at "
                                "grad-norm estimates)")
    settings = {
        "zo_variant": Setting("str", ("param_norm", "grad_norm"), "what the per-layer scale c is", arg="variant"),
        "zo_by_layer": Setting("bool", "", "estimate each layer group on its own", arg="by_layer"),
        "recompute_norms": Setting("int", ">=0", "steps between recomputations of the layer scales (0: once)",
                                   arg="recompute_every"),
        "change_grad_estimate": Setting("bool", "", "update along z instead of z*c"),
        "scale_norm_by_num_params": Setting("bool", "", "c = ||w_l|| / sqrt(#weights of l)", arg="scale_by_num_params"),
        "norm_running_update": Setting("bool", "", "grad_norm with zo_by_layer: c_l <- |g_l| after every step",
                                       arg="running_update"),
    }

    def __init__(self, params: Iterable, variant: str = "param_norm", by_layer: bool = False,
                 recompute_every: int = 0, change_grad_estimate: bool = False, scale_by_num_params: bool = False,
                 running_update: bool = False, model: Optional[torch.nn.Module] = None, **kwargs) -> None:
        _check_norm_arguments(variant, recompute_every, running_update, by_layer, model)
        super().__init__(params, model=model, **kwargs)
        self.variant, self.by_layer, self.recompute_every = variant, bool(by_layer), int(recompute_every)
        self.change_grad_estimate, self.scale_by_num_params = bool(change_grad_estimate), bool(scale_by_num_params)
        self.running_update = bool(running_update)
        names = {id(p): name for name, p in model.named_parameters()}  # a tied tensor: its first name
        self.group_of = [norm_group(names.get(id(p), "")) for _, _, p in self._params()]
        self.groups = sorted(set(self.group_of), key=_group_order)
        self.norms = {g: 1.0 for g in self.groups}  # c_l, float32 values
        self.norms_step: Optional[int] = None  # the step the norms were last computed at
        self._step_norms = dict(self.norms)  # the c_l this step perturbs and updates with
        self._recorded_norms: Optional[list[float]] = None  # replay: this step's recorded c_l
        self._forward_passes = 2 * self._directions()
        self.use_sampler(_GroupScaled(self.sampler, self._scale))

    # -- what a step costs and records ---------------------------------------------------------
    def _directions(self) -> int:
        return self.n_directions * (len(self.groups) if self.by_layer else 1)

    @property
    def forward_passes_per_step(self) -> int:
        """2 per direction (and per group with ``by_layer``), plus 2 per group at the steps that
        estimate the grad-norm scales."""
        return self._forward_passes

    @property
    def record_width(self) -> int:
        return self.scalars_per_step()

    def scalars_per_step(self) -> int:
        """g per direction, then (``grad_norm``) the step's c per group."""
        return self._directions() + (len(self.groups) if self.variant == "grad_norm" else 0)

    def projected_grads_of(self, scalars: Sequence[float]) -> list[float]:
        return list(scalars[:self._directions()])

    def describe(self) -> dict:
        return {**super().describe(), "rule": "norm-scaled", "variant": self.variant, "by_layer": self.by_layer,
                "recompute_every": self.recompute_every, "change_grad_estimate": self.change_grad_estimate,
                "scale_by_num_params": self.scale_by_num_params, "running_update": self.running_update,
                "groups": self.groups}

    # -- the scales ----------------------------------------------------------------------------
    def _scale(self, index: int, k: int) -> float:
        """Coefficient of z for tensor ``index`` along direction ``k``: 1/c of its group (0 off
        the probed group with ``by_layer``); the estimation directions are z on one group."""
        group = self.group_of[index]
        if k >= _ESTIMATE_K:
            return 1.0 if self.groups[k - _ESTIMATE_K] == group else 0.0
        if self.by_layer and self.groups[k // self.n_directions] != group:
            return 0.0
        return 1.0 / self._step_norms[group]

    def _update_scale(self, index: int) -> float:
        """Update along z*c (= c^2 times the perturbation z/c), or z with change_grad_estimate."""
        c = self._step_norms[self.group_of[index]]
        return c if self.change_grad_estimate else c * c

    def _norms_due(self, step: int) -> bool:
        return self.norms_step is None or (self.recompute_every > 0 and step - self.norms_step >= self.recompute_every)

    def param_norms(self) -> dict[str, float]:
        """c_l = ||w_l|| per group (float64 sums, rounded to float32; 0 -> 1; ``other``: 1)."""
        sums = {g: 0.0 for g in self.groups}
        counts = {g: 0 for g in self.groups}
        for (_, _, p), g in zip(self._params(), self.group_of):
            sums[g] += float(p.detach().double().pow(2).sum())
            counts[g] += p.numel()
        out = {}
        for g in self.groups:
            norm = math.sqrt(sums[g]) / (math.sqrt(counts[g]) if self.scale_by_num_params else 1.0)
            out[g] = 1.0 if g == "other" else _nonzero(norm)
        return out

    def _estimated_norms(self, closure: Callable, step: int) -> dict[str, float]:
        """c_l = |two-point projected gradient along z on group l alone| (2 passes per group)."""
        out = {"other": 1.0} if "other" in self.groups else {}
        for j, g in enumerate(self.groups):
            if g != "other":  # c = 1 there: no probe
                loss_pos, loss_neg = self._two_point(closure, step, _ESTIMATE_K + j)
                out[g] = _nonzero(abs(loss_pos - loss_neg) / (2 * self.eps))
        return {g: out[g] for g in self.groups}

    # -- the step ------------------------------------------------------------------------------
    def _probe(self, closure: Optional[Callable]) -> tuple[float, list[float]]:
        step, extra = self.step_count, 0
        if self._norms_due(step):
            if self.variant == "param_norm":
                self.norms = self.param_norms()
            else:  # replay (closure None) moves the weights through the same passes
                self.norms = self._estimated_norms(closure, step)
                extra = 2 * len([g for g in self.groups if g != "other"])
            self.norms_step = step
        if self.variant == "grad_norm" and closure is None:  # replay: the c_l the step used
            self.norms = dict(zip(self.groups, self._recorded_norms or []))
        self._step_norms = dict(self.norms)
        losses, grads = [], []
        for k in range(self._directions()):
            loss_pos, loss_neg = self._two_point(closure, step, k)
            grads.append(_f32((loss_pos - loss_neg) / (2 * self.eps)))
            losses.append(loss_pos)
        self._forward_passes = 2 * len(grads) + extra
        if self.running_update and closure is not None:
            # The original's running update: c_l <- |g_l| of the group's last sample (g_l is measured
            # along z_l / c_l, so this is |<grad_l, z_l>| / c_l, as the original computes it).
            for j, g in enumerate(self.groups):
                self.norms[g] = 1.0 if g == "other" else _nonzero(abs(grads[(j + 1) * self.n_directions - 1]))
        recorded = [self._step_norms[g] for g in self.groups] if self.variant == "grad_norm" else []
        return losses[0], grads + recorded

    def _descend(self, scalars: Sequence[float]) -> None:
        """theta <- (1 - lr wd) theta - lr/n sum_k g_k (z_k*c or z_k), the restore folded in."""
        grads = scalars[:self._directions()]
        self.weights.descend(self.step_count, grads, divisor=self.n_directions, scale=self._update_scale)

    @torch.no_grad()
    def replay(self, projected_grads: Sequence[float]) -> torch.Tensor:
        self._recorded_norms = [_f32(v) for v in projected_grads[self._directions():]]
        return super().replay(projected_grads)

    # -- state ---------------------------------------------------------------------------------
    def _zo_state(self) -> dict:
        return {**super()._zo_state(), "norms": dict(self.norms), "norms_step": self.norms_step}

    def _load_zo_state(self, zo: Optional[dict]) -> None:
        super()._load_zo_state(zo)
        if zo is not None and "norms" in zo:
            if sorted(zo["norms"]) != sorted(self.groups):
                raise ValueError(f"saved NormScaledZO state has the layer groups {sorted(zo['norms'])}; this model's "
                                 f"are {sorted(self.groups)}")
            self.norms, self.norms_step = dict(zo["norms"]), zo["norms_step"]


def _nonzero(c: float) -> float:
    """A scale as stored (float32); 0 (a group with no signal) and non-finite values -> 1."""
    c = _f32(c)
    return c if c > 0.0 and math.isfinite(c) else 1.0


def _check_norm_arguments(variant: str, recompute_every: int, running_update: bool, by_layer: bool,
                          model: Optional[torch.nn.Module]) -> None:
    variants = NormScaledZO.settings["zo_variant"].valid
    if variant not in variants:
        raise ValueError(f"NormScaledZO variant={variant!r}; valid: {', '.join(variants)}")
    if recompute_every < 0:
        raise ValueError(f"NormScaledZO recompute_every={recompute_every} must be >= 0 (0: only at the first step)")
    if running_update and not (by_layer and variant == "grad_norm"):
        raise ValueError(f"NormScaledZO running_update needs by_layer=True and variant='grad_norm' (got "
                         f"by_layer={by_layer}, variant={variant!r}): it re-estimates each group's scale from its probe")
    if model is None:
        raise ValueError("NormScaledZO groups the parameters by name and needs the model: "
                         "NormScaledZO(params, model=model, ...)")
