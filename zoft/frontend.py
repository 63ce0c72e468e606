"""The checks ``python train.py`` makes before Hydra starts: Hydra writes the run folder's
``.hydra/`` and log before the job function runs, so a command that must not run (a bad value,
a folder in use or holding another run, a completed run) is stopped here, with the folder
untouched. Nothing here imports torch or transformers: a bad command fails in about a second.

Multirun commands (``-m``) and Hydra's own informational flags (``--cfg``, ``--help``, ...) are
left to Hydra; each multirun job validates itself before writing into its own folder.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from zoft.config.bounds import schema_fields_of
from zoft.config.preflight import unknown_group_choice
from zoft.config.protocol import settle
from zoft.config.store import register_configs
from zoft.config.validate import validate
from zoft.errors import ZoftUserError
from zoft.rundir import RunFolderError, check_writable, is_locked, plan_attempt

HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
               "--shell-completion", "-sc", "--resolve", "--package", "-p", "--version", "--experimental-rerun")


class Stop(Exception):
    """The command ends here: ``code`` is the exit status, ``message`` what to print."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def preflight(argv: Sequence[str], conf_dir: Path) -> None:
    """Raise :class:`Stop` when the command must not start (exit 2) or has nothing to do (0)."""
    problem = unknown_group_choice(argv, conf_dir)
    if problem:
        raise Stop(2, f"error: {problem}")
    if any(a.split("=", 1)[0] in HYDRA_FLAGS for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    cfg = _compose(overrides, conf_dir)
    run_dir = _run_dir(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        settle(cfg, overrides)
        validate(cfg)
        _check_folder(run_dir, cfg)
    except ZoftUserError as err:
        raise Stop(2, f"error: {err}") from None


def _compose(overrides: list[str], conf_dir: Path):
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors, reported as one line
        raise Stop(2, f"error: {_composition_message(err)}") from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


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
    """The folder this run will write to, when it does not depend on the clock."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    try:
        return Path(cfg.hydra.run.dir)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve before the job runs
        return None


def _check_folder(run_dir: Optional[Path], cfg) -> None:
    if run_dir is None or int(os.environ.get("RANK", "0")) > 0:
        return  # torchrun ranks > 0 write nothing; rank 0 checks the folder
    existed = run_dir.is_dir()
    check_writable(run_dir)  # the config is valid by now: creating the folder is what Hydra does next
    if not existed:
        return
    busy = is_locked(run_dir)
    if busy:
        raise RunFolderError(busy)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["protocol"] = {"name": cfg.protocol.name}
    attempt = plan_attempt(run_dir, config, cfg.resume, cfg.redo)
    if attempt.action == "done":
        raise Stop(0, attempt.message)

