"""Training protocols as data: the table in ``conf/protocol/<name>.yaml`` and how a run reads it.

A run is keyed by (model family, optimizer, method, task, tiny). Every row of the table whose
``when`` matches the key applies, in file order, so general rows come first and specific rows
refine them. The config files write protocol fields as ``${protocol:trainer.max_steps}``; the
``protocol`` resolver below looks the value up, so ``python train.py ... --cfg job --resolve``
shows what a command runs. A value set anywhere else (the command line, an experiment preset,
a sweep file) replaces the interpolation and therefore always wins over the table.

:func:`describe` reports, for each protocol field, the value that runs and where it came from
(the table row's source, a preset, or the command line); :func:`settle` turns the lazy table
lookups into plain values once, at the start of a run.

The OPT-protocol task files write their sample sizes ``${protocol:task.num_train,1000}``: the
task's own size unless a row says otherwise, as the evaluation-only rows do (zero-shot and ICL
sample no training set: the original's icl.sh). Runs that train nothing describe only what they
use: the samples, the demonstrations and the precision, no training schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from zoft.config.choices import EVAL_ONLY
from zoft.config.groups import option_file
from zoft.errors import ZoftUserError
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.settings import objective_note
from zoft.optim.registry import OPTIMIZERS, is_zeroth_order_name

# The fields a protocol decides, with the words the protocol block uses for them.
FIELDS: dict[str, str] = {
    "task.num_train": "train set",
    "task.num_dev": "dev set",
    "trainer.max_steps": "steps",
    "trainer.num_epochs": "epochs",
    "trainer.batch_size": "batch",
    "optimizer.lr": "lr",
    "optimizer.eps": "eps",
    "optimizer.weight_decay": "weight decay",
    "trainer.lr_scheduler": "schedule",
    "trainer.num_evals": "evaluations",
    "trainer.select_by": "selection",
    "trainer.precision": "precision",
}
# The fields a run that trains nothing (zero-shot, ICL) uses.
EVAL_ONLY_FIELDS = ("task.num_train", "task.num_dev", "trainer.precision")
# Keys a row's ``when`` may test.
MATCH_KEYS = ("family", "optimizer", "method", "task", "tiny")


class ProtocolError(ZoftUserError, ValueError):
    """The protocol table is malformed or has no value for a field a run needs."""


@dataclass(frozen=True)
class RunKey:
    """What the protocol table is keyed by."""

    family: str  # causal (OPT, LLaMA) | masked (RoBERTa/BERT, masked-LM or seq-cls head)
    optimizer: str
    zeroth_order: bool
    method: str
    task: str
    tiny: bool  # a model built in code (no model.path): demo-sized budgets

    def label(self) -> str:
        size = ", tiny model" if self.tiny else ""
        if self.method in EVAL_ONLY:  # no optimizer runs
            return f"method={self.method} family={self.family}{size}"
        return f"method={self.method} optimizer={self.optimizer} family={self.family}{size}"


@dataclass(frozen=True)
class Entry:
    """One protocol field of a run: the value that runs and where it came from."""

    field: str
    value: Any
    source: str  # "table: <row source>", "command line", or "preset"
    grid: Optional[list] = None


def run_key(cfg: DictConfig) -> RunKey:
    """The table key of a composed config (reads only plain, non-protocol fields)."""
    kind = cfg.model.kind
    return RunKey(
        family="causal" if kind == "causal" else "masked",
        optimizer=str(cfg.optimizer.name),
        zeroth_order=is_zeroth_order_name(str(cfg.optimizer.name)),
        method=str(cfg.method.name),
        task=str(cfg.task.name),
        tiny=cfg.model.path is None,
    )


def _matches_one(key: str, wanted: Any, run: RunKey) -> bool:
    options = list(wanted) if isinstance(wanted, (list, tuple)) or OmegaConf.is_list(wanted) else [wanted]
    if key == "optimizer":
        kinds = {"zeroth-order": run.zeroth_order, "first-order": not run.zeroth_order}
        return any(kinds[o] if o in kinds else o == run.optimizer for o in options)
    if key == "tiny":
        return run.tiny in [bool(o) for o in options]
    return getattr(run, key) in options


def row_matches(when: Any, run: RunKey) -> bool:
    """True when every condition of ``when`` holds for ``run``."""
    for key, wanted in when.items():
        if key not in MATCH_KEYS:
            raise ProtocolError(f"protocol row condition {key!r} is not valid; use {', '.join(MATCH_KEYS)}")
        if not _matches_one(key, wanted, run):
            return False
    return True


def _get(values: Any, field: str) -> tuple[bool, Any]:
    group, name = field.split(".", 1)
    node = values.get(group) if values is not None else None
    if node is None or name not in node:
        return False, None
    return True, node[name]


_NO_DEFAULT = object()


def lookup(rows: Sequence[Any], run: RunKey, field: str, default: Any = _NO_DEFAULT) -> tuple[Any, str, Optional[list]]:
    """(value, source, grid) of ``field`` for ``run``: the last matching row that sets it wins;
    ``default`` (source "") when no row sets it and a default is given, else an error."""
    found, value, source = False, None, ""
    for row in rows:
        if not row_matches(row["when"], run):
            continue
        has, row_value = _get(row["values"], field)
        if has:
            found, value, source = True, row_value, row["source"]
    if not found and default is not _NO_DEFAULT:
        return default, "", None
    if not found:
        raise ProtocolError(f"the protocol table has no value of {field} for {run.label()}; "
                            f"set {field}=... on the command line, or add a row to conf/protocol/")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return value, source, search_grid(rows, run, field)


def search_grid(rows: Sequence[Any], run: RunKey, field: str) -> Optional[list]:
    """The paper's search grid of ``field`` for ``run`` (None: the table has none): the last
    matching row's grid, unless a later matching row sets the field's value without one (a grid
    belongs to the value of its own row). The protocol block shows it; sweeps/ runs it."""
    grid = None
    for row in rows:
        if not row_matches(row["when"], run):
            continue
        if _get(row["values"], field)[0]:
            grid = None
        if row["grid"] and field in row["grid"]:
            grid = list(row["grid"][field])
    return grid


def protocol_value(field: str, *default: Any, _root_: DictConfig) -> Any:
    """The ``protocol`` resolver: ``${protocol:trainer.max_steps}`` in a config file;
    ``${protocol:task.num_train,1000}``: 1000 unless a row of the table sets the field."""
    return lookup(_root_.protocol.rows, run_key(_root_), field, *default[:1])[0]


def _is_from_table(cfg: DictConfig, field: str) -> bool:
    group, name = field.split(".", 1)
    node = cfg[group]
    return name in node and OmegaConf.is_interpolation(node, name) and "protocol:" in str(
        OmegaConf.to_container(node, resolve=False)[name])


def _typed_keys(typed: Sequence[str]) -> set[str]:
    """Config keys set on the command line (``a.b=1``, ``+a.b=1``, ``++a.b=1``)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in typed if "=" in o}


