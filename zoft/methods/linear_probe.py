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

``method.lp_then=<optimizer>`` keeps training afterwards with every parameter trainable (the
paper's LP-MeZO with ``optimizer=mezo``); otherwise the fit is the whole of training.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Sequence

import numpy as np
import torch

from zoft.config.schema import MethodConfig
from zoft.methods.common import MethodError, Named, freeze_all, head_of, trainable, untie_head
from zoft.methods.registry import CLOSED_FORM_FITS, ClosedFormFit, register_method
from zoft.methods.seqcls import classifier_linear, is_seq_cls

log = logging.getLogger(__name__)


def probed_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The Linear whose rows the probe overwrites: the vocabulary projection, or for a sequence
    classifier the last Linear of its task head."""
    return classifier_linear(model) if is_seq_cls(model) else head_of(model)


class _HeadInput:
    """Context manager that records the input of the probed Linear (see :func:`probed_layer`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.head = probed_layer(model)
        self.captured: list[torch.Tensor] = []

    def __enter__(self) -> "_HeadInput":
        self.handle = self.head.register_forward_pre_hook(
            lambda module, args: self.captured.append(args[0].detach().float()))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()  # one hook per fit, removed afterwards (the original leaked one per batch)


@torch.inference_mode()
def masked_features(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    mask_positions: torch.Tensor) -> torch.Tensor:
    """Head inputs at one position per row (the mask token of a prompt): (rows, hidden)."""
    with _HeadInput(model) as rec:
        model(input_ids=input_ids, attention_mask=attention_mask)
    states = rec.captured[-1]  # (rows, T, hidden)
    return states[torch.arange(states.shape[0], device=states.device), mask_positions]


@torch.inference_mode()
def head_input_features(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The probed Linear's input for one batch of a sequence classifier: (rows, hidden)."""
    with _HeadInput(model) as rec:
        model(**inputs)
    states = rec.captured[-1]
    # Every transformers classifier head reads one vector per row; guard against a layout change.
    if states.dim() != 2:
        raise MethodError(f"the classification head of {type(model).__name__} reads a {tuple(states.shape)} "
                          "tensor; linear probing expects one feature vector per example")
    return states


@torch.inference_mode()
def causal_option_features(model: torch.nn.Module, items: Sequence[Any], pad_id: int, device,
                           batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Head inputs at the positions that predict each gold option token, and those token ids.

    ``items`` are prepared examples of the candidate objective (``.train_enc``).
    """
    from zoft.objectives.causal import collate, option_logprobs

    feats, targets = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = collate([it.train_enc for it in chunk], pad_id, only_gold=True).to(device)
        with _HeadInput(model) as rec:
            option_logprobs(model, batch)
        k = batch.option_mask.shape[1]
        states = rec.captured[-1][:, -(k + 1):-1]  # (rows, K, hidden): positions predicting the last K tokens
        feats.append(states[batch.option_mask].cpu())
        targets.append(batch.input_ids[:, -k:][batch.option_mask].cpu())
    return torch.cat(feats), torch.cat(targets)


def probe_data(model: torch.nn.Module, objective: Any, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, target token ids) for the objective's training items."""
    if hasattr(objective, "probe_data"):  # objectives may provide their own (e.g. masked LM prompts)
        return objective.probe_data(model, items)
    if items and hasattr(items[0], "train_enc"):
        return causal_option_features(model, items, objective.tokenizer.pad_token_id, objective.device)
    raise MethodError(
        f"method.name=linear-probe cannot extract features for objective {type(objective).__name__}; "
        "it needs the candidate objective (causal LMs) or an objective with probe_data()"
    )


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


def pre_training_fit(loaded, objective, train_items, cfg: MethodConfig) -> dict[str, Any]:
    """The run's hook: extract features, fit, write back; returns the fit's report."""
    was_training = loaded.model.training
    loaded.model.eval()
    features, targets = probe_data(loaded.model, objective, train_items)
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
    if cfg.lp_then:
        for p in model.parameters():
            p.requires_grad_(True)
        return trainable(model)
    freeze_all(model)
    head = probed_layer(model)
    for p in (head.weight, head.bias):
        if p is not None:
            p.requires_grad_(True)
    return trainable(model)


CLOSED_FORM_FITS["linear-probe"] = ClosedFormFit(pre_training_fit, trains_after=lambda cfg: bool(cfg.lp_then))
