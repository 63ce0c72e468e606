"""The checks ``python train.py`` makes before Hydra starts, and the folders it pins.

Hydra writes the run folder's ``.hydra/`` and log before the job function runs, so a command that
must not run (a bad value, a folder in use or holding another run, a completed run) is stopped
here, with the folder untouched. Nothing here imports torch or transformers: a bad command, or
one whose model weights can be neither found nor downloaded (:mod:`zoft.models.source`), fails
in about a second.

The folder is decided here, once, and handed to Hydra (``hydra.run.dir=<folder>``): the clock in
``outputs/${now:...}`` is read a single time, ``output_dir`` moves ``.hydra/`` and the log too, and
``resume=last`` / ``resume=<folder>`` name the folder to continue. For a multirun (``-m``) the
sweep folder is pinned the same way and the overrides that are the same in every job are left out
of the job folder names; each job validates itself before writing into its own folder. Hydra's
informational flags (``--cfg``, ``--help``, ...) are left to Hydra.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

from zoft.config.bounds import schema_fields_of
from zoft.config.optimizer_checks import normalise, optimizer_problems, unknown_settings
from zoft.optim.registry import OPTIMIZERS
from zoft.config.preflight import unknown_group_choice
from zoft.config.protocol import settle
from zoft.config.store import register_configs
from zoft.config.validate import ConfigError, validate
from zoft.errors import ZoftUserError
from zoft.models.source import check_model_available
from zoft.rundir import (RunFolderError, check_writable, is_locked, plan_attempt, resume_folder, resume_target,
                         run_dir_template)

MULTIRUN_FLAGS = ("-m", "--multirun")
HYDRA_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
               "--resolve", "--package", "-p", "--version", "--experimental-rerun")
# Left out of job folder names by conf/config.yaml, whatever their values (the seeds go last).
SWEEP_DIR_KEY = "hydra.sweep.dir"
RUN_DIR_KEY = "hydra.run.dir"
# Keys whose value is one run's folder: a job folder's name (``0_optimizer.lr=1e-3,seed=1``) needs quoting.
FOLDER_KEYS = ("resume", "output_dir", RUN_DIR_KEY)
EXCLUDE_KEY = "hydra.job.config.override_dirname.exclude_keys"


class Stop(Exception):
    """The command ends here: ``code`` is the exit status, ``message`` what to print."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def preflight(argv: Sequence[str], conf_dir: Path, check_weights: bool = True) -> list[str]:
    """The command line Hydra should run (``argv`` with the folders pinned), or raise
    :class:`Stop` when the command must not start (exit 2) or has nothing to do (exit 0).
    ``check_weights=False`` leaves out the look for the model's weights (cache, Hub): the command
    is then only composed and validated (the docs' commands, on a machine without the models)."""
    argv = list(argv)
    problem = unknown_group_choice(argv, conf_dir)
    if problem:
        raise Stop(2, f"error: {problem}")
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    if flags & set(HYDRA_FLAGS):
        return argv
    overrides = [a for a in argv if not a.startswith("-")]
    if flags & set(MULTIRUN_FLAGS):
        return _plan_sweep(argv, overrides, conf_dir)
    _check_launcher(overrides, multirun=False)
    check_folder_quoting(overrides)
    cfg = _compose(overrides, conf_dir)
    _check_one_folder(overrides, cfg)
    run_dir = _run_dir(cfg)
    template = run_dir_template(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        settle(cfg, overrides)
        validate(cfg)
        config = _record(cfg)
        target = resume_target(cfg.resume)
        if target is not None:
            run_dir = resume_folder_of(target, cfg, config, template)
            argv = _set_override(argv, "resume", str(run_dir))
        # The weights are looked for (cache, Hub) before torch loads, so a paper command on an
        # offline machine stops in about a second: after an existing folder's own verdict (a
        # completed run is a no-op even offline), before a new folder is created.
        existed = run_dir is not None and run_dir.is_dir()
        if existed:
            _check_folder(run_dir, cfg, config)
        if check_weights:
            check_model_available(cfg.model)
        if not existed:
            _check_folder(run_dir, cfg, config)
    except ZoftUserError as err:
        raise Stop(2, f"error: {err}") from None
    return argv if run_dir is None else _set_override(argv, RUN_DIR_KEY, str(run_dir))


def _check_one_folder(overrides: list[str], cfg) -> None:
    """``output_dir`` moves the whole run (``.hydra/`` and the log too), so a typed
    ``hydra.run.dir`` naming another folder contradicts it."""
    typed = next((a.split("=", 1)[1] for a in overrides if a.split("=", 1)[0].lstrip("+") == RUN_DIR_KEY), None)
    if typed is not None and cfg.get("output_dir") and Path(typed) != Path(cfg.output_dir):
        raise Stop(2, f"error: output_dir={cfg.output_dir} and hydra.run.dir={typed} name different folders; "
                      "output_dir moves everything the run writes, so give only one of them")


def _check_launcher(overrides: list[str], multirun: bool) -> None:
    """``launcher=slurm`` submits the jobs of a multirun; a single run would start on this machine."""
    if "launcher=slurm" not in overrides:
        return
    if not multirun:
        raise Stop(2, "error: launcher=slurm submits the jobs of a multirun to Slurm; without -m this run "
                      "would start here, on this machine. Add -m to submit it (one job is fine: "
                      "python train.py -m launcher=slurm ...), or leave launcher=slurm out to run here")
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise Stop(2, "error: launcher=slurm needs hydra-submitit-launcher: pip install -e \".[slurm]\"")
    if shutil.which("sbatch") is None:
        raise Stop(2, "error: launcher=slurm needs Slurm's sbatch on PATH (not found); run on a Slurm login "
                      "node or drop launcher=slurm")


def check_folder_quoting(overrides: list[str]) -> None:
    """A folder typed for ``resume=`` (``output_dir=``, ``hydra.run.dir=``) whose name Hydra would
    parse, such as a sweep job's ``0_optimizer.lr=1e-3,seed=1``, stops with the quoting that works,
    instead of Hydra's grammar error (or a silent sweep over the pieces of the name)."""
    parser = OverridesParser.create()
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") not in FOLDER_KEYS or not value:
            continue
        try:
            readable = not parser.parse_override(arg).is_sweep_override()
        except HydraException:  # the grammar error (OverrideParseException is one too)
            readable = False
        if not readable:
            raise Stop(2, f"error: {arg}: Hydra reads the ',' and '=' of a folder name as its own syntax; "
                          f"quote the folder for Hydra, inside quotes for the shell: "
                          f"{shlex.quote(_override(key, value))}")


def _record(cfg) -> dict:
    """The config as results.json records it (the protocol table by name)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["protocol"] = {"name": cfg.protocol.name}
    return config


def resume_folder_of(target: str, cfg, config: dict, template: str) -> Path:
    """The folder ``resume=last`` or ``resume=<folder>`` continues (:func:`zoft.rundir.resume_folder`,
    which writes nothing), checked against ``output_dir``."""
    folder = resume_folder(target, config, template)
    if cfg.get("output_dir") and Path(cfg.output_dir) != folder:
        raise RunFolderError(f"output_dir={cfg.output_dir} and resume={target} name different folders; "
                             "give only one of them")
    return folder


# --------------------------------------------------------------------------------- multirun


def _plan_sweep(argv: list[str], overrides: list[str], conf_dir: Path) -> list[str]:
    """Pin the sweep folder and leave the overrides every job shares out of job folder names."""
    _check_launcher(overrides, multirun=True)
    for key in ("output_dir", "resume"):
        value = next((a.split("=", 1)[1] for a in overrides if a.split("=", 1)[0].lstrip("+") == key), None)
        if value is not None and (key == "output_dir" or resume_target(value) is not None):
            raise Stop(2, f"error: {key}={value} names one run folder, but a multirun writes one folder per job "
                          f"under hydra.sweep.dir; to continue a sweep, rerun it with "
                          f"hydra.sweep.dir=<its folder> (each job resumes in its own folder)")
    parsed = OverridesParser.create().parse_overrides(overrides)
    constants = [o for o in parsed if not o.is_sweep_override()]
    try:
        cfg = _compose([o.input_line for o in constants], conf_dir)
    except Stop:
        return argv  # each job reports its own composition error
    problems = _sweep_problems(cfg, parsed)
    if problems:
        raise Stop(2, f"error: {ConfigError.of(problems)}")
    sweep_dir = _resolved(cfg, SWEEP_DIR_KEY)
    if sweep_dir is not None:
        argv = _set_override(argv, SWEEP_DIR_KEY, sweep_dir)
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    same = _same_in_every_job(parsed, dict(cfg.hydra.sweeper.get("params") or {}))
    added = [k for k in same if k not in excluded]
    if added:
        argv = _set_override(argv, EXCLUDE_KEY, "[" + ",".join(excluded + added) + "]")
    return argv


def _same_in_every_job(parsed, sweeper_params: dict) -> list[str]:
    """Keys whose override has one value in every job: a plain command-line override (it also
    replaces a sweep file's values), or a sweep file's parameter with a single value."""
    typed = {o.key_or_group for o in parsed if not o.is_hydra_override()}
    same = [o.key_or_group for o in parsed if not o.is_hydra_override() and not o.is_sweep_override()]
    params = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper_params.items()])
    same += [o.key_or_group for o in params if o.key_or_group not in typed and not o.is_sweep_override()]
    return same


# ------------------------------------------------------------------------------ shared pieces


def resume_command(script: str, hydra_cfg, run_dir: Path) -> str:
    """The shell command that continues a stopped run: the overrides it was started with, and
    ``resume=<its folder>`` (the folder's own timestamp is not reproduced by rerunning)."""
    dropped = {"resume", "output_dir", RUN_DIR_KEY, "hydra.mode"}  # hydra.mode: Hydra adds it
    typed = [o for o in [*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task]
             if o.split("=", 1)[0].lstrip("+~") not in dropped]
    args = [*typed, _override("resume", str(run_dir))]
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, args)])


