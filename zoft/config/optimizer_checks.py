"""The checks of the ``optimizer`` node: its option, its keys, and each setting against what the
option's class declares (:mod:`zoft.optim.spec`, read without torch by :mod:`zoft.optim.registry`),
then the rules that tie a setting to the rest of the run (the method, the objective).

One message per mistake, naming the bad value and what is valid.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from zoft.config.bounds import ALIASES, satisfies, spoken
from zoft.config.preflight import MOVED
from zoft.optim.registry import OPTIMIZERS, RESERVED, OptimizerRecord
from zoft.optim.spec import KINDS, Setting


def unknown_setting(record: OptimizerRecord, key: str) -> str:
    """The message for ``optimizer.<key>`` that the option ``record`` does not have."""
    alias = ALIASES.get(key)
    close = [alias] if alias in record.settings else difflib.get_close_matches(key, list(record.settings), n=1, cutoff=0.6)
    hint = f" (did you mean optimizer.{close[0]}?)" if close else ""
    owners = "" if close else _owners(key)
    return (f"optimizer.{key} is not a setting of optimizer={record.name}{hint}{owners}; "
            f"its settings: {', '.join(record.settings)}")


def unknown_settings(record: OptimizerRecord, keys) -> list[str]:
    """One :func:`unknown_setting` message per key of ``keys`` (in order, once) that the option
    ``record`` does not have (``name`` and ``_target_`` are every option's)."""
    return [unknown_setting(record, k) for k in dict.fromkeys(keys) if k not in record.settings and k not in RESERVED]


def _owners(key: str) -> str:
    """`` (the zeroth-order optimizers have it)``, `` (sgd, mezo-sgd have it)``, or nothing."""
    having = [name for name, other in OPTIMIZERS.items() if key in other.settings]
    if not having:
        return ""
    zeroth_order = [name for name, other in OPTIMIZERS.items() if other.capabilities.zeroth_order]
    if sorted(having) == sorted(zeroth_order):
        return " (the zeroth-order optimizers have it)"
    return f" ({', '.join(having)} {'has' if len(having) == 1 else 'have'} it)"


def setting_problem(key: str, value: Any, setting: Setting) -> str | None:
    """The message for a value of the wrong kind or outside what ``setting`` declares valid."""
    types, nullable = KINDS[setting.kind]
    full = f"optimizer.{key}"
    if isinstance(value, ListConfig):
        value = list(value)
    if value is None:
        return None if nullable else f"{full}=null is not valid; it is {setting.what}"
    if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
        kind = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
                "floats": "a list of numbers"}[setting.kind.rstrip("?")]
        return f"{full}={value!r} must be {kind} ({setting.what})"
    if setting.kind == "floats":
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != len(value) or not all(math.isfinite(v) for v in numbers):
            return f"{full}={list(value)!r} must be a list of finite numbers ({setting.what})"
        return None
    if isinstance(setting.valid, tuple):
        if value not in setting.valid:
            return f"{full}={value!r} is not valid; choose one of {', '.join(setting.valid)}"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{full}={value} is not a finite number; it is {setting.what}" + (
            f", {spoken(setting.valid)}" if setting.valid else "")
    if setting.valid and not satisfies(value, setting.valid):
        return f"{full}={value} must be {spoken(setting.valid)} ({setting.what})"
    return None


def option_problems(o: DictConfig) -> list[str]:
    """The option's name, its keys, and every setting's value (the option's own rules)."""
    name = o.get("name")
    if ("optimizer", name) in MOVED:
        return [f"optimizer.name={name!r} is not an optimizer. {MOVED[('optimizer', name)]}"]
    record = OPTIMIZERS.get(name)
    if record is None:
        return [f"optimizer.name={name!r} is not valid; choose one of {', '.join(OPTIMIZERS)}"]
    target = o.get("_target_", record.target)
    if target != record.target:
        composed = next((n for n, r in OPTIMIZERS.items() if r.target == target), None)
        if composed is not None:  # optimizer.name=<another> typed over an option file
            return [f"optimizer.name={name!r} renames optimizer={composed} without changing it; choose the "
                    f"optimizer with optimizer={name}"]
        return [f"optimizer._target_={target!r} but optimizer={name} is {record.target}; another class is "
                "another option: its own conf/optimizer/<name>.yaml (docs/estimators.md, Adding an estimator)"]
    problems = unknown_settings(record, o)
    for key, setting in record.settings.items():
        if key not in o:
            problems.append(f"optimizer.{key} is missing: optimizer={name} needs it ({setting.what}); "
                            f"conf/optimizer/{name}.yaml sets it")
        else:
            problem = setting_problem(key, o[key], setting)
            if problem:
                problems.append(problem)
    return problems


