"""The optimizer registry: one record per ``optimizer=<name>`` option, carrying its properties.

This is the only place that says which optimizers exist and which of them are zeroth-order
(forward passes only, no ``.grad`` from backprop). Config validation, the protocol table, the
LM-BFF checks and the Hugging Face ``Trainer`` integration all read these records. The module
imports nothing heavy, so it can be read before torch is loaded; the constructors live in
:mod:`zoft.optim.build`, keyed by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimizerRecord:
    """What zoft knows about one optimizer option.

    ``zeroth_order``: the update comes from loss values only (MeZO and its successors), so it
    also works with non-differentiable objectives and never builds an autograd graph.
    ``parameter_state``: parameter-sized tensors the optimizer keeps (besides the weights), as
    said in the memory tables; "none" means inference-level memory.
    ``forward_mode``: the update differentiates the loss by forward-mode AD (forward gradient):
    forward passes only, like the zeroth-order optimizers, but the objective must be
    differentiable (``task.objective=metric`` is refused).
    ``batched_probes``: the probes of a step can run as one batched forward
    (``optimizer.probe_batch`` > 1, :mod:`zoft.optim.batched`).
    ``settings``: the optimizer's own ``optimizer.*`` keys, those its ``conf/optimizer/<name>.yaml``
    sets beyond the ones every optimizer shares (lr, eps, weight_decay, the directions, the
    perturbation, clipping); the protocol block shows them.
    """

    name: str
    zeroth_order: bool
    summary: str
    parameter_state: str = "none"
    forward_mode: bool = False
    batched_probes: bool = False
    settings: tuple[str, ...] = ()


OPTIMIZERS: dict[str, OptimizerRecord] = {}


# The keys every optimizer file may set (conf/optimizer/mezo.yaml's); the others are an optimizer's own.
SHARED_SETTINGS = ("name", "lr", "eps", "weight_decay", "n_directions", "direction", "perturbation", "max_grad_norm")


def register_optimizer(record: OptimizerRecord) -> OptimizerRecord:
    """Add ``record`` to the registry (a name may be registered once)."""
    if record.name in OPTIMIZERS:
        raise ValueError(f"optimizer {record.name!r} is registered twice")
    OPTIMIZERS[record.name] = record
    return record


def optimizer_record(name: str) -> OptimizerRecord:
    """The record of ``name``; a ``KeyError`` naming the valid options when there is none."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise KeyError(f"optimizer.name={name!r} is not valid; choose one of {', '.join(OPTIMIZERS)}") from None


def zeroth_order_names() -> tuple[str, ...]:
    """Every registered zeroth-order optimizer, in registration order."""
    return tuple(name for name, record in OPTIMIZERS.items() if record.zeroth_order)


def takes_metric_objective(name: str) -> bool:
    """True when ``name`` can train on a non-differentiable objective (loss values only)."""
    record = OPTIMIZERS.get(name)
    return bool(record and record.zeroth_order and not record.forward_mode)


def is_zeroth_order_name(name: str) -> bool:
    """True when ``name`` is a registered zeroth-order optimizer."""
    record = OPTIMIZERS.get(name)
    return bool(record and record.zeroth_order)


register_optimizer(OptimizerRecord("sgd", False, "torch.optim.SGD with backprop", "gradient (+ momentum buffer)",
                                   settings=("momentum",)))
register_optimizer(OptimizerRecord("adam", False, "torch.optim.AdamW with backprop (the paper's FT)",
                                   "gradient + two moments",
                                   settings=("betas", "adam_eps")))
register_optimizer(OptimizerRecord("mezo", True, "MeZO: zeroth-order SGD with seeded in-place perturbations", batched_probes=True))
register_optimizer(OptimizerRecord("mezo-adam", True, "the MeZO estimate fed to AdamW (paper Table 7)",
                                   "gradient + two moments", batched_probes=True,
                                   settings=("betas", "adam_eps")))
register_optimizer(OptimizerRecord("mezo-sgd", True, "the MeZO estimate fed to SGD with momentum",
                                   "gradient + momentum buffer", batched_probes=True,
                                   settings=("momentum",)))
register_optimizer(OptimizerRecord("zo-sgd-sign", True, "ZO-SGD-Sign (ZO-Bench): sign step on the MeZO estimate "
                                   "(sign_of=projected_grad: ZO-Bench's code, sign(g) z)", batched_probes=True,
                                   settings=("sign_of",)))
register_optimizer(OptimizerRecord("zo-sgd-mmt", True, "ZO-SGD-MMT (ZO-Bench): heavy-ball momentum on the MeZO "
                                   "estimate, buffer updated from the seeds", "momentum buffer", batched_probes=True,
                                   settings=("momentum",)))
register_optimizer(OptimizerRecord("zo-sgd-cons", True, "ZO-SGD-Cons (ZO-Bench): the MeZO step only if it lowers "
                                   "the batch loss (2n+3 forward passes)"))
register_optimizer(OptimizerRecord("fzoo", True, "FZOO: N one-sided Rademacher probes, step normalised by the "
                                   "std of the N losses (N+1 forward passes)", batched_probes=True))
register_optimizer(OptimizerRecord("hizoo", True, "HiZOO: diagonal-Hessian-shaped perturbation and "
                                   "preconditioned step (3 forward passes)", "diagonal Hessian (float32)",
                                   settings=("hessian_smooth",)))
register_optimizer(OptimizerRecord("sparse-mezo", True, "Sparse MeZO: MeZO on the small-magnitude weights "
                                   "(thresholds fixed or every step, mask recomputed per pass)", batched_probes=True,
                                   settings=("sparsity", "threshold_update")))
register_optimizer(OptimizerRecord("mezo-one-point", True, "the MeZO paper's one-point (residual-feedback) "
                                   "estimator, one forward pass per step"))
register_optimizer(OptimizerRecord("mezo-nspsa", True, "n-SPSA with the MeZO paper's sample scheduler "
                                   "(constant/linear n, scale_lr_with_samples)", batched_probes=True,
                                   settings=("sample_scheduler", "sample_steps", "scale_lr_with_samples")))
register_optimizer(OptimizerRecord("lozo", True, "LOZO: rank-r perturbations U V^T of each matrix, V redrawn "
                                   "every nu steps", "factors only (r (m + n) per matrix)", batched_probes=True,
                                   settings=("lowrank_rank", "lowrank_interval")))
register_optimizer(OptimizerRecord("subzero", True, "SubZero: perturbations U Z V^T in random orthonormal "
                                   "subspaces redrawn every T0 steps", "factors only (r (m + n) per matrix)", batched_probes=True,
                                   settings=("lowrank_rank", "lowrank_interval")))
register_optimizer(OptimizerRecord("forward-grad", True, "forward gradient: the exact directional derivative along "
                                   "the seeded direction by forward-mode AD (a jvp; no eps)",
                                   "the tangent (1x the trainable weights, during the step)", forward_mode=True))
register_optimizer(OptimizerRecord("mezo-norm", True, "the MeZO paper's Appendix B variants: per-layer scales "
                                   "(parameter or gradient norm) of the perturbation and the estimate",
                                   settings=("zo_variant", "zo_by_layer", "recompute_norms", "change_grad_estimate",
                                             "scale_norm_by_num_params", "norm_running_update")))
register_optimizer(OptimizerRecord("hizoo-l", True, "HiZOO-L: HiZOO with rank-1 factored Hessians of the weight "
                                   "matrices (3 forward passes)", "factors only (m + n per matrix)",
                                   settings=("hessian_smooth",)))
