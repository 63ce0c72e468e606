"""The zeroth-order race (v2): every estimator of zoft, from a pretrained start, over seeds.

    OMP_NUM_THREADS=1 python benchmarks/zo_race.py --setup tiny                 # offline, CPU, 2 workers
    OMP_NUM_THREADS=1 python benchmarks/zo_race.py --quick                      # smoke check (~1 minute)
    OMP_NUM_THREADS=1 python benchmarks/zo_race.py --setup real --data-dir /data/GLUE  # minilm-l6, SST-2 k=16

Setups. ``tiny``: a small OPT (2 layers, hidden 64, 137K parameters, zoft's tiny tokenizer)
pre-trained in code with AdamW by causal language modelling on a corpus related to the demo task
(benchmarks/race_pretrain.py: other label words, other nouns and verbs, part of the demo's
adjectives), cached by a content key under ``--cache-dir``; every run fine-tunes it on zoft's demo
task (512 train, 128 dev, 256 test examples, fixed sample) by full-parameter tuning.
``real``: the minilm-l6 encoder on SST-2 k=16 (benchmarks/real_encoder.py's splits).

Protocol. Each estimator runs with its paper's settings scaled to the model (the table's
``settings`` column). One tuning seed (``--tune-seed``) picks its LR from the stated grid by the
lowest dev loss of the checkpoint each run keeps; then ``--seeds`` evaluation seeds (other than the
tuning seed) run at that LR. A seed is the run seed: it draws the perturbations (zo_seed is derived
from it) and the order of the training batches; the data sample (train/dev/test examples) is the
same for every run. Every run has the same budget of forward passes (steps = budget // forward
passes per step) and evaluates dev every ``100 // forward passes per step`` steps (at least 1), so
its curve is read at least every 100 forward passes; it keeps the checkpoint with the lowest dev
loss (the paper's selection), whose dev and test accuracy are reported.

Metrics, each as the median [min, max] over the evaluation seeds:
- forward passes to target: the first evaluation whose dev loss is at or below the target, MeZO's
  median kept dev loss (for an even count of seeds the upper of the two middle values, which more
  than half of MeZO's runs reach; "-" when a run never gets there, and the median then counts it
  as infinite);
- dev loss, dev accuracy and test accuracy of the kept checkpoint, at the equal budget;
- peak memory of one step over one inference forward, as process RSS high-water (all threads) in a
  fresh subprocess per estimator (benchmarks/race_memory.py);
- AdamW with backprop is the ceiling row; its steps count 3 forward-equivalents (a forward, and a
  backward at twice a forward's cost).
``best_forward_ratio`` is the best successor's median forward passes to target over MeZO's (AdamW is
not a successor). The start check (tiny): dev loss and accuracy before training, and MeZO at its LR
from a random init of the same architecture (the tuning seed), against MeZO from the pretrained
start. Printed: the table, the seeds and the machine; written: a PNG of the median dev loss against
forward passes; the last line is one JSON object. A run that diverges or fails is reported as such
(it never reaches the target) and the race goes on.

Cost: per run, its CPU time is printed (the wall time on an idle core); the race's total over the
workers is the wall time of an idle 2-core machine. ``--dry`` runs each estimator once (middle LR,
one seed, full budget) and prints the full race's estimate from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from race_runs import Outcome, RunSpec, eval_every, forward_per_step, run_all  # noqa: E402

# HiZOO's EMA rate alpha of the diagonal Hessian (HiZOO and HiZOO-L), by zoft's rule
# alpha * median(h) ~ 1e-3 (docs/estimators.md), h = |L+ + L- - 2 L0| / (2 eps^2): on the pretrained
# start, median h was 29 over 100 draws at H = 1 (eps 1e-3, batch 16; 2026-12-06), so 1e-3 / 29.
HIZOO_ALPHA = 3e-5
# Each estimator's paper settings, scaled to the model: (optimizer overrides, as the table states
# them). "{steps/5}" is replaced by a fifth of the run's steps (SubZero's T0).
SETTINGS = {
    "mezo": ((), "eps 1e-3"),
    "zo-sgd-sign": ((), "eps 1e-3"),
    "zo-sgd-mmt": ((), "eps 1e-3, momentum 0.9"),
    "zo-sgd-cons": ((), "eps 1e-3"),
    "fzoo": (("optimizer.n_directions=8", "optimizer.eps=1e-4"), "N 8, eps 1e-4"),
    "hizoo": ((f"optimizer.hessian_smooth={HIZOO_ALPHA}",), f"eps 1e-3, alpha {HIZOO_ALPHA:g}"),
    "hizoo-l": ((f"optimizer.hessian_smooth={HIZOO_ALPHA}",), f"eps 1e-3, alpha {HIZOO_ALPHA:g}"),
    "sparse-mezo": (("optimizer.sparsity=0.75",), "eps 1e-3, sparsity 0.75"),
    "mezo-one-point": ((), "eps 1e-3"),
    "mezo-nspsa": ((), "eps 1e-3, n 4"),
    "lozo": (("optimizer.lowrank_rank=2", "optimizer.lowrank_interval=50"), "eps 1e-3, r 2, nu 50"),
    "subzero": (("optimizer.lowrank_rank=4", "optimizer.lowrank_interval={steps/5}"), "eps 1e-3, r 4, T0 steps/5"),
    "forward-grad": ((), "jvp"),
    "mezo-norm": ((), "eps 1e-3, param_norm"),
    "adam": ((), "AdamW, backprop"),
}
ZO_COMMON = ("optimizer.eps=1e-3", "optimizer.weight_decay=0.0")  # before each estimator's own settings
# Tiny LR grids (the pretrained start), factor 2-3.3 apart, scaled by each estimator's own LR
# semantics (sign steps, momentum, sums over directions, normalised steps). Centred by the first v2
# run (2026-12-06, tuning seed 0): where its grid's top point won (and the loss still fell with the
# LR), the grid moved up one point.
TINY_GRIDS = {
    "mezo": (5e-4, 1e-3, 2e-3),
    "zo-sgd-sign": (3e-3, 1e-2, 3e-2),
    "zo-sgd-mmt": (1e-4, 2e-4, 4e-4),
    "zo-sgd-cons": (5e-4, 1e-3, 2e-3),
    "fzoo": (1e-2, 3e-2, 1e-1),
    "hizoo": (1e-3, 2e-3, 4e-3),
    "hizoo-l": (1e-3, 2e-3, 4e-3),
    "sparse-mezo": (4e-3, 8e-3, 1.6e-2),
    "mezo-one-point": (1e-5, 3e-5, 1e-4),
    "mezo-nspsa": (5e-4, 1e-3, 2e-3),
    "lozo": (5e-4, 1e-3, 2e-3),
    "subzero": (5e-4, 1e-3, 2e-3),
    "forward-grad": (1e-3, 2e-3, 4e-3),
    "mezo-norm": (3e-4, 1e-3, 3e-3),
    "adam": (1e-3, 3e-3, 1e-2),
}
# Real (minilm-l6, SST-2 k=16, the similarity objective, a CPU budget): one point per estimator (no
# tuning runs): the LR the 2026-12-06 tiny race chose, times 1/100, the ratio of MeZO's LR on this
# objective (1e-5: docs/real-model.md, 1e-4 raised the loss) to MeZO's tiny LR (1e-3). Untuned on
# the real model; a grid per estimator is ~13x the CPU time.
REAL_GRIDS = {"mezo": (1e-5,), "zo-sgd-sign": (1e-4,), "zo-sgd-mmt": (2e-6,), "zo-sgd-cons": (1e-5,),
              "fzoo": (3e-4,), "hizoo": (4e-5,), "hizoo-l": (2e-5,), "sparse-mezo": (8e-5,),
              "mezo-one-point": (3e-7,), "mezo-nspsa": (1e-5,), "lozo": (1e-5,), "subzero": (1e-5,),
              "forward-grad": (2e-5,), "mezo-norm": (1e-5,), "adam": (2e-5,)}
DEFAULT_SEEDS = 4  # evaluation seeds
QUICK = dict(budget=200, seeds=1, estimators=["mezo", "fzoo", "adam"])


@dataclass
class Entry:
    """One estimator's race: its grid's tuning runs, the chosen LR and the evaluation runs."""

    name: str
    tuning: list[Outcome]
    runs: list[Outcome]
    memory: Optional[float] = None

    @property
    def lr(self) -> float:
        return self.runs[0].spec.lr


def setup_overrides(args) -> list[str]:
    """The setup's model/task/trainer overrides, shared by every run."""
    common = ["method=ft", "trainer.lr_scheduler=constant", "trainer.precision=fp32", "trainer.cpu_threads=1"]
    if args.setup == "tiny":
        from race_pretrain import PretrainConfig, pretrained_folder

        cfg = args.pretrain = PretrainConfig(steps=50, sentences=500) if args.quick else PretrainConfig()
        folder = pretrained_folder(args.cache_dir, cfg)
        return ["model=tiny-opt", f"model.path={folder.resolve()}", "model.name=tiny-opt-pretrained", "task=demo",
                "trainer.batch_size=16", *common]
    from real_encoder import make_splits  # the LM-BFF k-shot splits, as the real-encoder benchmark

    kshot = args.out / "kshot"
    make_splits(args.data_dir, kshot, ["sst-2-kshot"], [16], [13])
    return ["model=minilm-l6", "task=sst-2-kshot", f"task.data_dir={kshot}", "task.k=16", "task.sample_seed=13",
            "trainer.batch_size=16", *common]


