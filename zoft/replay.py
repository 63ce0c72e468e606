"""Rebuild MeZO-fine-tuned weights from the base model and a run's ``trajectory.bin``.

The trajectory header holds the run's config; the base model is loaded as in the run (or from
``base``: a model folder / Hub id, or a model-group YAML file), the method is applied (so the
trainable parameters are the same tensors, in the same order), the optimizer is rebuilt from the
config and every recorded step is applied with ``optimizer.replay(projected_grads)``.

By default it stops at the step whose weights the run reported: a run restores its best
checkpoint by dev at the end, and its ``results.json`` (beside the trajectory) names that step
(``training.best_step``). ``until_step="last"`` applies every recorded step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from zoft.config.optimizer_checks import normalise
from zoft.optim.trajectory import (Trajectory, TrajectoryError, check_names, check_until_step, describe_size,
                                   read_trajectory, replay_into, weights_checksum)
from zoft.outputs import write_json

log = logging.getLogger(__name__)


def _config_for(traj: Trajectory, base: Optional[str], device: Optional[str]):
    cfg = OmegaConf.create(traj.header.get("config") or {})
    if "model" not in cfg:
        raise TrajectoryError("the trajectory header has no run config; replay it with "
                              "zoft.optim.trajectory.replay_into on an optimizer you build yourself")
    if base:
        if base.endswith((".yaml", ".yml")):
            cfg.model = OmegaConf.merge(cfg.model, _model_yaml(base))
        else:
            cfg.model.path = base
    if device:
        cfg.model.device = device
    # A run recorded when one flat schema held every optimizer's keys: keep the option's own.
    normalise(cfg, typed=[])
    return cfg


def _model_yaml(base: str):
    """A model-group YAML given as ``--base``: a mapping of model settings (conf/model/*.yaml)."""
    if not Path(base).is_file():
        raise TrajectoryError(f"--base {base!r}: no such model config file")
    try:
        loaded = OmegaConf.load(base)
    except Exception as err:  # noqa: BLE001 - YAML syntax errors come in several types
        raise TrajectoryError(f"--base {base!r} is not valid YAML ({str(err).splitlines()[0]}); pass a model "
                              "config like conf/model/opt-13b.yaml, or a model folder") from None
    if not isinstance(loaded, DictConfig):
        raise TrajectoryError(f"--base {base!r} is not a mapping of model settings (like conf/model/opt-13b.yaml)")
    return loaded


def reported_step(trajectory: Path | str, traj: Trajectory) -> tuple[Optional[int], str]:
    """The number of steps to apply for the weights the run reported, and why (None: all).

    The run's ``results.json`` beside the trajectory names the best step it restored at the end;
    a run without dev evaluations (or that did not finish) reported its last step, or nothing.
    """
    if traj.cut_bytes:  # a killed run: check_until_step asks for an explicit --step
        return None, "the last whole step"
    results = Path(trajectory).parent / "results.json"
    try:
        training = json.loads(results.read_text()).get("training") or {}
    except (OSError, json.JSONDecodeError):
        return None, f"the last step ({len(traj)}): no readable results.json beside the trajectory names a best step"
    best = training.get("best_step")
    if best is None:
        return None, f"the last step ({len(traj)}): {results} names no best step (no dev evaluation, or unfinished)"
    return int(best), f"step {best} of {len(traj)}: the run's best dev step, whose weights it restored and reported"


def _steps_to_apply(trajectory: Path | str, traj: Trajectory, until_step: int | str | None) -> tuple[Optional[int], str]:
    """``until_step`` as a count (None: all) and the sentence saying which weights that is."""
    if until_step == "best":
        return reported_step(trajectory, traj)
    if until_step is None or until_step == "last":
        return None, f"the last step ({len(traj)})"
    if isinstance(until_step, str):
        raise TrajectoryError(f"until_step {until_step!r} is not valid; pass best, last or a number of steps")
    return until_step, f"step {until_step} of {len(traj)}"


def replay_run(trajectory: Path | str, base: Optional[str] = None, out: Optional[Path | str] = None,
               until_step: int | str | None = "best", device: Optional[str] = None,
               step_option: str = "until_step") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return the rebuilt model (and a summary); with ``out``, save it there (Hugging Face format).

    ``until_step``: ``"best"`` (default) the step whose weights the run reported
    (:func:`reported_step`), ``"last"`` (or None) every recorded step, or a number of steps to
    apply (0..the number recorded; required when the last record is cut). The file and the step
    are checked before any model is loaded, and errors call the value ``step_option`` (``--step``
    from the command line). The summary's ``rebuilt`` says which step was rebuilt.
    """
    traj = read_trajectory(trajectory)
    until_step, rebuilt = _steps_to_apply(trajectory, traj, until_step)
    check_until_step(traj, until_step, step_option)
    cfg = _config_for(traj, base, device)
    # Imported only now: transformers and the run machinery take seconds to import, and a bad
    # file or --step should be reported at once.
    from zoft.methods.registry import apply_method
    from zoft.models.loader import load_model
    from zoft.optim.build import build_optimizer
    from zoft.recipe import seed_everything

    seed_everything(cfg.seed)  # as in the run, before any method creates new parameters
    loaded = load_model(cfg.model)
    named = apply_method(loaded.model, cfg.method, loaded.family)
    check_names(traj, [n for n, _ in named])
    optimizer = build_optimizer(cfg.optimizer, named, seed=cfg.seed, model=loaded.model)
    recorded = traj.header.get("checksum")
    if recorded is not None:
        here = weights_checksum(p for g in optimizer.param_groups for p in g["params"])
        if abs(here - recorded) > 1e-4 * max(1.0, abs(recorded)):
            raise TrajectoryError(f"the base model's trainable weights differ from those the run started "
                                  f"from (checksum {here!r} vs recorded {recorded!r}); pass the right --base")
    applied = replay_into(optimizer, traj, until_step=until_step)
    summary = {"trajectory": str(trajectory), "steps_applied": applied, "rebuilt": rebuilt,
               **describe_size(traj, trajectory),
               "model": OmegaConf.to_container(cfg.model, resolve=True)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        loaded.model.save_pretrained(out / "model")
        loaded.tokenizer.save_pretrained(out / "model")
        write_json(out / "replay.json", summary)
        log.info("replayed %d steps into %s", applied, out / "model")
    return loaded.model, summary


# -- ``zoft replay`` ----------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    """Register ``zoft replay`` on the dispatcher of :mod:`zoft.cli`."""
    p = subparsers.add_parser("replay", help="rebuild MeZO-fine-tuned weights from a base model and a trajectory.bin")
    p.add_argument("--trajectory", required=True, help="a run's trajectory.bin")
    p.add_argument("--out", required=True, help="folder for the rebuilt model (out/model) and replay.json")
    p.add_argument("--base", default=None,
                   help="base model folder / Hub id, or a model-group YAML (default: the run's model config)")
    p.add_argument("--step", type=_step_value, default="best",
                   help="best (default): the weights the run reported, its best dev step (results.json "
                        "training.best_step); last: every recorded step; N: stop after N steps, 0..the number recorded")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the run's)")
    p.set_defaults(func=_replay_command)


def _step_value(text: str) -> int | str:
    """``--step``: best, last, or a number of steps (its range is checked against the file)."""
    if text in ("best", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not best, last or a number of steps") from None


def _replay_command(args) -> int:
    _, summary = replay_run(args.trajectory, base=args.base, out=args.out, until_step=args.step, device=args.device,
                            step_option="--step")
    hint = "; --step last rebuilds the last step" if args.step == "best" and summary["rebuilt"].startswith("step") else ""
    print(f"rebuilt {summary['rebuilt']}{hint}", file=sys.stderr)
    print(json.dumps({k: summary[k] for k in ("steps_applied", "rebuilt", "bytes", "bytes_per_step")}))
    return 0