def run_problems(cfg: DictConfig) -> list[str]:
    """The rules between the optimizer's settings and the rest of the run."""
    o, method = cfg.optimizer, cfg.method.name
    record = OPTIMIZERS[o.name]
    problems = []
    probe_batch = o.get("probe_batch", 1)
    if probe_batch > 1:
        if not record.capabilities.batches_probes:
            batching = ", ".join(n for n, r in OPTIMIZERS.items() if r.capabilities.batches_probes)
            problems.append(f"optimizer.probe_batch={probe_batch} but {o.name} does not batch its probes; set it "
                            f"to 1, or use one of {batching}")
        elif method in ("prefix", "prompt"):
            problems.append(f"optimizer.probe_batch={probe_batch} with method={method}: its trainable "
                            "tensors are not used through a module's forward on the batch rows (a prefix cache, "
                            "a soft prompt); set optimizer.probe_batch=1")
        elif cfg.task.objective == "similarity" or (cfg.model.kind == "encoder" and not cfg.task.objective):
            problems.append(f"optimizer.probe_batch={probe_batch} with the similarity objective: its label texts "
                            "are rows of the same forward as the batch and its head runs outside the model, "
                            "which batched probes cannot slice; set optimizer.probe_batch=1")
        elif o.perturbation == "inplace":
            problems.append(f"optimizer.probe_batch={probe_batch} perturbs through forward hooks; "
                            "optimizer.perturbation=inplace cannot, use auto or shadow")
    if o.get("threshold_update") == "fixed" and method == "lora":
        problems.append("optimizer.threshold_update=fixed with method=lora: LoRA's B matrices start at zero, so "
                        "their fixed thresholds would be 0 and they would stop training after one step; use "
                        "optimizer.threshold_update=every_step")
    if o.get("norm_running_update") and not (o.zo_by_layer and o.zo_variant == "grad_norm"):
        problems.append("optimizer.norm_running_update=true needs optimizer.zo_by_layer=true and "
                        f"optimizer.zo_variant=grad_norm (got zo_by_layer={o.zo_by_layer}, "
                        f"zo_variant={o.zo_variant!r})")
    if o.get("sample_scheduler") == "linear" and o.get("sample_steps") is None:
        problems.append("optimizer.sample_scheduler=linear needs optimizer.sample_steps (T of the schedule, >= 1)")
    return problems


def optimizer_problems(cfg: DictConfig) -> list[str]:
    """Every problem of ``cfg.optimizer``: its own first; the run's rules only for a sound option."""
    if OmegaConf.is_missing(cfg, "optimizer") or not isinstance(cfg.optimizer, DictConfig):  # `~optimizer`
        return [f"no optimizer: choose one with optimizer=<name> ({', '.join(OPTIMIZERS)})"]
    own = option_problems(cfg.optimizer)
    return own or run_problems(cfg)


def normalise(cfg: DictConfig, typed: Optional[Sequence[str]] = None) -> None:
    """The optimizer node as the run records it: a preset's key that the chosen option does not
    have is dropped (a sweep or experiment file written for MeZO sets ``optimizer.eps``; with
    ``optimizer=adam`` typed, that value does nothing), while a key typed on the command line
    (``typed``; None: every key counts as typed) stays and is refused by :func:`option_problems`.
    A float setting typed as an integer (``optimizer.lr=1``) is stored as a float (1.0)."""
    if OmegaConf.is_missing(cfg, "optimizer") or not isinstance(cfg.get("optimizer"), DictConfig):
        return  # no optimizer node (`~optimizer`): optimizer_problems says so
    o = cfg.optimizer
    record = OPTIMIZERS.get(o.get("name"))
    if record is not None and typed is not None:
        typed_keys = {t.lstrip("+~").split("=", 1)[0] for t in typed}
        leftovers = [k for k in o if k not in record.settings and k not in RESERVED
                     and f"optimizer.{k}" not in typed_keys]
        with open_dict(o):
            for key in leftovers:
                del o[key]
    _coerce_numbers(o, record)


def _coerce_numbers(o: DictConfig, record: Optional[OptimizerRecord]) -> None:
    """Float settings written as integers become floats, as a typed config stores them;
    interpolations are left to resolve."""
    for key, setting in (record.settings.items() if record else ()):
        node = o._get_node(key) if key in o else None
        if node is None or node._is_interpolation() or setting.kind not in ("float", "float?"):
            continue
        value = node._value()
        if isinstance(value, int) and not isinstance(value, bool):
            o[key] = float(value)
