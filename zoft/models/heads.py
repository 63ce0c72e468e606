"""The heads of a model, and the features they read.

A language model ends in a vocabulary projection (``lm_head``; RoBERTa: ``lm_head.decoder``); a
Hugging Face ``*ForSequenceClassification`` model ends in a small task head (BERT:
``classifier``, one Linear on the pooler's output; RoBERTa: ``classifier`` = dense + tanh +
``out_proj``; OPT/LLaMA: ``score``). Linear probing fits the last Linear of whichever head the
model has, on that Linear's input, which :class:`HeadInput` records during a forward pass.
"""

from __future__ import annotations

import torch

from zoft.errors import MethodError

# Attribute names of the task head in transformers' sequence-classification classes.
HEAD_ATTRS = ("classifier", "score")


def head_of(model: torch.nn.Module) -> torch.nn.Linear:
    """The final vocabulary projection (``lm_head`` / RoBERTa's ``lm_head.decoder``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        raise MethodError(f"{type(model).__name__} has no linear vocabulary projection (get_output_embeddings)")
    return head


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


# The similarity objective's head on an encoder (zoft.objectives.similarity).
SIMILARITY_HEAD_ATTR = "zoft_similarity"


class SimilarityHead(torch.nn.Module):
    """What the ``similarity`` objective trains besides the body: ``scale`` (1) multiplies the
    cosine logits and ``bias`` (0, one per class) shifts them; ``probe`` is the Linear on the
    normalised features that linear probing adds (:meth:`add_probe`) and fits (``fitted``), after
    which it replaces the label texts."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))
        self.probe: torch.nn.Linear | None = None
        self.fitted = False

    def forward(self, features: torch.Tensor, texts: torch.Tensor | None, tau: float) -> torch.Tensor:
        """Class logits (B, classes) from normalised features (B, H): ``scale * features @
        texts.T / tau + bias``, or the fitted probe on the features (``texts`` unused). The
        parameters are used inside this forward so that hook-based perturbations (the shadow
        perturbation of fp16/bf16 MeZO) see them."""
        if self.fitted and self.probe is not None:
            return self.probe(features)
        return self.scale * (features @ texts.T) / tau + self.bias

    def add_probe(self) -> torch.nn.Linear:
        if self.probe is None:
            self.probe = torch.nn.Linear(self.hidden, self.bias.numel()).to(self.bias)
        return self.probe


def similarity_head(model: torch.nn.Module) -> SimilarityHead:
    """The :class:`SimilarityHead` of an encoder run with the similarity objective."""
    head = getattr(model, SIMILARITY_HEAD_ATTR, None)
    if not isinstance(head, SimilarityHead):
        raise MethodError(f"{type(model).__name__} has no similarity head (task.objective=similarity attaches it)")
    return head


def has_similarity_head(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, SIMILARITY_HEAD_ATTR, None), SimilarityHead)


def probed_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The Linear whose rows linear probing overwrites: the vocabulary projection, for a
    sequence classifier the last Linear of its task head, for the similarity objective its probe."""
    if has_similarity_head(model):
        return similarity_head(model).add_probe()
    return classifier_linear(model) if is_seq_cls(model) else head_of(model)


class HeadInput:
    """Records the input of the probed Linear (:func:`probed_layer`) while active."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.head = probed_layer(model)
        self.captured: list[torch.Tensor] = []

    def __enter__(self) -> "HeadInput":
        self.handle = self.head.register_forward_pre_hook(
            lambda module, args: self.captured.append(args[0].detach().float()))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()  # one hook per use, removed afterwards (the original leaked one per batch)


@torch.inference_mode()
def masked_features(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    mask_positions: torch.Tensor) -> torch.Tensor:
    """Head inputs at one position per row (the mask token of a prompt): (rows, hidden)."""
    with HeadInput(model) as rec:
        model(input_ids=input_ids, attention_mask=attention_mask)
    states = rec.captured[-1]  # (rows, T, hidden)
    return states[torch.arange(states.shape[0], device=states.device), mask_positions]


@torch.inference_mode()
def head_input_features(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The probed Linear's input for one batch of a sequence classifier: (rows, hidden)."""
    with HeadInput(model) as rec:
        model(**inputs)
    states = rec.captured[-1]
    # Every transformers classifier head reads one vector per row; guard against a layout change.
    if states.dim() != 2:
        raise MethodError(f"the classification head of {type(model).__name__} reads a {tuple(states.shape)} "
                          "tensor; linear probing expects one feature vector per example")
    return states