def scratch_overrides(args, base: list[str]) -> list[str]:
    """``base`` with the pretrained folder replaced by the same architecture, randomly initialised."""
    arch = args.pretrain
    kept = [o for o in base if not o.startswith(("model.path=", "model.name="))]
    return kept + ["model.name=tiny-opt-scratch", f"model.init_seed={arch.init_seed}",
                   f"model.tiny.hidden_size={arch.hidden_size}", f"model.tiny.num_layers={arch.num_layers}",
                   f"model.tiny.num_heads={arch.num_heads}", f"model.tiny.ffn_dim={arch.ffn_dim}",
                   f"model.tiny.max_positions={arch.max_positions}"]


def start_check(mezo: Entry, scratch: Outcome) -> dict:
    """Is the pretrained start neither solved nor random: its dev numbers before training, and
    MeZO's kept dev loss from it against MeZO from the same architecture's random init."""
    _, loss0, acc0 = mezo.runs[0].curve[0] if mezo.runs[0].curve else (0, None, None)
    return {"initial_dev_loss": loss0, "initial_dev_accuracy": acc0,
            "mezo_dev_loss_pretrained": median([o.dev_loss for o in mezo.runs]),
            "mezo_dev_loss_scratch": scratch.dev_loss, "scratch_seed": scratch.spec.seed}


