"""The zeroth-order race: every estimator of zoft, from the same start, on forward passes to
MeZO's accuracy.

    OMP_NUM_THREADS=1 python benchmarks/zo_race.py --setup tiny                 # offline, CPU
    OMP_NUM_THREADS=1 python benchmarks/zo_race.py --setup real --data-dir /data/GLUE  # minilm-l6, SST-2 k=16

Per estimator, in one process: each point of its LR grid is one ``zoft.run.run`` with the same
model, data, seed and forward-pass budget (steps = budget / forward passes per step of the
estimator); the grid point with the best dev accuracy (ties: lower dev loss) is kept. The target is
MeZO's dev accuracy at the end of its budget (its selected run). Printed per estimator: the grid
and the chosen LR, forward passes (and seconds) until dev accuracy first reached the target,
final dev/test accuracy (the checkpoint the run selected), and peak memory of one step over the
peak of one inference forward, measured with torch's MemTracker on a small OPT model (fp32,
1 row) where the weights dominate. A PNG of dev accuracy against forward passes is written, and
the last printed line is one JSON object.

Forward passes are counted as the estimator does them (FZOO: N + 1 per step, HiZOO: 3,
ZO-SGD-Cons: 2n + 3, one-point: 1, forward gradient: 2 per jvp), from ``forward_passes_per_step`` where the optimizer has it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# Estimator -> LR grid. Tiny: zoft's choice around the tiny protocol LR (2e-3 for MeZO), scaled by
# the estimator's own LR semantics (sign steps, momentum, sums over directions), centred on the best
# point of a wider first run (2026-12-04).
TINY_GRIDS = {  # the grids of the measured table in docs/estimators.md
    "mezo": (2e-3, 4e-3, 8e-3),
    "zo-sgd-sign": (3e-3, 1e-2, 3e-2),
    "zo-sgd-mmt": (1e-4, 2e-4, 4e-4),
    "zo-sgd-cons": (2e-3, 4e-3, 8e-3),
    "fzoo": (1e-2, 3e-2, 1e-1),
    "hizoo": (2e-3, 4e-3, 8e-3),
    "hizoo-l": (2e-3, 4e-3, 8e-3),  # HiZOO's
    "sparse-mezo": (8e-3, 1.6e-2, 3.2e-2),
    "mezo-one-point": (1e-5, 3e-5, 1e-4),
    "mezo-nspsa": (1e-3, 2e-3, 4e-3),
    "lozo": (1e-3, 2e-3, 4e-3),
    "subzero": (1e-3, 2e-3, 4e-3),
    "forward-grad": (1e-3, 2e-3, 4e-3),  # MeZO's estimate at eps -> 0: MeZO's LR scale
    "mezo-norm": (2e-4, 1e-3, 4e-3),  # param_norm: per layer, the step along z is c^2 times MeZO's
}
# Real (minilm-l6, SST-2 k=16, a CPU budget): one point per estimator, the best tiny LR of the
# 2026-12-04 tiny run times 1/4 (MeZO: 4e-3 -> 1e-3, the LR the real-encoder benchmark's dev chose
# for MeZO on this model, benchmarks/real_encoder.py). A grid per estimator is ~13x the CPU time.
TINY_BEST = {"mezo": 4e-3, "zo-sgd-sign": 1e-2, "zo-sgd-mmt": 2e-4, "zo-sgd-cons": 4e-3, "fzoo": 3e-2,
             "hizoo": 4e-3, "sparse-mezo": 1.6e-2, "mezo-one-point": 1e-5, "mezo-nspsa": 2e-3, "lozo": 2e-3,
             "subzero": 2e-3, "forward-grad": 2e-3, "mezo-norm": 1e-3,
             "hizoo-l": 4e-3}  # (HiZOO-L was added after that run: HiZOO's)
REAL_GRIDS = {name: (lr / 4,) for name, lr in TINY_BEST.items()}
EVALS = 16  # dev evaluations over the budget (the resolution of forward passes to target)


@dataclass
class Outcome:
    name: str
    lr: float
    forward_per_step: int
    curve: list[tuple[int, float]]  # (forward passes, dev accuracy)
    final_dev: float
    final_test: float
    dev_loss: float
    seconds: float


def setup_overrides(setup: str, data_dir: Optional[Path], out: Path) -> list[str]:
    if setup == "tiny":
        return ["model=tiny-opt", "task=demo", "method=ft"]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_encoder import make_splits  # the LM-BFF k-shot splits, as the real-encoder benchmark

    kshot = out / "kshot"
    make_splits(data_dir, kshot, ["sst-2-kshot"], [16], [13])
    return ["model=minilm-l6", "task=sst-2-kshot", f"task.data_dir={kshot}", "task.k=16", "task.sample_seed=13",
            "seed=13", "method=ft", "trainer.batch_size=16"]


def forward_passes_per_step(cfg) -> int:
    """What one step of the configured optimizer costs, in forward passes."""
    from zoft.optim.build import build_optimizer

    probe = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optimizer, list(probe.named_parameters()), seed=0, model=probe)
    return int(getattr(opt, "forward_passes_per_step", None) or 2 * opt.n_directions)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from zoft.config.store import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def train(name: str, lr: float, base: list[str], budget: int, out: Path) -> Outcome:
    """One grid point: ``budget`` forward passes of ``name`` at ``lr``."""
    from zoft.errors import DivergenceError
    from zoft.run import run

    run_dir = out / "runs" / f"{name}-lr{lr:g}"
    probe = _compose(base + [f"optimizer={name}"])
    per_step = forward_passes_per_step(probe)
    steps = max(budget // per_step, EVALS)
    cfg = _compose(base + [f"optimizer={name}", f"optimizer.lr={lr}", f"trainer.max_steps={steps}",
                           f"trainer.eval_steps={max(steps // EVALS, 1)}", "trainer.progress_bar=false",
                           "trainer.eval_before_training=false", "trainer.log_steps=1000",
                           "trainer.checkpoint_steps=0", "resume=false", f"output_dir={run_dir}"])
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            results = run(cfg)
    except DivergenceError as err:  # a diverged grid point (the loop's divergence guard) loses
        print(f"  {name} lr {lr:g}: {err}", flush=True)
        return Outcome(name, lr, per_step, [], -1.0, -1.0, float("inf"), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    curve = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "dev_accuracy" in row:
            curve.append((row["step"] * per_step, row["dev_accuracy"]))
    m = results["metrics"]
    return Outcome(name, lr, per_step, curve, m["dev_accuracy"], m["test_accuracy"], m["dev_loss"], seconds)


def best_of(points: list[Outcome]) -> Outcome:
    return max(points, key=lambda o: (o.final_dev, -o.dev_loss))


def to_target(outcome: Outcome, target: float) -> Optional[int]:
    """Forward passes at the first evaluation whose dev accuracy reached ``target``."""
    return next((f for f, acc in outcome.curve if acc >= target), None)


def memory_ratio(name: str) -> float:
    """Peak of one optimizer step over the peak of one inference forward (small OPT, fp32)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import OPTConfig, OPTForCausalLM

    from zoft.optim.build import build_optimizer

    torch.manual_seed(0)
    # 8 layers, hidden 256, vocabulary 2048: 6.8M parameters, the embedding 8% of them (OPT-13B: 2%).
    cfg = OPTConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=8, num_attention_heads=4, ffn_dim=1024,
                    max_position_embeddings=128, word_embed_proj_dim=256, dropout=0.0)
    model = OPTForCausalLM(cfg).eval()
    ids = torch.randint(4, 2048, (1, 32), generator=torch.Generator().manual_seed(0))

    trackers: list = []
    # Forward gradient's jvp needs tensors that can carry tangents: no_grad, not inference_mode.
    mode = [torch.inference_mode]

    def loss():
        if trackers:
            trackers[-1].reset_mod_stats()  # the step runs the model several times
        with mode[0]():
            logits = model(input_ids=ids).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    class ForwardOnlyTracker(MemTracker):
        """MemTracker without gradient hooks: a forward-only step makes no backprop gradients
        (a .grad that exists is still counted), and the dual tensors that forward gradient
        substitutes for the weights accept no hooks. Its closure module wraps the model, so
        the per-forward reset happens inside a module's forward."""

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            return super()._track_module_params_and_buffers(module, install_grad_hooks=False)

        def _post_fw_hook(self, module, inputs, outputs):
            if module in self.memory_tracking:  # not a module entered before the last reset
                super()._post_fw_hook(module, inputs, outputs)

    def peak(fn) -> float:
        tracker = ForwardOnlyTracker()
        tracker.track_external(model)
        trackers.append(tracker)
        with tracker:
            fn()
        trackers.clear()
        return float(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])

    inference = peak(loss)
    settings = _compose([f"optimizer={name}", f"optimizer.lr=1e-6", "optimizer.eps=1e-3"]).optimizer
    opt = build_optimizer(settings, list(model.named_parameters()), seed=0, model=model)
    if getattr(opt, "needs_loss_tensor", False):
        mode[0] = torch.no_grad
    opt.step(loss)  # state allocated lazily: the second step is the steady state
    return peak(lambda: opt.step(loss)) / inference


