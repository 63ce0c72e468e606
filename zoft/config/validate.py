"""Value checks that run right after composition, before any data or model is loaded.

Every problem is collected and reported at once, naming the bad value and what is valid.
"""

from __future__ import annotations

from omegaconf import DictConfig

from zoft.config.choices import (BACKENDS, DTYPE_NAMES, EVAL_ONLY, METHOD_FAMILIES, MIXED_PRECISION, MODES, MODEL_KINDS,
                                 PRECISIONS, SCHEDULERS, STRATEGIES)
from zoft.config.bounds import number_problems, unknown_keys
from zoft.config.kernel_checks import kernel_problems
from zoft.config.model_checks import family_known, family_problems
from zoft.config.optimizer_checks import optimizer_problems
from zoft.errors import ZoftUserError
from zoft.lmbff.settings import check_masked_config
from zoft.loggers import LOGGERS
from zoft.loggers import MODES as LOGGER_MODES
from zoft.tasks import get_task
from zoft.optim.registry import OPTIMIZERS, is_zeroth_order_name, takes_metric_objective, zeroth_order_names


class ConfigError(ZoftUserError, ValueError):
    """The composed config has invalid values."""

    @classmethod
    def of(cls, problems: list[str]) -> "ConfigError":
        """One error listing ``problems``, one line each."""
        return cls("invalid configuration:\n  - " + "\n  - ".join(problems))


# Which model kinds each task family can run on.
TASK_FAMILY_KINDS = {"causal": ("causal",), "masked": ("masked", "seq-cls", "encoder")}


def _choice(problems: list[str], key: str, value, valid) -> None:
    if value not in valid:
        problems.append(f"{key}={value!r} is not valid; choose one of {', '.join(map(str, valid))}")


