"""Linear probing (the original's large_models/run.py ``--linear_probing`` and
medium_models/src/linearhead_trainer.py): a closed-form fit of the LM head's label-word rows.

Features are the input of the final vocabulary projection (``lm_head`` / RoBERTa's
``lm_head.decoder``): at the option tokens of the gold answer for causal LMs (the target class is
the option token's id), at the mask position for masked LMs (the target is the gold label word's
id). scikit-learn's ``LogisticRegressionCV`` (lbfgs, L2, 10 Cs, 5-fold CV, multinomial: the
default, since the ``multi_class`` argument was removed from scikit-learn: a defect of the original's code on current scikit-learn) fits them, with an
intercept exactly when the head has a bias (RoBERTa yes, OPT/LLaMA no). The coefficients overwrite
the head rows of the classes (binary: -w/2 and +w/2), and the intercepts the bias entries.

Sequence classifiers (``model.kind=seq-cls``, the ``cls-head`` objective) have no vocabulary
head: the features are the input of the task head's last Linear (BERT: the pooler's output;
RoBERTa: ``tanh(dense(<s>))``), the targets the class indices, and the fit overwrites that Linear
(weight and bias), so the model then predicts exactly as the fitted classifier.

The ``similarity`` objective (an encoder without either head) is probed differently: a Linear
on the normalised pooled features, started at the label-text embeddings (the zero-shot
classifier) and fitted with an L2 pull toward that start (:mod:`zoft.methods.anchored_probe`),
so strong regularisation leaves the zero-shot head, never a zero head; ``lp_early_stopping`` does
not apply to it.

``method.lp_then=<optimizer>`` keeps training afterwards with every parameter trainable (the
paper's LP-MeZO with ``optimizer=mezo``); otherwise the fit is the whole of training.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoft.errors import MethodError
from zoft.methods.common import Named, freeze_all, trainable, untie_head
from zoft.methods.registry import CLOSED_FORM_FITS, ClosedFormFit, register_method
from zoft.methods.anchored_probe import fit_anchored_probe
from zoft.models.heads import has_similarity_head, is_seq_cls, probed_layer, similarity_head

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig

log = logging.getLogger(__name__)


def fit_logistic(features: np.ndarray, labels: np.ndarray, fit_intercept: bool, early_stopping: bool,
                 seed: int = 0):
    """sklearn LogisticRegressionCV with the original's settings (max_iter 5000, tol 1e-4; early
    stopping: 1000 / 1e-2)."""
    from sklearn.linear_model import LogisticRegressionCV

    max_iter, tol = (1000, 1e-2) if early_stopping else (5000, 1e-4)
    if len(np.unique(labels)) < 2:
        raise MethodError("linear probing needs at least two classes among the training targets")
    kwargs = dict(max_iter=max_iter, tol=tol, fit_intercept=fit_intercept, random_state=seed)
    # Pin the original's defaults explicitly where sklearn >= 1.8 announces changes (pure L2,
    # accuracy as the CV score, the current fitted attributes), which also silences its warnings.
    pinned = {"l1_ratios": (0.0,), "scoring": "accuracy", "use_legacy_attributes": True}
    accepted = inspect.signature(LogisticRegressionCV.__init__).parameters
    kwargs.update({k: v for k, v in pinned.items() if k in accepted})
    return LogisticRegressionCV(**kwargs).fit(features, labels)


@torch.no_grad()
def write_back(model: torch.nn.Module, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray | None) -> None:
    """Overwrite the head rows (and bias entries) of ``classes`` (token ids).

    sklearn's binary fit has one vector w (for classes[1]); rows become -w/2 and +w/2, which
    gives the same softmax over the two rows.
    """
    head = probed_layer(model)
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = None if intercept is None else np.concatenate([-intercept / 2, intercept / 2])
    rows = torch.as_tensor(classes, dtype=torch.long, device=head.weight.device)
    head.weight[rows] = torch.as_tensor(coef, dtype=head.weight.dtype, device=head.weight.device)
    if intercept is not None and head.bias is not None:
        head.bias[rows] = torch.as_tensor(intercept, dtype=head.bias.dtype, device=head.bias.device)


def linear_probe(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor,
                 early_stopping: bool = False, seed: int = 0) -> dict[str, Any]:
    """Fit the head rows of the target tokens (seq-cls: classes) on (features, targets) and write
    them back."""
    head = probed_layer(model)
    fit_intercept = head.bias is not None
    clf = fit_logistic(features.numpy(), targets.numpy(), fit_intercept, early_stopping, seed)
    intercept = clf.intercept_ if fit_intercept else None
    write_back(model, clf.classes_, clf.coef_, intercept)
    probs = clf.predict_proba(features.numpy())
    index = np.searchsorted(clf.classes_, targets.numpy())
    train_ce = float(-np.log(np.clip(probs[np.arange(len(index)), index], 1e-12, None)).mean())
    return {"classes": [int(c) for c in clf.classes_], "num_samples": int(len(targets)),
            "C": [float(c) for c in np.atleast_1d(clf.C_)][:1], "train_loss": train_ce}


@torch.no_grad()
def anchored_linear_probe(model: torch.nn.Module, objective, features: torch.Tensor, targets: torch.Tensor
                          ) -> dict[str, Any]:
    """The similarity objective's probe: anchored at the label-text head (its ``probe_start``),
    written into the model's probe Linear, which then replaces the label texts."""
    w0, b0 = objective.probe_start(model)
    fit = fit_anchored_probe(features, targets, w0, b0)
    head = similarity_head(model)
    probe = head.add_probe()
    probe.weight.copy_(fit.weight.to(probe.weight))
    probe.bias.copy_(fit.bias.to(probe.bias))
    head.fitted = True
    moved = float((fit.weight - w0.double().cpu()).norm() / w0.double().norm())
    return {"classes": sorted(int(c) for c in torch.unique(targets)), "num_samples": int(len(targets)),
            "anchor": "label texts", "lambda": fit.lam, "cv_accuracy": fit.cv_accuracy,
            "train_loss": fit.train_loss, "relative_change": moved}


