"""One kernel run: inputs -> kernels (computed, cached or loaded) -> solver -> metrics.

Called by the recipe (:mod:`zoft.recipe`) when ``mode=kernel``. The training set is always the outer
(row) set; kernels are taken between it and each of train, dev and test.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from zoft.kernel.compute import compute_kernel, function_values
from zoft.kernel.distributed import rank_and_world
from zoft.kernel.function import KernelInputError, LabelWordLogits, PromptInputs, targets_for
from zoft.kernel.params import ParamSubset, split_params
from zoft.kernel.solvers import SolverOptions, accuracy, solve
from zoft.kernel.store import cache_key, kernel_file, load_kernel, save_kernel, weights_fingerprint

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def inputs_from_items(items: Sequence[Any], label_word_ids: Sequence[int], mask_id: int, pad_id: int) -> PromptInputs:
    """PromptInputs from prepared masked-LM items (``input_ids``, ``mask_pos``, ``label`` and
    optional ``token_type_ids`` attributes, as the ``mlm-prompt`` objective's items have)."""
    if any(getattr(it, "mask_pos", None) is None for it in items):
        raise KernelInputError("mode=kernel needs prompts with a mask token (task.objective=mlm-prompt), "
                               "not the template-free cls-head objective")
    segments = [list(it.token_type_ids) for it in items] if items and getattr(items[0], "token_type_ids", None) is not None else None
    inputs = PromptInputs.from_token_lists([list(it.input_ids) for it in items], [int(it.label) for it in items],
                                           list(label_word_ids), mask_id=mask_id, pad_id=pad_id, token_type_ids=segments)
    inputs.mask_pos = torch.tensor([int(it.mask_pos) for it in items], dtype=torch.long)  # the encoder's own index
    return inputs


def subset_from(cfg: DictConfig) -> ParamSubset:
    k = cfg.kernel
    return ParamSubset(exclude_embeddings=k.exclude_embeddings, exclude_head=k.exclude_head,
                       only_biases=k.only_biases, exclude_first_layers=k.exclude_first_layers, lora_only=k.lora_only)


def _published_targets(targets: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Targets of a loaded file as solver targets: (N, 1) in {-1, +1} or one-hot (N, C)."""
    t = targets.detach().to(torch.float64)
    if t.dim() == 2 and t.shape[1] == num_outputs:
        return t
    t = t.reshape(-1)
    if num_outputs == 1:
        return (2 * t - 1 if t.min() >= 0 else t).unsqueeze(1)
    return torch.nn.functional.one_hot(t.long(), num_outputs).to(torch.float64)


class KernelSource:
    """Kernels and initial logits for each split: from ``kernel.load_dir``, from the keyed cache,
    or computed (and then cached unless no cache folder is set)."""

    def __init__(self, cfg: DictConfig, fn: LabelWordLogits, params, fixed, train: PromptInputs, device, run_dir: Path):
        self.cfg, self.fn, self.params, self.fixed, self.train, self.device = cfg, fn, params, fixed, train, device
        k = cfg.kernel
        self.folder = Path(k.cache_dir) if k.cache_dir else run_dir / "kernels"
        self.identity = {
            "model": {key: cfg.model[key] for key in ("name", "path", "dtype", "init_seed")}
            | {"tiny": OmegaConf.to_container(cfg.model.tiny)},
            "weights": weights_fingerprint({**params, **fixed}),
            "method": OmegaConf.to_container(cfg.method),
            "formula": k.formula,
            "binary": fn.binary,
            "subset": dataclasses.asdict(subset_from(cfg)),
            "train_inputs": train.fingerprint(),
        }
        self.events: dict[str, str] = {}

    def _key(self, other: PromptInputs) -> tuple[str, dict]:
        parts = dict(self.identity, other_inputs=other.fingerprint())
        return cache_key(parts), parts

    def kernel(self, mode: str, other: PromptInputs) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(kernel, targets from a loaded file or None) for train x ``other``."""
        k = self.cfg.kernel
        asym = k.formula == "asymmetric_signgd"
        if k.load_dir:
            path = kernel_file(Path(k.load_dir), mode, k.load_task or self.cfg.task.name)
            kernel, targets = load_kernel(path, asymmetric=asym)
            self.events[mode] = f"loaded {path}"
            return kernel.to(torch.float64), targets
        key, parts = self._key(other)
        path = kernel_file(self.folder, mode, self.cfg.task.name, key=key)
        if path.is_file() and not k.overwrite:
            self.events[mode] = f"cached {path}"
            return load_kernel(path, asymmetric=asym)[0], None
        started = time.time()
        kernel = compute_kernel(self.fn, self.params, self.fixed, self.train, other, k.formula,
                                k.outer_batch_size, k.inner_batch_size, self.device)
        log.info("%s kernel %s computed in %.1fs", mode, tuple(kernel.shape), time.time() - started)
        if rank_and_world()[0] == 0:
            save_kernel(path, kernel, other.labels.clone(), sidecar=parts)
        self.events[mode] = f"computed {path}"
        return kernel, None

    def initial_logits(self, mode: str, inputs: PromptInputs) -> torch.Tensor:
        """f0 of the pre-trained model on ``inputs`` (N, C) (loaded from ``{mode}_logits_*`` with load_dir)."""
        k = self.cfg.kernel
        if k.load_dir:
            path = kernel_file(Path(k.load_dir), mode, k.load_task or self.cfg.task.name, kind="logits")
            if path.is_file():
                return torch.load(path, map_location="cpu", weights_only=True)[0].to(torch.float64)
        logits = function_values(self.fn, inputs, k.inner_batch_size, self.device)
        if not k.load_dir and rank_and_world()[0] == 0:
            save_kernel(kernel_file(self.folder, mode, self.cfg.task.name, key=self._key(inputs)[0], kind="logits"),
                        logits, inputs.labels.clone())
        return logits


def run_kernel(cfg: DictConfig, model: torch.nn.Module, splits: dict[str, Optional[PromptInputs]],
               device: torch.device, run_dir: Path, metrics: dict[str, float]) -> dict[str, Any]:
    """Kernels, solver fit on train, predictions for train/dev/test; fills ``metrics`` with
    ``{split}_accuracy`` and ``{split}_loss`` (the solver's loss) and returns a summary.

    Under torchrun the process group is the run's (:func:`zoft.distributed.setup`, which
    honours ``distributed.backend``); the training rows are then sharded over the ranks."""
    k = cfg.kernel
    train = splits["train"]
    if train is None or len(train) == 0:
        raise KernelInputError("mode=kernel needs training examples (task.num_train > 0)")
    binary = k.binary if k.binary is not None else train.num_classes == 2
    fn = LabelWordLogits(model, train.label_word_ids, binary=binary)
    params, fixed = split_params(fn, subset_from(cfg))
    source = KernelSource(cfg, fn, params, fixed, train, device, run_dir)
    opts = SolverOptions(regularization=k.regularization, adjust_for_init=k.adjust_for_init,
                         f0_scaling=k.f0_scaling, gamma=k.gamma, asym_lambda=k.asym_lambda)
    started = time.time()
    outputs = 1 if binary else train.num_classes
    kernels, targets = {}, {}
    for mode in SPLITS:
        inputs = splits.get(mode)
        if inputs is None or len(inputs) == 0:
            continue
        kernels[mode], loaded_targets = source.kernel(mode, inputs)
        targets[mode] = (_published_targets(loaded_targets, outputs) if loaded_targets is not None
                         else targets_for(inputs, binary))
        if kernels[mode].shape[-1] != outputs:
            raise KernelInputError(f"{mode} kernel has {kernels[mode].shape[-1]} logits per example but the run "
                                   f"expects {outputs} (kernel.binary={binary}); set kernel.binary to match the file")
    f0 = {m: source.initial_logits(m, splits[m]) for m in kernels} if k.adjust_for_init else {}
    solver_metrics = {}
    for mode in kernels:
        result = solve(k.solver, kernels["train"], kernels[mode], targets["train"], targets[mode], opts,
                       f0_t=f0.get("train"), f0_x=f0.get(mode))
        metrics[f"{mode}_accuracy"] = accuracy(result.predictions, targets[mode])
        metrics[f"{mode}_loss"] = result.loss
        solver_metrics.update({f"{mode}_{name}": v for name, v in result.metrics.items()})
    return {
        "formula": k.formula, "solver": k.solver, "binary": binary,
        "grad_dim": sum(p.numel() for p in params.values()),
        "shapes": {m: list(v.shape) for m, v in kernels.items()},
        "files": source.events, "solver_metrics": solver_metrics,
        "seconds": round(time.time() - started, 3),
    }


def run_from_objective(cfg: DictConfig, loaded: Any, objective: Any, data: Any, run_dir: Path,
                       metrics: dict[str, float]) -> dict[str, Any]:
    """The ``mode=kernel`` branch of a run: encode the splits with the task's masked-LM prompt
    objective (the same token ids, mask index and label words it trains and evaluates with), then
    :func:`run_kernel`."""
    label_ids = getattr(objective, "label_ids", None)
    if label_ids is None:
        raise KernelInputError(f"mode=kernel needs a masked-LM prompt task (objective mlm-prompt, e.g. "
                               f"task=sst-2-kshot); task {cfg.task.name!r} uses {type(objective).__name__}")
    tok = loaded.tokenizer
    splits = {}
    for name in SPLITS:
        examples = getattr(data, name)
        items = objective.prepare(examples, train=name == "train") if examples else []
        splits[name] = inputs_from_items(items, [int(i) for i in label_ids], tok.mask_token_id, tok.pad_token_id) if items else None
    return run_kernel(cfg, loaded.model, splits, loaded.device, run_dir, metrics)