def describe(cfg: DictConfig, typed: Optional[Sequence[str]] = None) -> list[Entry]:
    """Every protocol field of ``cfg`` with its value and origin (before :func:`settle`).

    ``typed``: the command line's overrides; a value not from the table is "command line" when
    typed there, else "preset" (an experiment, method preset or sweep file). Without a command
    line (``typed=None``: composed in code) such a value is just "set".
    """
    run, typed_keys, entries = run_key(cfg), _typed_keys(typed or ()), []
    for field in FIELDS:
        if field == "optimizer.eps" and not run.zeroth_order:
            continue
        if run.method in EVAL_ONLY and field not in EVAL_ONLY_FIELDS:
            continue  # nothing trains: no schedule to describe
        if field.startswith("task.") and cfg.task.name in LMBFF_TASKS:
            continue  # k-shot tasks: the k-shot files decide the samples (task.k)
        group, name = field.split(".", 1)
        if name not in cfg[group]:
            continue
        if _is_from_table(cfg, field):
            own = {"default": None} if group == "task" else {}  # a task file's size: its own value as default
            value, source, grid = lookup(cfg.protocol.rows, run, field, **own)
            if source == "":  # no row sets it: the value written in the task's own file
                value, source = OmegaConf.select(cfg, field), f"task file (conf/task/{cfg.task.name}.yaml)"
            else:
                source = f"table: {source}"
            entries.append(Entry(field, value, source, grid))
        else:
            origin = "set" if typed is None else "command line" if field in typed_keys else "preset"
            entries.append(Entry(field, OmegaConf.select(cfg, field), origin))
    if run.method not in EVAL_ONLY and run.optimizer in OPTIMIZERS:  # the optimizer's own settings
        own = [name for name in OPTIMIZERS[run.optimizer].own if name in cfg.optimizer]
        entries += [_optimizer_setting(cfg, run, name, typed, typed_keys) for name in own]
    return entries


def _optimizer_setting(cfg: DictConfig, run: RunKey, name: str, typed: Optional[Sequence[str]],
                       typed_keys: set[str]) -> Entry:
    """One of the optimizer's own settings (HiZOO's ``hessian_smooth``, Sparse MeZO's
    ``threshold_update``, ...) with its origin: the table, the command line, the optimizer's
    file (conf/optimizer/<name>.yaml), or a preset."""
    field = f"optimizer.{name}"
    if _is_from_table(cfg, field):
        value, source, grid = lookup(cfg.protocol.rows, run, field)
        return Entry(field, value, f"table: {source}", grid)
    if typed is None:
        origin = "set"
    elif field in typed_keys:
        origin = "command line"
    else:
        written = option_file("optimizer", run.optimizer)
        raw = OmegaConf.to_container(cfg.optimizer, resolve=False).get(name)
        origin = (f"optimizer file (conf/optimizer/{run.optimizer}.yaml)" if name in written and written[name] == raw
                  else "preset")
    return Entry(field, OmegaConf.select(cfg, field), origin)