def spec(name: str, lr: float, seed: int, args, base: list[str], phase: str) -> RunSpec:
    settings = ("optimizer.weight_decay=0.0",) if name == "adam" else ZO_COMMON + SETTINGS[name][0]
    return RunSpec(name, lr, seed, args.budget, tuple(base), tuple(settings),
                   str(args.out / "runs" / phase / f"{name}-lr{lr:g}-seed{seed}"))


def median(values: list[float]) -> float:
    return statistics.median(values)


def to_target(outcome: Outcome, target: float) -> Optional[int]:
    """Forward passes at the first evaluation whose dev loss is at or below ``target``."""
    return next((f for f, loss, _ in outcome.curve if loss <= target), None)


def spread(values: list[Optional[float]]) -> dict:
    """median, min, max; None counts as infinite (never reached) and is reported as None."""
    finite = [float("inf") if v is None else v for v in values]
    fix = lambda v: None if v == float("inf") else v  # noqa: E731
    return {"median": fix(median(finite)), "min": fix(min(finite)), "max": fix(max(finite)),
            "reached": sum(v is not None for v in values), "runs": len(values)}


def fmt(stats: dict, digits: int = 3, integer: bool = False) -> str:
    show = lambda v: "-" if v is None else (f"{v:.0f}" if integer else f"{v:.{digits}f}")  # noqa: E731
    return f"{show(stats['median'])} [{show(stats['min'])}, {show(stats['max'])}]"


