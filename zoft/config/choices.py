"""The vocabularies a config value is checked against, kept free of torch and transformers so
that :mod:`zoft.config.validate` can reject a bad command in about a second, before the heavy
libraries load and before the run folder is touched.

The modules that implement each choice import their names from here (the model loader, the
schedulers, the kernel solvers, the distributed setup, the method
registry, which refuses to register a method this module does not name). An optimizer's
settings and their valid values are declared by its class instead (zoft.optim.spec).
"""

from __future__ import annotations

from typing import Optional

from zoft.models.families import AUTO, FAMILIES, method_families

DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
# The families of zoft.models.families (one table), and auto: read from the checkpoint's config.json.
MODEL_FAMILIES = (*FAMILIES, AUTO)
MODEL_KINDS = ("causal", "masked", "seq-cls", "encoder")
PRECISIONS = ("pure", "amp", "fp32")
SCHEDULERS = ("constant", "linear")
KERNEL_FORMULAS = ("sgd", "signgd", "asymmetric_signgd")
KERNEL_SOLVERS = ("lstsq", "logistic", "svr", "svc", "asym")
KERNEL_BINARY_ONLY = ("svc", "asym")
STRATEGIES = ("auto", "ddp", "fsdp")
BACKENDS = ("auto", "gloo", "nccl")
MIXED_PRECISION = ("no", "bf16")

# Every method and the model families it supports (None: every family), the one record of both:
# zoft.methods.registry registers the implementations under these names and refuses a model of
# another family with the same table.
METHOD_FAMILIES: dict[str, Optional[tuple[str, ...]]] = {
    "ft": None,
    "zero-shot": None,
    "icl": None,
    "head": None,
    "linear-probe": None,
    "lora": method_families("lora"),
    "prefix": method_families("prefix"),
    "prompt": method_families("prompt"),
}
# What a run does (conf/mode/): fine-tune/evaluate, or the kernel view.
MODES = ("train", "kernel")
# Methods that only evaluate: no optimizer runs.
EVAL_ONLY = frozenset({"zero-shot", "icl"})