def settle(cfg: DictConfig, typed: Optional[Sequence[str]] = None) -> list[Entry]:
    """Replace the table lookups of ``cfg`` by plain values and return :func:`describe`'s list.

    A run length or evaluation cadence set explicitly replaces the table's other spelling of it:
    ``trainer.max_steps`` set by you drops the table's ``num_epochs``, and ``trainer.eval_steps``
    set by you makes ``num_evals`` irrelevant (it is left as is).
    """
    entries = describe(cfg, typed)
    by_field = {e.field: e for e in entries}
    steps, epochs = by_field.get("trainer.max_steps"), by_field.get("trainer.num_epochs")
    if steps and epochs and not steps.source.startswith("table") and epochs.source.startswith("table"):
        cfg.trainer.num_epochs = None
        by_field["trainer.num_epochs"] = Entry("trainer.num_epochs", None, f"{steps.source} (trainer.max_steps set)")
    OmegaConf.resolve(cfg)
    return [by_field[e.field] for e in entries]


def format_block(cfg: DictConfig, entries: Sequence[Entry], typed: Optional[Sequence[str]] = None,
                 sizes: Optional[dict[str, int]] = None) -> str:
    """The protocol block printed before training: one line per field the run uses, with its
    origin; the evaluations as the loop will make them. ``typed``: the command line's overrides
    (default: this Hydra job's). ``sizes``: the examples actually drawn per split ("dev",
    "test"), once the data is loaded; an evaluation-only run's block then shows those (a split
    smaller than asked gives fewer), not the numbers asked for."""
    run = run_key(cfg)
    if run.method in EVAL_ONLY:
        return _evaluation_block(cfg, run, entries, sizes)
    typed = typed if typed is not None else typed_overrides()
    lines = [f"protocol ({cfg.protocol.name}) for {run.label()}:"]
    epochs = next((e.value for e in entries if e.field == "trainer.num_epochs"), None)
    no_dev = cfg.task.get("num_dev") == 0 and cfg.task.name not in LMBFF_TASKS
    forward_mode = run.optimizer in OPTIMIZERS and OPTIMIZERS[run.optimizer].capabilities.forward_mode
    for e in entries:
        if (e.field == "trainer.num_epochs" and e.value is None) or (e.field == "trainer.max_steps" and epochs):
            continue  # the run length is given once: epochs when set, else steps
        if e.field == "trainer.select_by" and no_dev:
            continue  # nothing to select from: the last weights are the run's
        if e.field == "optimizer.eps" and forward_mode:
            continue  # a forward gradient differentiates exactly (a jvp): no eps
        if e.field == "trainer.num_evals":
            lines.append(_evaluations_line(cfg, e, typed, no_dev))
            continue
        value = "-" if e.value is None else e.value
        grid = f"  grid {', '.join(map(str, e.grid))}" if e.grid else ""
        label = FIELDS.get(e.field) or e.field.split(".", 1)[1]  # an optimizer's own setting: its key
        lines.append(f"  {_cell(label, 13)}{_cell(str(value), 10)}{e.source}{grid}")
    if cfg.task.name in LMBFF_TASKS:  # the masked-LM family picks its objective from the model kind
        lines.append(objective_note(cfg, None if typed is None else _typed_keys(typed)))
    return "\n".join(lines)


def _cell(text: str, width: int) -> str:
    """``text`` padded to a column of ``width``; a longer text keeps one space after it."""
    return f"{text:<{width}}" if len(text) < width else text + " "


def evaluation_count(steps: int, eval_steps: Optional[int], num_evals: int) -> tuple[int, int]:
    """(steps between dev evaluations, evaluations) of a run of ``steps`` steps, as the training
    loop makes them (:func:`zoft.train.loop.eval_interval`): every ``eval_steps`` steps when
    set, else ``num_evals`` spread evenly; and always one at the last step. Interval 0: only
    that one."""
    every = eval_steps if eval_steps is not None else (math.ceil(steps / num_evals) if num_evals and steps else 0)
    if not every or not steps:
        return 0, 1 if steps else 0
    return every, steps // every + (1 if steps % every else 0)