def summarise(entries: dict[str, Entry], target: float) -> dict:
    summary = {}
    for name, e in entries.items():
        runs = e.runs
        summary[name] = {
            "settings": SETTINGS[name][1], "lr": e.lr, "grid": [o.spec.lr for o in e.tuning] or [e.lr],
            "forward_per_step": runs[0].forward_per_step, "eval_every_steps": eval_every(runs[0].forward_per_step),
            "forward_passes_to_target": spread([to_target(o, target) for o in runs]),
            "dev_loss": spread([None if o.diverged else o.dev_loss for o in runs]),
            "dev_accuracy": spread([o.dev_acc for o in runs]), "test_accuracy": spread([o.test_acc for o in runs]),
            "final_dev": median([o.dev_acc for o in runs]), "final_test": median([o.test_acc for o in runs]),
            "peak_mem_over_inference": None if e.memory is None else round(e.memory, 3),
            "seconds_per_run": round(median([o.seconds for o in runs]), 1),
            "runs": [{"seed": o.spec.seed, "steps": o.steps, "forward_passes": o.forward_passes,
                      "evaluated_at": [f for f, _, _ in o.curve], "to_target": to_target(o, target),
                      "dev_loss": o.dev_loss, "dev_accuracy": o.dev_acc, "test_accuracy": o.test_acc,
                      "diverged": o.diverged} for o in runs],
        }
    return summary


def best_successor(summary: dict) -> tuple[Optional[str], Optional[float]]:
    """The successor (not MeZO, not AdamW) with the fewest median forward passes to target."""
    mezo = summary["mezo"]["forward_passes_to_target"]["median"]
    reached = {n: s["forward_passes_to_target"]["median"] for n, s in summary.items()
               if n not in ("mezo", "adam") and s["forward_passes_to_target"]["median"] is not None}
    if not reached:
        return None, None
    best = min(reached, key=reached.get)
    return best, (reached[best] / mezo if mezo else None)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import os

    return f"{model}, {os.cpu_count()} cores"


def print_table(summary: dict, target: float, args, seeds: list[int]) -> None:
    print(f"\nsetup {args.setup}: {args.budget} forward passes per run; LR by the lowest kept dev loss of tuning "
          f"seed {args.tune_seed}; medians [min, max] over seeds {seeds}; target dev loss {target:.4f} "
          f"(MeZO's median kept dev loss); machine: {machine()}")
    head = (f"{'estimator':15s} {'settings':26s} {'lr':>8s} {'fwd/step':>8s} {'fwd to target (reached)':>28s} "
            f"{'dev loss':>24s} {'dev acc':>24s} {'test acc':>24s} {'mem/inf':>7s}")
    print(head)
    for name, s in summary.items():
        fp = s["forward_passes_to_target"]
        mem = "-" if s["peak_mem_over_inference"] is None else f"{s['peak_mem_over_inference']:.2f}"
        to_target = f"{fmt(fp, integer=True)} ({fp['reached']}/{fp['runs']})"
        print(f"{name:15s} {s['settings']:26s} {s['lr']:8g} {s['forward_per_step']:8d} "
              f"{to_target:>28s} {fmt(s['dev_loss'], 4):>24s} "
              f"{fmt(s['dev_accuracy']):>24s} {fmt(s['test_accuracy']):>24s} {mem:>7s}")


