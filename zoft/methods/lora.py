"""LoRA (Hu et al., 2021) via peft, injected in place (the original's large_models/lora.py and medium_models' loralib copy).

The q and v projections of every attention layer (the family's ``lora_targets`` in
:mod:`zoft.models.families`: ``query``/``value`` for RoBERTa/BERT, Phi-3's fused ``qkv_proj``) get
``W x + (alpha / r) * B A x`` with A (r x in) Kaiming-uniform, B (out x r) zero, no dropout. The
model keeps its own class and forward signature (``peft.inject_adapter_in_model``, not a
``PeftModel`` wrapper), so every objective calls it exactly as the plain model. peft's LoRA layers
never merge on ``eval()`` (merging is an explicit call), unlike loralib 0.1.2, whose merge on
``eval()`` made the original RoBERTa MeZO-LoRA learn nothing (a defect of the original with loralib >= 0.1.2).

On a sequence classifier (``model.kind=seq-cls``) the freshly initialised task head trains too,
as peft's ``SEQ_CLS`` task type does (``modules_to_save``); the head is trained in place, as the
base weights are frozen anyway and no copy is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, inject_adapter_in_model

from zoft.errors import MethodError
from zoft.methods.common import Named, freeze_all, trainable
from zoft.methods.registry import register_method
from zoft.methods.seqcls import unfreeze_head
from zoft.models.families import FAMILIES
from zoft.models.heads import is_seq_cls

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import MethodConfig

# Attention projections that LoRA adapts, per model family (the family table's lora_targets).
LORA_TARGETS = {name: list(f.lora_targets) for name, f in FAMILIES.items() if f.lora_targets}


def lora_config(cfg: MethodConfig, family: str) -> LoraConfig:
    targets = list(cfg.lora_targets) if cfg.lora_targets else LORA_TARGETS.get(family)
    if not targets:
        raise MethodError(
            f"method.name=lora has no default targets for model.family={family!r}; "
            f"families with defaults: {', '.join(LORA_TARGETS)} (or set method.lora_targets)"
        )
    if cfg.lora_r < 1:
        raise MethodError(f"method.lora_r={cfg.lora_r} must be >= 1")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", init_lora_weights=True)


@register_method("lora", adapter=True)
def apply_lora(model: torch.nn.Module, cfg: MethodConfig, family: str) -> Named:
    """Inject LoRA into the q/v projections; ``lora_A``/``lora_B`` train (plus the task head of a
    sequence classifier)."""
    freeze_all(model)
    dtype = next(model.parameters()).dtype
    inject_adapter_in_model(lora_config(cfg, family), model)
    named = [(n, p) for n, p in model.named_parameters() if ".lora_" in n]
    if not named:
        raise MethodError(f"method.name=lora found none of the target modules in {type(model).__name__}")
    for _, p in named:
        # LoRA matrices live in the model's dtype (the original left them fp32 under bf16 and
        # crashed on the mixed-dtype matmul, a defect of the original).
        p.data = p.data.to(dtype)
        p.requires_grad_(True)
    if is_seq_cls(model):
        unfreeze_head(model)
    return trainable(model)