def _evaluations_line(cfg: DictConfig, num_evals: Entry, typed: Optional[Sequence[str]], no_dev: bool) -> str:
    """The dev evaluations the run makes, counted as the loop counts them, and what decides them:
    ``trainer.eval_steps`` when set (``num_evals`` is then unused), else ``num_evals``."""
    trainer = cfg.trainer
    before = ", and once before training" if trainer.get("eval_before_training") else ""
    if no_dev:
        return f"  {'evaluations':<13}{'0':<10}no dev set (task.num_dev=0)"
    eval_steps = trainer.get("eval_steps")
    if eval_steps is not None:
        origin = "set" if typed is None else "command line" if "trainer.eval_steps" in _typed_keys(typed) else "preset"
        source = f"trainer.eval_steps={eval_steps} ({origin})"
    else:
        source = f"trainer.num_evals={num_evals.value} ({num_evals.source})"
    if trainer.get("num_epochs") is not None and eval_steps is None:  # steps depend on the train set's size
        n = num_evals.value
        when = "at the end" if not n else "once per epoch" if n == trainer.num_epochs else f"every 1/{n} of training"
        return f"  {'evaluations':<13}{str(max(n, 1)):<10}{when}{before}: {source}"
    steps = trainer.max_steps
    every, count = evaluation_count(steps, eval_steps, num_evals.value)
    if not every:
        when = "at the end"
    elif count == 1:
        when = f"at the end (step {steps})"
    elif count <= 6:
        when = "at steps " + ", ".join(str(s) for s in [*range(every, steps + 1, every), steps][:count])
    else:
        when = f"every {every} steps" + (f" and at step {steps}" if steps % every else "")
    return f"  {'evaluations':<13}{str(count):<10}{when}{before}: {source}"


def _evaluation_block(cfg: DictConfig, run: RunKey, entries: Sequence[Entry],
                      sizes: Optional[dict[str, int]] = None) -> str:
    """The block of a run that trains nothing: what it evaluates on and with, no schedule; with
    ``sizes``, the dev and test examples really drawn."""
    lines = [f"protocol ({cfg.protocol.name}) for {run.label()}: evaluation only, nothing trains"]
    for e in entries:
        value, source = e.value, e.source
        if e.field == "task.num_dev" and sizes is not None and sizes["dev"] < e.value:
            value, source = sizes["dev"], f"{source}; {e.value} asked, the train split has only {sizes['dev']}"
        lines.append(f"  {FIELDS[e.field]:<13}{str(value):<10}{source}")
    if cfg.task.name not in LMBFF_TASKS:
        asked = cfg.task.num_test
        if sizes is not None and sizes["test"] < asked:
            lines.append(f"  {'test set':<13}{str(sizes['test']):<10}the task's whole test split; task.num_test={asked} "
                         f"asked, the split has only {sizes['test']}")
        else:
            lines.append(f"  {'test set':<13}{str(asked):<10}sampled from the task's test split")
    if run.method == "icl":
        lines.append(f"  {'demos':<13}{str(cfg.method.num_demos):<10}per test example, drawn afresh from the whole "
                     "train split (method.num_demos)")
    if cfg.task.name in LMBFF_TASKS:  # zero-shot scores with the objective the model kind picks
        typed = typed_overrides()
        lines.append(objective_note(cfg, None if typed is None else _typed_keys(typed)))
    return "\n".join(lines)


def check_evaluation_sample(cfg: DictConfig, sizes: dict[str, int], typed: Optional[Sequence[str]]) -> None:
    """Refuse an evaluation-only run (zero-shot, ICL) whose ``task.num_dev`` or ``task.num_test``
    typed on the command line is larger than the split it is drawn from (``sizes``: the examples
    drawn, the whole split when it is smaller). A size from a task file, the table or a preset is
    used as far as the data goes, and the block says how many (:func:`format_block`)."""
    if run_key(cfg).method not in EVAL_ONLY or cfg.task.name in LMBFF_TASKS or typed is None:
        return
    from zoft.tasks.sampling import SamplingError  # the data layer's error (this module stays light)

    typed_keys = _typed_keys(typed)
    if "task.num_dev" in typed_keys and sizes["dev"] < cfg.task.num_dev:
        raise SamplingError(f"task.num_dev={cfg.task.num_dev} is larger than the train split it is drawn from "
                            f"({sizes['dev']} examples); use task.num_dev<={sizes['dev']}")
    if "task.num_test" in typed_keys and sizes["test"] < cfg.task.num_test:
        raise SamplingError(f"task.num_test={cfg.task.num_test} is larger than the task's test split "
                            f"({sizes['test']} examples); use task.num_test<={sizes['test']}")


def as_record(entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
    """The ``protocol`` section of results.json: field -> value, source (and grid)."""
    record: dict[str, dict[str, Any]] = {}
    for e in entries:
        record[e.field] = {"value": e.value, "source": e.source}
        if e.grid:
            record[e.field]["grid"] = e.grid
    return record


def typed_overrides() -> Optional[list[str]]:
    """The overrides typed on the command line of this Hydra job (None outside a Hydra app)."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return None
