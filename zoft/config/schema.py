"""Typed schemas for every config group.

Hydra validates the composed YAML against these dataclasses (struct mode): an unknown key or a
value of the wrong type fails at composition time. The ``optimizer`` node is the exception: each
option has its own settings, declared by its class (:mod:`zoft.optim.spec`), and
:mod:`zoft.config.optimizer_checks` checks them. Value checks that types cannot express
(eps > 0, lr >= 0, ...) live in :mod:`zoft.config.validate` and run before any data or model is
loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class TinyArchConfig:
    """Size of a randomly initialised offline model (only used when ``model.path`` is null)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 128
    max_positions: int = 512


@dataclass
class ModelConfig:
    name: str = MISSING
    # opt | llama | roberta | bert: decides tokenizer quirks and which modules methods target.
    family: str = "opt"
    # causal | masked | seq-cls: which Hugging Face head is loaded.
    kind: str = "causal"
    # Hub id ("facebook/opt-13b") or a local folder; null builds a tiny model in code.
    path: Optional[str] = None
    dtype: str = "float32"  # float32 | float16 | bfloat16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    device_map: Optional[str] = None  # "auto" spreads layers over all visible GPUs
    max_length: int = 2048
    init_seed: int = 0  # seeds the random init of tiny models
    # Input/output embedding tie. null: as the original code (RoBERTa's MLM decoder untied, as
    # medium_models' RobertaModelForPromptFinetuning; other models as their checkpoint);
    # true/false: tie or untie.
    tie_word_embeddings: Optional[bool] = None
    tiny: TinyArchConfig = field(default_factory=TinyArchConfig)
    # The sentence feature an encoder's objective and linear probe read: mean (of the last hidden
    # states over the attention mask) | cls (first token; BERT seq-cls: the pooler); null: the
    # objective's own (similarity: mean; cls-head: cls).
    pooling: Optional[str] = None
    # What a user must have to run this model (printed in errors and the README).
    requires: str = ""


@dataclass
class TaskConfig:
    name: str = MISSING
    data_dir: Optional[str] = None  # local files instead of the Hub
    num_train: int = 1000
    num_dev: int = 500
    num_test: int = 1000
    sample_seed: int = 0  # the paper's train_set_seed
    # classification tasks: cross-entropy over candidates; false: LM loss on the gold continuation
    train_as_classification: bool = True
    # Objective override: null picks the task's natural one (candidates / lm / mlm-prompt / ...).
    objective: Optional[str] = None
    # Generation tasks (SQuAD, DROP): greedy decoding budget; prompts are left-truncated to
    # model.max_length - max_new_tokens.
    max_new_tokens: int = 50
    # Masked-LM (LM-BFF) tasks, ``*-kshot``: k examples per class in train and in dev; the data
    # seed is ``sample_seed`` (13/21/42/87/100). null values keep the task's own setting.
    k: int = 16
    template: Optional[str] = None  # LM-BFF template, e.g. "*cls**sent_0*_It_was*mask*.*sep+*"
    label_words: Optional[list[str]] = None  # one word per class, in the task's label order
    max_seq_length: Optional[int] = None
    first_sent_limit: Optional[int] = None
    other_sent_limit: Optional[int] = None
    truncate_head: bool = False
    # The similarity objective (encoders without an MLM head): one description per class (null:
    # the template's words with the label word in the mask, e.g. "It was great.") and the
    # temperature tau of logits = cos(pool(x), pool(text_c)) / tau.
    label_texts: Optional[list[str]] = None
    similarity_tau: float = 0.05


@dataclass
class MethodConfig:
    name: str = "ft"  # ft | head | lora | prefix | linear-probe | zero-shot | icl | prompt
    # Set by the shorthand presets (method=mezo, mezo-lora, mezo-prefix, lp-mezo): the preset's
    # name and the optimizer it stands for. Choosing another optimizer next to one is an error.
    preset: Optional[str] = None
    preset_optimizer: Optional[str] = None
    # lora
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: Optional[list[str]] = None  # null: the family's q/v projections
    # prefix / prompt tuning
    num_prefix: int = 5
    prefix_init_by_real_act: bool = True
    # head tuning
    untie_head: bool = False
    # linear probing
    lp_early_stopping: bool = False
    lp_then: Optional[str] = None
    # icl
    num_demos: int = 32
    sfc: bool = False
    icl_sfc: bool = False


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    num_epochs: Optional[float] = None  # when set, overrides max_steps
    # Zeroth-order runs also stop once they have spent this many forward passes (0: no limit;
    # the original's --max_zo_forward_steps). Counted as the estimator spends them.
    max_zo_forward_steps: int = 0
    batch_size: int = 16
    eval_batch_size: int = 32
    grad_accum: int = 1
    lr_scheduler: str = "constant"  # constant | linear
    warmup_steps: int = 0
    # Dev evaluation every eval_steps steps (0: only at the end). null: num_evals evaluations
    # spread evenly over training (the protocol's "every 1/5 of training", or once per epoch).
    eval_steps: Optional[int] = None
    num_evals: int = 0
    select_by: str = "loss"  # loss | metric: which dev number picks the best checkpoint
    # pure: train the weights in model.dtype as loaded (MeZO in fp16, as the paper did);
    # amp: fp32 master weights, autocast to a half model.dtype where the device supports it
    # (the original's --fp16); fp32: fp32 weights, no autocast. A first-order optimizer with
    # pure half weights is refused (AdamW's eps=1e-8 underflows in fp16).
    precision: str = "pure"
    eval_before_training: bool = True
    log_steps: int = 10
    progress_bar: bool = True
    # CPU intra-op threads (torch.set_num_threads); null: torch's default, 1 for tiny models.
    cpu_threads: Optional[int] = None
    # Resumable checkpoint (checkpoints/last.pt, replaced in place) every N steps; 0: only on
    # SIGTERM/SIGINT/SIGUSR1; null (auto): at every dev evaluation and at least every 1000 steps.
    checkpoint_steps: Optional[int] = None
    # Under Slurm, a SIGTERM/SIGUSR1 also requeues the job (scontrol requeue); the requeued job
    # reruns the same command in the same folder and, with resume=auto, continues from the
    # checkpoint written on the signal.
    requeue_on_signal: bool = True
    # Divergence guard: a non-finite loss, or |projected grad| above divergence_factor x its
    # running median, stops the run ("stop") or reloads the last checkpoint and halves the LR
    # ("rollback", at most max_rollbacks times). divergence_factor=0 disables the gradient check.
    on_divergence: str = "stop"
    divergence_factor: float = 1000.0
    max_rollbacks: int = 3


