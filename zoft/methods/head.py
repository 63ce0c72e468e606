"""Head tuning (paper Table 1's LP row for generation tasks; the original's large_models/run.py ``--head_tuning``): only the final vocabulary projection trains.

The body (embeddings and every transformer layer) runs under ``torch.no_grad``: no activation is
kept for backward, so a backprop step costs little more than inference. When the head is tied to
the input embedding (OPT, RoBERTa) the shared matrix trains, as in the original, unless
``method.untie_head=true`` gives the head its own copy first.

Sequence classifiers (``model.kind=seq-cls``) have no vocabulary projection: head tuning trains
their task head alone (BERT's ``classifier`` Linear, RoBERTa's ``classifier`` dense + out_proj),
with the body (pooler included) again run without a graph.

With the ``similarity`` objective (an encoder without either head) there is no projection to
tune: head tuning trains the :class:`~zoft.models.heads.SimilarityHead`, a scale on the cosine
logits and one bias per class (classes + 1 parameters), with the body (label texts included)
run without a graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import functools

import torch

from zoft.errors import MethodError
from zoft.methods.common import Named, freeze_all, trainable, untie_head
from zoft.models.heads import head_of
from zoft.methods.registry import register_method
from zoft.methods.seqcls import unfreeze_head
from zoft.models.heads import classification_head, has_similarity_head, is_seq_cls, similarity_head

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig


def run_body_without_graph(model: torch.nn.Module, head: torch.nn.Module | None = None) -> None:
    """Everything before the vocabulary projection runs with autograd off (idempotent).

    The model's forward runs with grad disabled; a pre-hook on the head switches grad back to the
    caller's mode for the projection alone. (Wrapping the body module is not enough: OPT's
    causal-LM forward calls ``model.decoder`` directly.) ``functools.wraps`` keeps the forward's
    signature visible to ``inspect``, which objectives use to pass ``position_ids``.
    ``head`` is the module whose forward gets the graph back (default: the vocabulary projection).
    """
    if getattr(model, "_zoft_no_grad_body", False):
        return
    forward = model.forward
    caller_grad = [True]

    @functools.wraps(forward)
    def forward_without_body_graph(*args, **kwargs):
        caller_grad[0] = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(False)
            return forward(*args, **kwargs)
        finally:
            torch.set_grad_enabled(caller_grad[0])

    def head_pre_hook(module, args):
        torch.set_grad_enabled(caller_grad[0])

    model.forward = forward_without_body_graph
    (head if head is not None else head_of(model)).register_forward_pre_hook(head_pre_hook)
    model._zoft_no_grad_body = True


def head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The vocabulary projection's weight (and bias, where it has one)."""
    head = head_of(model)
    return [p for p in (head.weight, head.bias) if p is not None]


@register_method("head")
def apply_head(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Freeze everything but the LM head (seq-cls: the task head); the body builds no graph."""
    freeze_all(model)
    if has_similarity_head(model):  # the similarity objective: its scale and per-class bias
        head = similarity_head(model)
        for p in (head.scale, head.bias):
            p.requires_grad_(True)
        run_body_without_graph(model, head)
        return trainable(model)
    if is_seq_cls(model):
        if cfg.untie_head:
            raise MethodError(f"method.untie_head=true but {type(model).__name__} has no tied vocabulary head; "
                              "set it to false (head tuning trains the classification head)")
        unfreeze_head(model)
        run_body_without_graph(model, classification_head(model))
        return trainable(model)
    if cfg.untie_head:
        untie_head(model)
    for p in head_parameters(model):
        p.requires_grad_(True)
    run_body_without_graph(model)
    return trainable(model)
