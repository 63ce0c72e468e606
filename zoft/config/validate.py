"""Value checks that run right after composition, before any data or model is loaded.

Every problem is collected and reported at once, naming the bad value and what is valid.
"""

from __future__ import annotations

from zoft.errors import ZoftUserError

from omegaconf import DictConfig

from zoft.models.loader import DTYPES, FAMILIES, KINDS
from zoft.optim.build import SCHEDULERS
from zoft.optim.mezo import DIRECTIONS, PERTURBATIONS
from zoft.optim.registry import OPTIMIZERS, is_zeroth_order_name, zeroth_order_names

PRECISIONS = ("pure", "amp", "fp32")


class ConfigError(ZoftUserError, ValueError):
    """The composed config has invalid values."""


# Which model kinds each task family can run on.
TASK_FAMILY_KINDS = {"causal": ("causal",), "masked": ("masked", "seq-cls")}


def _choice(problems: list[str], key: str, value, valid) -> None:
    if value not in valid:
        problems.append(f"{key}={value!r} is not valid; choose one of {', '.join(map(str, valid))}")


def _check_opt_task_options(problems: list[str], cfg: DictConfig, spec) -> None:
    """ICL / calibration / generation / non-differentiable objective options (MEZO_SPEC 2.4-2.9)."""
    from zoft.methods.registry import EVAL_ONLY

    t, me = cfg.task, cfg.method
    if t.max_new_tokens < 1:
        problems.append(f"task.max_new_tokens={t.max_new_tokens} must be >= 1")
    if me.num_demos < 0:
        problems.append(f"method.num_demos={me.num_demos} must be >= 0")
    if me.sfc and me.icl_sfc:
        problems.append("method.sfc and method.icl_sfc are both true; choose one "
                        "(sfc: calibrate without demonstrations, icl_sfc: with them)")
    if spec is not None and (me.sfc or me.icl_sfc):
        flag = "method.sfc" if me.sfc else "method.icl_sfc"
        if spec.kind == "generation" or spec.template.encode_sfc is None:
            problems.append(f"{flag}=true but task {spec.name!r} has no calibration (SFC) prompt; "
                            "set it to false (SFC exists for the classification and multiple-choice tasks)")
    if t.objective == "metric" and cfg.method.name not in EVAL_ONLY and not is_zeroth_order_name(cfg.optimizer.name):
        problems.append(f"task.objective=metric has no gradient; it needs a zeroth-order optimizer "
                        f"({', '.join(zeroth_order_names())}), not optimizer={cfg.optimizer.name!r}")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value in ``cfg``."""
    from zoft.methods.registry import METHODS
    from zoft.tasks.base import get_task

    problems: list[str] = []
    m, t, o, tr = cfg.model, cfg.task, cfg.optimizer, cfg.trainer

    _choice(problems, "model.dtype", m.dtype, list(DTYPES))
    _choice(problems, "model.family", m.family, FAMILIES)
    _choice(problems, "model.kind", m.kind, list(KINDS))
    if m.max_length < 8:
        problems.append(f"model.max_length={m.max_length} must be >= 8")

    try:
        spec = get_task(t.name)
    except KeyError as err:
        problems.append(str(err.args[0]))
        spec = None
    for key in ("num_train", "num_dev", "num_test"):
        if t[key] < 0:
            problems.append(f"task.{key}={t[key]} must be >= 0")
    if spec is not None and m.kind not in TASK_FAMILY_KINDS[spec.family]:
        problems.append(
            f"task {t.name!r} is a {spec.family}-LM task but model {m.name!r} is kind={m.kind!r}; "
            f"use a model of kind {' or '.join(TASK_FAMILY_KINDS[spec.family])} "
            f"(e.g. {'model=tiny-opt' if spec.family == 'causal' else 'model=tiny-roberta'})"
        )
    if spec is not None and spec.family == "masked":
        from zoft.lmbff.settings import check_masked_config

        problems.extend(check_masked_config(cfg))

    _choice(problems, "method.name", cfg.method.name, sorted(METHODS))
    _check_opt_task_options(problems, cfg, spec)
    _check_method(problems, cfg)

    _choice(problems, "optimizer.name", o.name, tuple(OPTIMIZERS) + ("kernel",))
    if o.name == "kernel":
        from zoft.kernel.validate import kernel_problems

        problems.extend(kernel_problems(cfg))
    if o.lr < 0:
        problems.append(f"optimizer.lr={o.lr} must be >= 0")
    if o.weight_decay < 0:
        problems.append(f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    if is_zeroth_order_name(o.name):
        if o.eps <= 0:
            problems.append(f"optimizer.eps={o.eps} must be > 0 (the paper uses 1e-3; 1e-1 for prefix)")
        if o.n_directions < 1:
            problems.append(f"optimizer.n_directions={o.n_directions} must be >= 1")
        _choice(problems, "optimizer.direction", o.direction, DIRECTIONS)
        _choice(problems, "optimizer.perturbation", o.perturbation, PERTURBATIONS)

    from zoft.loggers import LOGGERS, MODES

    _choice(problems, "logger.name", cfg.logger.name, LOGGERS)
    if cfg.logger.mode is not None:
        _choice(problems, "logger.mode", cfg.logger.mode, MODES)

    if tr.batch_size < 1:
        problems.append(f"trainer.batch_size={tr.batch_size} must be >= 1")
    if tr.eval_batch_size < 1:
        problems.append(f"trainer.eval_batch_size={tr.eval_batch_size} must be >= 1")
    if tr.grad_accum < 1:
        problems.append(f"trainer.grad_accum={tr.grad_accum} must be >= 1")
    if tr.batch_size % tr.grad_accum:
        problems.append(f"trainer.batch_size={tr.batch_size} must be a multiple of trainer.grad_accum={tr.grad_accum}")
    if tr.max_steps < 0:
        problems.append(f"trainer.max_steps={tr.max_steps} must be >= 0")
    if tr.num_epochs is not None and tr.num_epochs <= 0:
        problems.append(f"trainer.num_epochs={tr.num_epochs} must be > 0 (or null to use max_steps)")
    if tr.eval_steps is not None and tr.eval_steps < 0:
        problems.append(f"trainer.eval_steps={tr.eval_steps} must be >= 0 (0: evaluate at the end only)")
    if tr.num_evals < 0:
        problems.append(f"trainer.num_evals={tr.num_evals} must be >= 0 (0: evaluate at the end only)")
    _choice(problems, "trainer.precision", tr.precision, PRECISIONS)
    _check_precision(problems, cfg)
    _choice(problems, "trainer.lr_scheduler", tr.lr_scheduler, SCHEDULERS)
    _choice(problems, "trainer.select_by", tr.select_by, ("loss", "metric"))
    _choice(problems, "trainer.on_divergence", tr.on_divergence, ("stop", "rollback"))
    if tr.checkpoint_steps < 0:
        problems.append(f"trainer.checkpoint_steps={tr.checkpoint_steps} must be >= 0 (0: only on signals)")
    if tr.divergence_factor < 0:
        problems.append(f"trainer.divergence_factor={tr.divergence_factor} must be >= 0 (0 disables the check)")
    _choice(problems, "resume", str(cfg.resume).lower(), ("auto", "true", "false"))
    if "distributed" in cfg:
        from zoft.distributed import BACKENDS, MIXED_PRECISION, STRATEGIES

        _choice(problems, "distributed.strategy", cfg.distributed.strategy, STRATEGIES)
        _choice(problems, "distributed.backend", cfg.distributed.backend, BACKENDS)
        _choice(problems, "distributed.mixed_precision", cfg.distributed.mixed_precision, MIXED_PRECISION)

    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _check_precision(problems: list[str], cfg: DictConfig) -> None:
    """A first-order optimizer never trains pure fp16/bf16 master weights."""
    from zoft.methods.registry import EVAL_ONLY

    if cfg.trainer.precision == "pure" and cfg.model.dtype != "float32" and not is_zeroth_order_name(cfg.optimizer.name) \
            and cfg.optimizer.name in OPTIMIZERS and cfg.method.name not in EVAL_ONLY:
        problems.append(
            f"trainer.precision=pure with model.dtype={cfg.model.dtype} and optimizer={cfg.optimizer.name} would "
            f"train {cfg.model.dtype} master weights with backprop, which loses small updates and makes "
            "AdamW's eps (1e-8) underflow to 0 (NaN); use trainer.precision=amp (fp32 master weights with "
            "autocast, the original's --fp16) or model.dtype=float32")


def check_preset(cfg: DictConfig) -> list[str]:
    """A method preset (method=mezo, mezo-lora, ...) next to an optimizer it does not stand for."""
    me = cfg.method
    implied = me.get("preset_optimizer")
    if not implied or cfg.optimizer.name == implied:
        return []
    return [f"method={me.preset} stands for method={me.name} with optimizer={implied}, but optimizer="
            f"{cfg.optimizer.name} was also chosen; write method={me.name} optimizer={cfg.optimizer.name} "
            f"for {me.name} with {cfg.optimizer.name}, or method={me.preset} alone"]


def _check_method(problems: list[str], cfg: DictConfig) -> None:
    """Method x model family, and linear probing's follow-up optimizer."""
    from zoft.methods.registry import METHOD_FAMILIES

    me, family = cfg.method, cfg.model.family
    problems.extend(check_preset(cfg))
    families = METHOD_FAMILIES.get(me.name)
    if families is not None and family not in families:
        problems.append(
            f"method.name={me.name!r} does not support model.family={family!r} (model {cfg.model.name!r}); "
            f"supported families: {', '.join(families)}"
        )
    if me.get("lp_then") is not None:
        if me.name != "linear-probe":
            problems.append(f"method.lp_then={me.lp_then!r} only applies to method.name='linear-probe'")
        elif me.lp_then not in OPTIMIZERS:
            problems.append(f"method.lp_then={me.lp_then!r} is not valid; choose one of {', '.join(OPTIMIZERS)}")
        elif me.lp_then != cfg.optimizer.name:
            problems.append(
                f"method.lp_then={me.lp_then!r} but optimizer.name={cfg.optimizer.name!r}; "
                f"add optimizer={me.lp_then} (or use the preset method=lp-mezo)"
            )
    if me.name in ("lora",) and me.lora_r < 1:
        problems.append(f"method.lora_r={me.lora_r} must be >= 1")
    if me.name in ("prefix", "prompt") and me.num_prefix < 1:
        problems.append(f"method.num_prefix={me.num_prefix} must be >= 1")