@dataclass
class ModeConfig:
    """What a run does: ``train`` (fine-tune or evaluate with the method and optimizer) or
    ``kernel`` (the eNTK kernel view, settings in the ``kernel`` node; no gradient steps)."""

    name: str = "train"


@dataclass
class KernelConfig:
    """The kernel view (eNTK) of prompt-based fine-tuning; used when ``mode=kernel``."""

    formula: str = "sgd"  # sgd | signgd | asymmetric_signgd
    solver: str = "logistic"  # lstsq | logistic | svr | svc | asym
    # f = f1 - f0 with labels in {-1, +1}; null: true for 2-class tasks
    binary: Optional[bool] = None
    outer_batch_size: int = 4  # training examples per Jacobian (rows)
    inner_batch_size: int = 16  # evaluated examples per block (columns)
    # parameter subset the kernel is taken over
    exclude_embeddings: bool = False
    exclude_head: bool = False
    only_biases: bool = False
    exclude_first_layers: int = -1
    lora_only: bool = False
    # solvers
    regularization: float = 0.0  # lstsq ridge: regularization * sigma_max(K) * I
    adjust_for_init: bool = False  # lstsq: fit Y - f0 / f0_scaling
    f0_scaling: float = 1.0
    gamma: float = 1.0  # asym
    asym_lambda: float = 0.5  # asym: lambda * standard + (1 - lambda) * flipped ("kernel_lambda")
    # files: cache folder (keyed by a hash of every input), or published kernels to load
    cache_dir: Optional[str] = "outputs/kernels"
    load_dir: Optional[str] = None
    load_task: Optional[str] = None  # task name in the loaded file names; null: task.name
    overwrite: bool = False


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "zoft"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    mode: Optional[str] = None  # online | offline | disabled; null: auto


@dataclass
class LauncherConfig:
    # slurm: let submitit requeue a preempted job. The requeued job reruns the same command in
    # the same folder; with resume=auto it continues from checkpoints/last.pt when one exists.
    requeue: bool = True


@dataclass
class ProtocolRow:
    """One row of a protocol table (``conf/protocol/<name>.yaml``).

    ``when`` matches a run: keys ``family`` (causal | masked), ``optimizer`` (a name, or
    zeroth-order | first-order), ``method``, ``task`` and ``tiny`` (a model built in code); a
    value may be a list of alternatives. Every matching row applies in file order, so later,
    more specific rows refine earlier ones. ``values`` holds ``trainer``/``optimizer`` fields,
    ``grid`` the paper's search grid of a field (shown in the protocol block), ``source`` where
    the values come from.
    """

    when: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class ProtocolConfig:
    name: str = "paper"
    rows: list[ProtocolRow] = field(default_factory=list)


@dataclass
class DistributedConfig:
    """Several processes (``torchrun --nproc_per_node N train.py ...``); see zoft/distributed.py.

    Ignored by a single process. ``strategy``: auto (first-order: ddp; MeZO: data-parallel
    over loss scalars) | ddp | fsdp (first-order only).
    """

    strategy: str = "auto"
    backend: str = "auto"  # auto (nccl on GPUs, else gloo) | gloo | nccl
    mixed_precision: str = "no"  # no | bf16 (DDP: autocast; FSDP: bf16 params, fp32 reduce)
    fsdp_reshard_after_forward: bool = True  # ZeRO-3 (true) or ZeRO-2-like (false)
    fsdp_cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy: shards and optimizer state on CPU


@dataclass
class RunConfig:
    mode: ModeConfig = field(default_factory=ModeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    # The optimizer option (conf/optimizer/<name>.yaml): only that option's settings, declared by
    # its class (zoft.optim.spec) and checked by zoft.config.optimizer_checks, not by this schema.
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    seed: int = 42
    save_model: bool = False
    # auto: continue from checkpoints/last.pt when the run folder has one; true: require it;
    # false: start the folder afresh. last: continue the latest run of this config under outputs/;
    # <folder>: continue the run in that folder (both require its checkpoint).
    resume: str = "auto"
    # A completed run is not run again in its folder (rerunning the command is a no-op);
    # redo=true replaces it with a fresh run.
    redo: bool = False
    output_dir: Optional[str] = None  # null: Hydra's run folder; set: everything goes there (.hydra/ too)
