"""What each paper grid in ``sweeps/*.yaml`` must hold, derived from the protocol table.

A sweep's grid is, field by field, the protocol table's grid (``grid:`` in conf/protocol/paper.yaml,
the one the protocol block shows) for the config the sweep composes, plus what the table does not
carry, written here: the data of the RoBERTa grids (k and the five data seeds) and the grids that
do not come from Tables 15-16 (Table 3's non-differentiable objective, Table 4's ablation, the
estimators' own sources). A field written here replaces the table's grid of that field.

The sweep files stay what Hydra runs (``python train.py -m +sweep=<name>``), so their numbers are
written there too; ``tests/config/test_sweeps.py`` checks that each one expands to exactly
:func:`sweep_grid`, so a sweep cannot drift from the table the protocol block shows.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from zoft.config.protocol import run_key, search_grid

DATA_SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's five k-shot samples (paper Table 15)
K_SHOT = (16, 512)  # examples per class (paper Table 15)
_KSHOT_DATA = {"task.k": K_SHOT, "task.sample_seed": DATA_SEEDS}

# Sweep name -> the fields of its grid that the protocol table does not give (empty: the table's
# grid alone). Sources are in each sweep file's header.
BEYOND_TABLE: dict[str, dict[str, tuple]] = {
    # OPT, paper Table 16: the table's grids (SQuAD/DROP rows for the -qa sweeps)
    "opt-mezo": {}, "opt-mezo-qa": {}, "opt-mezo-prefix": {}, "opt-mezo-prefix-qa": {},
    "opt-mezo-lora": {}, "opt-mezo-lora-qa": {}, "opt-ft": {}, "opt-head": {},
    # Non-differentiable objective, paper Table 3 (OPT on SQuAD)
    "opt-nondiff-mezo": {"optimizer.lr": (1e-6, 5e-6, 1e-5)},
    "opt-nondiff-mezo-prefix": {"optimizer.lr": (1e-1, 5e-2, 1e-2)},
    # RoBERTa-large, paper Table 15: the table's grids on k = 16 and 512 and the five data seeds
    "roberta-mezo": _KSHOT_DATA, "roberta-mezo-prefix": _KSHOT_DATA, "roberta-mezo-lora": _KSHOT_DATA,
    "roberta-mezo-adam": _KSHOT_DATA, "roberta-ft-prefix": _KSHOT_DATA, "roberta-ft-lora": _KSHOT_DATA,
    "roberta-nondiff-mezo": {"task.k": (512,), "task.sample_seed": DATA_SEEDS},
    "roberta-ft-adam-k16": {"task.k": (16,), "task.sample_seed": DATA_SEEDS},
    "roberta-ft-sgd-k16": {"task.k": (16,), "task.sample_seed": DATA_SEEDS},
    # FT at k = 512: larger batches than the table's k = 16 grid
    "roberta-ft-adam-k512": {"trainer.batch_size": (8, 16, 32), "task.k": (512,), "task.sample_seed": DATA_SEEDS},
    "roberta-ft-sgd-k512": {"trainer.batch_size": (8, 16, 32), "task.k": (512,), "task.sample_seed": DATA_SEEDS},
    # Table 4's ablation: 10K forward passes (5,000 steps), k = 16
    "roberta-ablation": {"trainer.batch_size": (16, 64), "optimizer.lr": (1e-5, 1e-6, 1e-7),
                         "optimizer.eps": (1e-3, 1e-5), "optimizer.weight_decay": (0, 0.1),
                         "task.k": (16,), "task.sample_seed": DATA_SEEDS},
    # The MeZO paper's Appendix B variants on Table 15's MeZO grid, k = 16
    "roberta-mezo-norm": {"optimizer.zo_variant": ("param_norm", "grad_norm"), "task.sample_seed": DATA_SEEDS},
    # zoft.optim.estimators on OPT: the table's rows (ZO-Bench, LOZO, MeZO's OPT grid) ...
    "opt-zo-sgd-sign": {}, "opt-zo-sgd-mmt": {}, "opt-zo-sgd-cons": {}, "opt-forward-grad": {},
    "opt-sparse-mezo": {}, "opt-mezo-one-point": {}, "opt-mezo-nspsa": {}, "opt-subzero": {}, "opt-lozo": {},
    # ... or a grid around the authors' one value, whose row sets the LR without a grid
    "opt-fzoo": {"optimizer.lr": (1e-4, 5e-5, 2.5e-5)},
    "opt-hizoo": {"optimizer.lr": (1e-6, 1e-7)},
    "opt-hizoo-l": {"optimizer.lr": (1e-6, 1e-7)},
}
NOT_GRIDS = ("optuna-mezo",)  # a search space for Hydra's Optuna sweeper, not a paper grid


def table_fields(rows: Any) -> list[str]:
    """Every field some row of the protocol table has a grid of."""
    return sorted({field for row in rows if row["grid"] for field in row["grid"]})


def table_grid(cfg: DictConfig) -> dict[str, list]:
    """The protocol table's grid of every field for the composed config ``cfg`` (the grids its
    protocol block shows), field -> values."""
    run, rows = run_key(cfg), cfg.protocol.rows
    grids = {field: search_grid(rows, run, field) for field in table_fields(rows)}
    return {field: values for field, values in grids.items() if values is not None}


def sweep_grid(name: str, cfg: DictConfig) -> dict[str, list]:
    """The grid sweep ``name`` runs, field -> values: :func:`table_grid` of ``cfg`` (a composed job
    of the sweep, on the task of its usage line) with ``BEYOND_TABLE[name]`` on top."""
    return {**table_grid(cfg), **{field: list(values) for field, values in BEYOND_TABLE[name].items()}}
