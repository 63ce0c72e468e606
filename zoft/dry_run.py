"""``python train.py <overrides> --dry-run``: the protocol block of the run the command would
start (every training setting with where its value comes from: the protocol table's row, a
preset or the command line), after the same checks as a real run; then exit. Nothing is loaded
and no folder is created: it takes about as long as composing the config.

``--cfg job --resolve`` (Hydra's) shows the whole composed config instead, the protocol table
included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from omegaconf import open_dict

from zoft.config.preflight import unknown_group_choice
from zoft.config.protocol import format_block, settle
from zoft.config.validate import validate
from zoft.errors import ZoftUserError
from zoft.frontend import Stop, _compose, _record, check_folder_quoting, resume_folder_of
from zoft.rundir import resume_target, run_dir_template

FLAG = "--dry-run"


def dry_run(argv: Sequence[str], conf_dir: Path) -> str:
    """The text ``--dry-run`` prints for the command ``argv`` (without the flag itself); a
    command that would not start raises :class:`zoft.frontend.Stop` (exit 2), as a real run does."""
    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise Stop(2, f"error: {FLAG} shows one run and takes overrides only, not {' '.join(flags)}"
                      + ("; drop -m and give each key one value" if {"-m", "--multirun"} & set(flags) else ""))
    problem = unknown_group_choice(list(argv), conf_dir)
    if problem:
        raise Stop(2, f"error: {problem}")
    overrides = list(argv)
    check_folder_quoting(overrides)
    cfg = _compose(overrides, conf_dir)
    template = run_dir_template(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        entries = settle(cfg, overrides)
        validate(cfg)
        resumed = _resumed_folder(cfg, template)
    except ZoftUserError as err:
        raise Stop(2, f"error: {err}") from None
    where = (f"; it would continue {resumed}" if resumed is not None
             else f"; it would write to {cfg.output_dir}" if cfg.get("output_dir") else "")
    return (format_block(cfg, entries, overrides)
            + f"\ndry run: {cfg.model.name} on {cfg.task.name}; nothing was loaded or written{where} "
              f"(drop {FLAG} to train)")


def _resumed_folder(cfg, template: str) -> Optional[Path]:
    """The folder ``resume=last`` / ``resume=<folder>`` names, found as a real run finds it (it
    only reads): a folder that does not exist stops the dry run with the real run's message."""
    target = resume_target(cfg.resume)
    return None if target is None else resume_folder_of(target, cfg, _record(cfg), template)
