"""Value checks of the ``kernel`` config node (run by zoft.config.validate for ``mode=kernel``)."""

from __future__ import annotations

from omegaconf import DictConfig

from zoft.config.choices import KERNEL_BINARY_ONLY as BINARY_ONLY
from zoft.config.choices import KERNEL_FORMULAS as FORMULAS
from zoft.config.choices import KERNEL_SOLVERS as SOLVERS


def kernel_problems(cfg: DictConfig) -> list[str]:
    """Every invalid combination of kernel settings, as messages naming the values and what is
    valid (each number's own range is checked once, by zoft.config.bounds)."""
    k = cfg.kernel
    problems = []
    if k.formula not in FORMULAS:
        problems.append(f"kernel.formula={k.formula!r} is not valid; choose one of {', '.join(FORMULAS)}")
    if k.solver not in SOLVERS:
        problems.append(f"kernel.solver={k.solver!r} is not valid; choose one of {', '.join(SOLVERS)}")
    if k.solver == "asym" and k.formula != "asymmetric_signgd":
        problems.append(f"kernel.solver=asym needs kernel.formula=asymmetric_signgd (got {k.formula!r})")
    if (k.solver in BINARY_ONLY or k.formula == "asymmetric_signgd") and k.binary is False:
        problems.append(f"kernel.solver={k.solver} / kernel.formula={k.formula} need the binary function; "
                        "set kernel.binary=true (or null) on a 2-class task")
    if k.adjust_for_init and k.solver != "lstsq":
        problems.append(f"kernel.adjust_for_init=true is only used by kernel.solver=lstsq (got {k.solver!r})")
    if cfg.model.kind != "masked":
        problems.append(f"mode=kernel needs a masked LM with an MLM head (model.kind=masked); "
                        f"model {cfg.model.name!r} is kind={cfg.model.kind!r} (e.g. model=roberta-large or model=tiny-roberta)")
    return problems
