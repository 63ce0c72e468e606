"""The backprop optimizers of ``optimizer=sgd`` and ``optimizer=adam``: torch's SGD and AdamW with
zoft's declarations (:mod:`zoft.optim.spec`) and zoft's setting names (``adam_eps``, since
``optimizer.eps`` is the zeroth-order perturbation scale)."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from zoft.optim.spec import Capabilities, Setting


class Backprop:
    """The settings every backprop option shares (weight decay goes into the parameter groups;
    the loop clips the gradient to ``max_grad_norm``)."""

    settings = {
        "lr": Setting("float", ">=0", "the learning rate"),
        "weight_decay": Setting("float", ">=0", "the weight decay", arg=""),
        "max_grad_norm": Setting("float?", ">=0", "the clipping norm (0 or null: no clipping)", arg=""),
    }


class SGD(Backprop, torch.optim.SGD):
    """``optimizer=sgd``: torch.optim.SGD (weight decay from the parameter groups)."""

    capabilities = Capabilities(summary="torch.optim.SGD with backprop", parameter_state="gradient (+ momentum buffer)")
    settings = {"momentum": Setting("float", "[0,1)", "the momentum")}

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum)


class AdamW(Backprop, torch.optim.AdamW):
    """``optimizer=adam``: torch.optim.AdamW, the paper's FT (weight decay from the parameter groups)."""

    capabilities = Capabilities(summary="torch.optim.AdamW with backprop (the paper's FT)",
                                parameter_state="gradient + two moments")
    settings = {"betas": Setting("floats", "", "AdamW's (beta1, beta2)"),
                "adam_eps": Setting("float", ">0", "Adam's denominator epsilon")}

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 adam_eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=adam_eps)