def _check_opt_task_options(problems: list[str], cfg: DictConfig, spec) -> None:
    """ICL / calibration / generation / non-differentiable objective options (the original's large_models/run.py options)."""
    t, me = cfg.task, cfg.method
    if me.sfc and me.icl_sfc:
        problems.append("method.sfc and method.icl_sfc are both true; choose one "
                        "(sfc: calibrate without demonstrations, icl_sfc: with them)")
    if spec is not None and (me.sfc or me.icl_sfc):
        flag = "method.sfc" if me.sfc else "method.icl_sfc"
        if spec.kind == "generation" or spec.prompt.encode_sfc is None:
            problems.append(f"{flag}=true but task {spec.name!r} has no calibration (SFC) prompt; "
                            "set it to false (SFC exists for the classification and multiple-choice tasks)")
    if t.objective == "metric" and cfg.method.name not in EVAL_ONLY and not takes_metric_objective(cfg.optimizer.name):
        valid = [n for n in zeroth_order_names() if takes_metric_objective(n)]
        problems.append(f"task.objective=metric has no gradient; it needs an optimizer that uses loss values only "
                        f"({', '.join(valid)}), not optimizer={cfg.optimizer.name!r}")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value in ``cfg``.

    Needs neither torch nor transformers (a bad command fails in about a second), except to ask
    whether a CUDA device named by ``model.device`` exists.
    """
    problems: list[str] = unknown_keys(cfg) + number_problems(cfg)
    spec = _check_model_and_task(problems, cfg)
    _check_mode(problems, cfg)
    _choice(problems, "method.name", cfg.method.name, sorted(METHOD_FAMILIES))
    _check_opt_task_options(problems, cfg, spec)
    _check_method(problems, cfg)
    problems.extend(optimizer_problems(cfg))
    _check_trainer(problems, cfg)

    _choice(problems, "logger.name", cfg.logger.name, LOGGERS)
    if cfg.logger.mode is not None:
        _choice(problems, "logger.mode", cfg.logger.mode, LOGGER_MODES)
    # resume: auto | true | false, or last / a run folder (checked where the folder is found, zoft/rundir.py)
    if "distributed" in cfg:
        _choice(problems, "distributed.strategy", cfg.distributed.strategy, STRATEGIES)
        _choice(problems, "distributed.backend", cfg.distributed.backend, BACKENDS)
        _choice(problems, "distributed.mixed_precision", cfg.distributed.mixed_precision, MIXED_PRECISION)
    if not problems:  # only a config that is otherwise valid pays for asking torch about devices
        problems.extend(device_problems(cfg.model.device))
    if problems:
        raise ConfigError.of(problems)


def _check_model_and_task(problems: list[str], cfg: DictConfig):
    """Model vocabularies, the task name, and task x model kind; returns the task (or None)."""
    m, t = cfg.model, cfg.task
    _choice(problems, "model.dtype", m.dtype, DTYPE_NAMES)
    problems.extend(family_problems(m))
    _choice(problems, "model.kind", m.kind, MODEL_KINDS)
    try:
        spec = get_task(t.name)
    except KeyError as err:
        problems.append(str(err.args[0]))
        return None
    if t.num_train == 0 and cfg.method.name not in EVAL_ONLY:
        problems.append(f"task.num_train=0 leaves method={cfg.method.name} nothing to train on; "
                        "use task.num_train >= 1 (or an evaluation-only method: zero-shot)")
    if m.kind not in TASK_FAMILY_KINDS[spec.family]:
        problems.append(
            f"task {t.name!r} is a {spec.family}-LM task but model {m.name!r} is kind={m.kind!r}; "
            f"use a model of kind {' or '.join(TASK_FAMILY_KINDS[spec.family])} "
            f"(e.g. {'model=tiny-opt' if spec.family == 'causal' else 'model=tiny-roberta'})"
        )
    if spec.family == "masked":
        problems.extend(check_masked_config(cfg, spec.lmbff))
    return spec


def _check_mode(problems: list[str], cfg: DictConfig) -> None:
    _choice(problems, "mode.name", cfg.mode.name, MODES)
    if cfg.mode.name == "kernel":
        problems.extend(kernel_problems(cfg))


def _check_trainer(problems: list[str], cfg: DictConfig) -> None:
    tr = cfg.trainer
    if tr.grad_accum >= 1 and tr.batch_size % tr.grad_accum:
        problems.append(f"trainer.batch_size={tr.batch_size} must be a multiple of trainer.grad_accum={tr.grad_accum}")
    _choice(problems, "trainer.precision", tr.precision, PRECISIONS)
    _check_precision(problems, cfg)
    _choice(problems, "trainer.lr_scheduler", tr.lr_scheduler, SCHEDULERS)
    _choice(problems, "trainer.select_by", tr.select_by, ("loss", "metric"))
    _choice(problems, "trainer.on_divergence", tr.on_divergence, ("stop", "rollback"))


def cuda_device_count() -> int:
    """CUDA devices visible to this process, asked of the NVIDIA driver directly (a fraction of a
    second, where importing torch takes several); torch answers when there is no NVIDIA driver
    but a ROCm runtime (torch's "cuda" devices are HIP devices there)."""
    import ctypes
    import ctypes.util

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        if ctypes.util.find_library("amdhip64") is None:
            return 0  # neither an NVIDIA driver nor ROCm: no device torch could call "cuda"
        import torch

        return torch.cuda.device_count()
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0  # a driver without a usable device (CUDA_VISIBLE_DEVICES="" gives this too)
    return count.value


def device_problems(device: str) -> list[str]:
    """``model.device`` names a device that this machine has (auto and cpu always do)."""
    if device in ("auto", "cpu"):
        return []
    kind, _, index = device.partition(":")
    if kind not in ("cuda", "mps") or (index and not index.isdigit()):
        return [f"model.device={device!r} is not valid; choose auto, cpu, cuda or cuda:N"]
    if kind == "mps":
        import torch

        available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        return [] if available else [f"model.device={device!r} but this machine has no MPS device; use model.device=cpu or auto"]
    count = cuda_device_count()
    if count == 0:
        return [f"model.device={device!r} but this machine has no CUDA device; "
                "use model.device=cpu or model.device=auto"]
    if index and int(index) >= count:
        return [f"model.device={device!r} but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}"]
    return []


def _check_precision(problems: list[str], cfg: DictConfig) -> None:
    """A first-order optimizer never trains pure fp16/bf16 master weights."""
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
    me, family = cfg.method, cfg.model.family
    problems.extend(check_preset(cfg))
    families = METHOD_FAMILIES.get(me.name)
    if families is not None and family_known(family) and family not in families:
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