def plot(entries: dict[str, Entry], target: float, path: Path, setup: str) -> None:
    """Median dev loss over the evaluation seeds against forward passes, one line per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab20").colors
    for i, (name, e) in enumerate(entries.items()):
        points: dict[int, list[float]] = {}
        for o in e.runs:
            for f, loss, _ in o.curve:
                points.setdefault(f, []).append(loss)
        xs = sorted(f for f, ls in points.items() if len(ls) == len(e.runs))  # all seeds evaluated there
        style = (dict(color="black", linewidth=2.5) if name == "mezo" else
                 dict(color="gray", linestyle=":", linewidth=2) if name == "adam" else
                 dict(color=colors[i % len(colors)], linewidth=1.2))
        ys = [max(median(points[x]), 1e-6) for x in xs]  # a loss of 0 (float32) on the log axis
        ax.plot(xs, ys, label=f"{name} (lr {e.lr:g})", **style)
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label="target: MeZO's median kept dev loss")
    ax.set_yscale("log")
    ax.set_xlabel("forward passes (AdamW: forward-equivalents, backward = 2)")
    ax.set_ylabel("dev loss (median over seeds)")
    ax.set_title(f"zoft zeroth-order race v2 ({setup})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def measure_memory(entries: dict[str, Entry], workers: int) -> None:
    """Each estimator's peak memory over inference, ``workers`` subprocesses at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from race_memory import peak_over_inference

    def one(name: str) -> float:
        settings = [] if name == "adam" else [s for s in ZO_COMMON + SETTINGS[name][0] if "{" not in s]
        return peak_over_inference(name, settings)

    with ThreadPoolExecutor(workers) as pool:
        for entry, ratio in zip(entries.values(), pool.map(one, list(entries))):
            entry.memory = ratio


def report_dry(entries: dict[str, Entry], grids: dict, args, seconds: float) -> None:
    """What the full race would take: each estimator's run time x (grid points + seeds) / workers,
    from the runs' CPU time (their wall time on idle cores) and their wall time (on this machine now)."""
    for kind in ("cpu_seconds", "seconds"):
        total = sum(getattr(e.runs[0], kind) * (len(grids[n]) + DEFAULT_SEEDS) for n, e in entries.items())
        print(f"dry run ({seconds:.0f}s), per run {kind}: "
              + ", ".join(f"{n} {getattr(e.runs[0], kind):.0f}" for n, e in entries.items()))
        print(f"estimated full race from {kind} ({len(grids['mezo'])}-point grids, {DEFAULT_SEEDS} seeds, "
              f"{args.workers} workers; pre-training and memory excluded): {total / args.workers / 60:.1f} min",
              flush=True)