def pre_training_fit(loaded, objective, train_items, cfg: MethodConfig) -> dict[str, Any]:
    """The run's hook: extract features, fit, write back; returns the fit's report."""
    was_training = loaded.model.training
    loaded.model.eval()
    features, targets = objective.features(loaded.model, train_items)  # the objective knows its head
    if has_similarity_head(loaded.model):
        out = anchored_linear_probe(loaded.model, objective, features, targets)
    else:
        out = linear_probe(loaded.model, features, targets, early_stopping=cfg.lp_early_stopping)
    loaded.model.train(was_training)
    log.info("linear probe: %d samples, classes %s, train loss %.4f", out["num_samples"], out["classes"], out["train_loss"])
    return out


@register_method("linear-probe")
def apply_linear_probe(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """The fit writes the head (untied first with ``untie_head``); with ``lp_then`` every
    parameter trains afterwards, else only the probed Linear counts as trainable."""
    if cfg.untie_head and is_seq_cls(model):
        raise MethodError(f"method.untie_head=true but {type(model).__name__} has no tied vocabulary head; "
                          "set it to false")
    if cfg.untie_head:
        untie_head(model)
    probed_layer(model)  # the similarity objective's probe Linear exists from here on
    if cfg.lp_then:
        for p in model.parameters():
            p.requires_grad_(True)
        if has_similarity_head(model):  # the fitted probe replaces the scale and bias
            for p in (similarity_head(model).scale, similarity_head(model).bias):
                p.requires_grad_(False)
        return trainable(model)
    freeze_all(model)
    head = probed_layer(model)
    for p in (head.weight, head.bias):
        if p is not None:
            p.requires_grad_(True)
    return trainable(model)


CLOSED_FORM_FITS["linear-probe"] = ClosedFormFit(pre_training_fit, trains_after=lambda cfg: bool(cfg.lp_then))