def plot(outcomes: dict[str, Outcome], target: float, path: Path, setup: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, o) in enumerate(outcomes.items()):
        xs, ys = zip(*o.curve) if o.curve else ((), ())
        style = dict(color="black", linewidth=2.5) if name == "mezo" else dict(color=colors[i % len(colors)], linewidth=1.2)
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{name} (lr {o.lr:g})", **style)
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label="target (MeZO final dev)")
    ax.set_xlabel("forward passes")
    ax.set_ylabel("dev accuracy")
    ax.set_title(f"zoft zeroth-order race ({setup})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--data-dir", type=Path, help="GLUE folder with SST-2/ (--setup real)")
    parser.add_argument("--budget", type=int, default=None,
                        help="forward passes per run (default: tiny 2000, real 300)")
    parser.add_argument("--estimators", nargs="*", default=None, help="subset (mezo is always run: it sets the target)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "zo_race")
    args = parser.parse_args()
    if args.setup == "real" and args.data_dir is None:
        parser.error("--setup real needs --data-dir (a GLUE folder with SST-2/)")
    logging.disable(logging.WARNING)
    budget = args.budget or (2000 if args.setup == "tiny" else 300)
    grids = TINY_GRIDS if args.setup == "tiny" else REAL_GRIDS
    names = ["mezo"] + [n for n in (args.estimators or grids) if n != "mezo"]
    args.out.mkdir(parents=True, exist_ok=True)
    base = setup_overrides(args.setup, args.data_dir, args.out)

    outcomes: dict[str, Outcome] = {}
    for name in names:
        points = [train(name, lr, base, budget, args.out) for lr in grids[name]]
        outcomes[name] = best_of(points)
        o = outcomes[name]
        print(f"{name:15s} lr {o.lr:<8g} (grid {', '.join(f'{x:g}' for x in grids[name])}) dev {o.final_dev:.3f} "
              f"test {o.final_test:.3f}  {sum(p.seconds for p in points):.0f}s", flush=True)
    target = outcomes["mezo"].final_dev
    mezo_fp = to_target(outcomes["mezo"], target)

    print(f"\nsetup {args.setup}: budget {budget} forward passes per run, target dev accuracy {target:.3f} (MeZO final)")
    print(f"{'estimator':15s} {'lr':>8s} {'fwd/step':>8s} {'fwd to target':>13s} {'s to target':>11s} "
          f"{'final dev':>9s} {'final test':>10s} {'mem/inf':>7s}")
    summary = {}
    for name, o in outcomes.items():
        fp = to_target(o, target)
        secs = None if fp is None else o.seconds * fp / max(o.curve[-1][0], 1)
        mem = memory_ratio(name)
        summary[name] = {"forward_passes_to_target": fp, "final_dev": o.final_dev, "final_test": o.final_test,
                         "peak_mem_over_inference": round(mem, 3), "lr": o.lr}
        print(f"{name:15s} {o.lr:8g} {o.forward_per_step:8d} {str(fp):>13s} "
              f"{'-' if secs is None else f'{secs:.1f}':>11s} {o.final_dev:9.3f} {o.final_test:10.3f} {mem:7.2f}")
    # The best successor: MeZO itself is the reference, not a candidate.
    reached = {n: s["forward_passes_to_target"] for n, s in summary.items()
               if s["forward_passes_to_target"] and n != "mezo"}
    best = min(reached, key=reached.get) if reached else None
    png = args.out / f"zo_race_{args.setup}.png"
    plot(outcomes, target, png, args.setup)
    print(f"plot: {png}")
    print(json.dumps({"setup": args.setup, "budget": budget, "target_dev": target, "estimators": summary,
                      "best_estimator": best,
                      "best_forward_ratio": reached[best] / mezo_fp if best and mezo_fp else None}))


if __name__ == "__main__":
    main()