def race(args) -> dict:
    grids = TINY_GRIDS if args.setup == "tiny" else REAL_GRIDS
    names = ["mezo"] + [n for n in (args.estimators or grids) if n != "mezo"]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown estimator(s) {unknown}; valid: {', '.join(SETTINGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = setup_overrides(args)
    print(f"start ready in {time.perf_counter() - start:.0f}s", flush=True)
    seeds = list(range(args.tune_seed + 1, args.tune_seed + 1 + args.seeds))
    # --quick: the grid's first point; --dry: its middle point (timing only); no tuning runs then.
    grid = {n: (grids[n][:1] if args.quick else (grids[n][len(grids[n]) // 2],) if args.dry else grids[n])
            for n in names}

    def done(o: Outcome) -> None:
        state = f"diverged ({o.diverged})" if o.diverged else f"dev loss {o.dev_loss:.4f} acc {o.dev_acc:.3f}"
        print(f"  {o.spec.name:15s} lr {o.spec.lr:<8g} seed {o.spec.seed}: {state}, {o.forward_passes} fwd, "
              f"{o.seconds:.0f}s ({o.cpu_seconds:.0f}s CPU)", flush=True)

    tuning_specs = [spec(n, lr, args.tune_seed, args, base, "tune")
                    for n in names for lr in grid[n] if len(grid[n]) > 1]
    tuning = run_all(tuning_specs, args.workers, done)
    chosen = {n: grid[n][0] for n in names}
    for n in names:
        points = [o for o in tuning if o.spec.name == n]
        if points:
            chosen[n] = min(points, key=lambda o: o.dev_loss).spec.lr
    print(f"tuning done at {time.perf_counter() - start:.0f}s: " + ", ".join(f"{n} {lr:g}" for n, lr in chosen.items()),
          flush=True)
    eval_specs = [spec(n, chosen[n], s, args, base, "eval") for n in names for s in seeds]
    if args.setup == "tiny":  # the start check: MeZO from the same architecture's random init
        eval_specs.append(spec("mezo", chosen["mezo"], args.tune_seed, args, scratch_overrides(args, base), "scratch"))
    evaluated = run_all(eval_specs, args.workers, done)
    scratch = evaluated.pop() if args.setup == "tiny" else None
    entries = {n: Entry(n, [o for o in tuning if o.spec.name == n], [o for o in evaluated if o.spec.name == n])
               for n in names}
    if args.dry:
        report_dry(entries, grids, args, time.perf_counter() - start)
    if not args.no_memory:
        measure_memory(entries, args.workers)
    # The upper median for an even count of seeds: MeZO's own median then reaches its target.
    target = statistics.median_high([o.dev_loss for o in entries["mezo"].runs])
    summary = summarise(entries, target)
    best, ratio = best_successor(summary)
    print_table(summary, target, args, seeds)
    start_numbers = start_check(entries["mezo"], scratch) if scratch else None
    if start_numbers:
        print("pretrained start: dev loss {initial_dev_loss:.4f}, dev accuracy {initial_dev_accuracy:.3f} before "
              "training; MeZO's median kept dev loss {mezo_dev_loss_pretrained:.4f} from it, "
              "{mezo_dev_loss_scratch:.4f} from a random init of the same architecture "
              "(seed {scratch_seed})".format(**start_numbers))
    png = args.out / f"zo_race_{args.setup}.png"
    plot(entries, target, png, args.setup)
    seconds = time.perf_counter() - start
    cpu = sum(o.cpu_seconds for e in entries.values() for o in e.tuning + e.runs)
    cpu += scratch.cpu_seconds if scratch else 0.0
    print(f"runs' CPU time {cpu / 60:.1f} min ({cpu / args.workers / 60:.1f} min over {args.workers} workers: "
          f"the wall time on idle cores, pre-training and memory excluded)")
    print(f"best successor: {best} (median forward passes to target / MeZO's: "
          f"{'-' if ratio is None else f'{ratio:.2f}'}); plot: {png}; wall time {seconds:.0f}s "
          f"({args.workers} workers)")
    return {"setup": args.setup, "budget": args.budget, "seeds": seeds, "tune_seed": args.tune_seed,
            "selection": "lowest kept dev loss on the tuning seed", "target_dev_loss": target,
            "machine": machine(), "wall_seconds": round(seconds), "run_cpu_seconds": round(cpu),
            "workers": args.workers,
            "start": start_numbers, "best_estimator": best, "best_forward_ratio": ratio, "estimators": summary}


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--seeds 0`` or ``--budget 0`` would run
    nothing; they are refused, not taken for the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--data-dir", type=Path, help="GLUE folder with SST-2/ (--setup real)")
    parser.add_argument("--budget", type=_positive_int, default=None,
                        help="forward passes per run (default: tiny 2000, real 300, --quick 200)")
    parser.add_argument("--seeds", type=_positive_int, default=None, help="evaluation seeds (default 4; --quick 1)")
    parser.add_argument("--tune-seed", type=int, default=0, help="the seed whose runs pick each LR")
    parser.add_argument("--workers", type=_positive_int, default=2, help="worker processes, one thread each")
    parser.add_argument("--estimators", nargs="*", default=None, help="subset (mezo is always run: it sets the target)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: a briefly pre-trained start, one LR, 1 seed, 200 forward passes, "
                             "mezo/fzoo/adam unless --estimators")
    parser.add_argument("--dry", action="store_true",
                        help="timing: every estimator once (middle LR, 1 seed, full budget); "
                             "prints the full race's estimate")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "zo_race")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "outputs" / ".race_cache",
                        help="where the pre-trained start is cached (by content key)")
    args = parser.parse_args(argv)
    if args.setup == "real" and args.data_dir is None:
        parser.error("--setup real needs --data-dir (a GLUE folder with SST-2/)")
    if args.quick:
        args.estimators = args.estimators or QUICK["estimators"]
    # Unset (None) takes the default; 0 and negatives were refused by _positive_int above.
    if args.budget is None:
        args.budget = QUICK["budget"] if args.quick else 2000 if args.setup == "tiny" else 300
    if args.seeds is None:
        args.seeds = QUICK["seeds"] if args.quick or args.dry else DEFAULT_SEEDS
    return args


def main() -> None:
    import logging

    logging.disable(logging.WARNING)
    print(json.dumps(race(parse_args())))


if __name__ == "__main__":
    main()