def _set_override(argv: list[str], key: str, value: str) -> list[str]:
    """``argv`` with ``key=value`` in place of the one typed (``+``/``++`` forms too), or appended."""
    item = _override(key, value)
    out, replaced = [], False
    for arg in argv:
        if not arg.startswith("-") and arg.split("=", 1)[0].lstrip("+") == key:
            if not replaced:
                out.append(item)
            replaced = True
        else:
            out.append(arg)
    return out if replaced else out + [item]


def _override(key: str, value: str) -> str:
    """``key=value`` as one Hydra override token (:func:`_hydra_value`)."""
    return f"{key}={_hydra_value(value)}"


def _hydra_value(value: str) -> str:
    """A value as one Hydra override token: in double quotes when it holds characters Hydra would
    parse (a job folder name has ``,`` and ``=``). In Hydra's quoted strings a backslash is an
    escape only before a quote or at the end, so only those are doubled."""
    if value.startswith("[") or re.fullmatch(r"[\w./:~@%+-]*", value):
        return value
    return '"' + re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                        value) + '"'


def _resolved(cfg, key: str) -> Optional[str]:
    try:
        return str(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve before the job runs
        return None


def _compose(overrides: list[str], conf_dir: Path):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors, reported as one line
        message = _optimizer_key_message(overrides, conf_dir, err) or _composition_message(err)
        raise Stop(2, f"error: {message}") from None
    finally:
        GlobalHydra.instance().clear()
    if OmegaConf.is_missing(cfg, "optimizer"):  # `~optimizer`: the protocol lookups need one
        raise Stop(2, f"error: {optimizer_problems(cfg)[0]}")
    normalise(cfg, overrides)  # as run() does: the same record in the check and in the run
    return cfg


def _optimizer_key_message(overrides: list[str], conf_dir: Path, err: Exception) -> Optional[str]:
    """``optimizer.<key>=...`` for keys the chosen option does not have: the option's own message
    for each (its settings), the option learnt by composing the command without those overrides."""
    match = re.search(r"Could not override 'optimizer\.\w+'", str(err))
    if not match or "not in struct" not in " ".join([str(err), str(err.__cause__)]):
        return None
    typed = [o for o in overrides if o.lstrip("+~").startswith("optimizer.")]
    try:
        name = _compose([o for o in overrides if o not in typed], conf_dir).optimizer.get("name")
    except Stop:
        return None
    record = OPTIMIZERS.get(name)
    problems = unknown_settings(record, [o.lstrip("+~").split("=", 1)[0].split(".")[1] for o in typed]) if record else []
    return str(ConfigError.of(problems)) if problems else None


def _sweep_problems(cfg, parsed) -> list[str]:
    """Swept ``optimizer.<key>`` values (the command's or a sweep file's) that the chosen option
    does not have: each job would fail to compose (an optimizer swept itself is left to the jobs)."""
    if any(o.key_or_group == "optimizer" and o.is_sweep_override() for o in parsed):
        return []
    record = OPTIMIZERS.get(cfg.optimizer.get("name"))
    swept = [o.key_or_group for o in parsed if o.is_sweep_override()] + list(cfg.hydra.sweeper.get("params") or {})
    keys = [k.lstrip("+~").split(".")[1] for k in swept if k.lstrip("+~").startswith("optimizer.")]
    return unknown_settings(record, keys) if record else []


def _composition_message(err: Exception) -> str:
    """Hydra's message without its advice to add ``+`` (zoft's keys all exist, so a key Hydra does
    not know is a typo), with the closest key instead."""
    parts = [str(err)] + ([str(err.__cause__)] if err.__cause__ is not None else [])
    text = " ".join(" ".join(parts).split())
    text = re.sub(r"\s*To append to your config use \+\S+", "", text)
    text = re.sub(r"\s*full_key: .*?object_type=\S+", "", text)  # OmegaConf's internals
    match = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    if match:
        names = schema_fields_of(match.group(2))
        close = difflib.get_close_matches(match.group(1), names, n=1, cutoff=0.6)
        if close:
            text += f"; did you mean {close[0]}?"
    return text


def _run_dir(cfg) -> Optional[Path]:
    """The folder this run writes to: ``output_dir``, else Hydra's run folder with the clock read
    now, once (None when it cannot resolve before the job runs)."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    try:
        return Path(cfg.hydra.run.dir)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve before the job runs
        return None


def _check_folder(run_dir: Optional[Path], cfg, config: dict) -> None:
    if run_dir is None or int(os.environ.get("RANK", "0")) > 0:
        return  # torchrun ranks > 0 write nothing; rank 0 checks the folder
    existed = run_dir.is_dir()
    check_writable(run_dir)  # the config is valid by now: creating the folder is what Hydra does next
    if not existed:
        return
    busy = is_locked(run_dir)
    if busy:
        raise RunFolderError(busy)
    attempt = plan_attempt(run_dir, config, cfg.resume, cfg.redo)
    if attempt.action == "done":
        raise Stop(0, attempt.message)

