"""What the methods do with the task head of sequence-classification models
(``model.kind=seq-cls``; the head itself is found by :mod:`zoft.models.heads`).

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

from zoft.errors import MethodError
from zoft.models.heads import classification_head


def head_prefix(model: torch.nn.Module) -> str:
    """The parameter-name prefix of the task head, e.g. ``classifier.``."""
    head = classification_head(model)
    for name, module in model.named_modules():
        if module is head:
            return name + "."
    raise MethodError(f"the classification head of {type(model).__name__} is not a submodule")


def unfreeze_head(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Make every parameter of the task head trainable; returns them."""
    params = list(classification_head(model).parameters())
    for p in params:
        p.requires_grad_(True)
    return params
