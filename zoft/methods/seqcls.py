"""The task head of sequence-classification models (``model.kind=seq-cls``).

A Hugging Face ``*ForSequenceClassification`` model ends in a small head that maps the pooled
first-token state to one logit per class: BERT's ``classifier`` (one Linear on the pooler's
output), RoBERTa's ``classifier`` (dense + tanh + ``out_proj``), OPT/LLaMA's ``score``. That head
is freshly initialised for every task, so the methods that freeze the body must still train it:

* ``head``: the classification head alone (there is no vocabulary projection to tune);
* ``lora`` / ``prefix``: the adapters plus the head, as peft's ``SEQ_CLS`` task type does with
  ``modules_to_save``;
* ``linear-probe``: a closed-form fit of the head's last Linear on the features it reads.
"""

from __future__ import annotations

import torch

from zoft.methods.common import MethodError

# Attribute names of the task head in transformers' sequence-classification classes.
HEAD_ATTRS = ("classifier", "score")


def is_seq_cls(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a sequence classifier (a task head instead of a vocabulary head)."""
    return type(model).__name__.endswith("ForSequenceClassification")


def classification_head(model: torch.nn.Module) -> torch.nn.Module:
    """The task head module of a sequence classifier (``classifier`` or ``score``)."""
    for attr in HEAD_ATTRS:
        head = getattr(model, attr, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise MethodError(f"{type(model).__name__} has no classification head (looked for {', '.join(HEAD_ATTRS)})")


def head_prefix(model: torch.nn.Module) -> str:
    """The parameter-name prefix of the task head, e.g. ``classifier.``."""
    head = classification_head(model)
    for name, module in model.named_modules():
        if module is head:
            return name + "."
    raise MethodError(f"the classification head of {type(model).__name__} is not a submodule")


def classifier_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The head's last Linear, whose rows are the classes (BERT: ``classifier``; RoBERTa:
    ``classifier.out_proj``). Linear probing fits and overwrites this layer."""
    head = classification_head(model)
    if isinstance(head, torch.nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise MethodError(f"the classification head of {type(model).__name__} has no Linear layer")
    # Module registration order is forward order in every transformers head (dense, then out_proj).
    return linears[-1]


def unfreeze_head(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Make every parameter of the task head trainable; returns them."""
    params = list(classification_head(model).parameters())
    for p in params:
        p.requires_grad_(True)
    return params
