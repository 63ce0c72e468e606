"""Which parameters the kernel is taken over (the original's medium_models/src/kernel_trainer.py: exclude_embeddings, exclude_head, only_biases, ...).

Parameters outside the subset are held fixed: they are passed to ``functional_call`` but no
gradient is taken with respect to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from zoft.errors import ZoftUserError

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


class ParamSubsetError(ZoftUserError, ValueError):
    """The parameter subset selects nothing."""


@dataclass(frozen=True)
class ParamSubset:
    """Exclusion rules, applied by parameter name (as in the original).

    exclude_embeddings: names containing "embed"; exclude_head: names containing "head";
    only_biases: every non-bias parameter; exclude_first_layers=n: encoder layers with index < n
    (-1/0: none); lora_only: encoder parameters without "lora" in the name (the MLM head stays
    unless exclude_head, as in the original's LoRA kernels).
    """

    exclude_embeddings: bool = False
    exclude_head: bool = False
    only_biases: bool = False
    exclude_first_layers: int = -1
    lora_only: bool = False

    def excludes(self, name: str) -> bool:
        if self.exclude_embeddings and "embed" in name:
            return True
        if self.exclude_head and "head" in name:
            return True
        if self.only_biases and not name.endswith("bias"):
            return True
        layer = _LAYER.search(name)
        if self.exclude_first_layers > 0 and layer is not None and int(layer.group(1)) < self.exclude_first_layers:
            return True
        if self.lora_only and "lora" not in name and "head" not in name:
            return True
        return False


def split_params(module: torch.nn.Module, subset: ParamSubset) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(kernel parameters, fixed tensors) of ``module``, detached, keyed by ``named_parameters`` names.

    Buffers are included among the fixed tensors so ``functional_call`` sees the whole state.
    """
    kernel, fixed = {}, {}
    for name, p in module.named_parameters():
        (fixed if subset.excludes(name) else kernel)[name] = p.detach()
    for name, b in module.named_buffers():
        fixed[name] = b
    if subset.lora_only and not any("lora" in n for n in kernel):
        raise ParamSubsetError("kernel.lora_only=true but the model has no LoRA parameters; use method=lora "
                               "or set kernel.lora_only=false")
    if not kernel:
        raise ParamSubsetError(f"the kernel parameter subset {subset} excludes every parameter; relax it")
    return kernel, fixed
