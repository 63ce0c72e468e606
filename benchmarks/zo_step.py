"""Benchmark of one MeZO step on the opt-125m architecture (random weights, fp32, CPU, batch 8 x 64).

Prints one JSON line:

* ``step_over_2fwd`` {gaussian, rademacher}: median zoft MeZO step time / (2 x median forward time);
* ``speedup_vs_original``: median step time of a faithful re-implementation of the original
  MeZO step (global ``torch.manual_seed``, z regenerated four times with ``torch.normal`` in the
  parameter dtype, out-of-place ``param.data = param.data + scale * z``) / zoft's Gaussian step;
* ``peak_mem_ratio``: peak memory of MeZO training / peak memory of inference on the same batch;
* ``adam_over_mezo_mem``: peak memory of AdamW fine-tuning (forward + backward + step) / MeZO's;
* raw medians, every repetition, and the measurement settings.

Timing: all variants run in one process, interleaved round by round (each round times one
forward pass and one step of every variant, in a rotating order), and medians over rounds are
reported, so load from other processes spreads over all variants instead of biasing one.

Memory: each workload runs in a fresh subprocess that builds the model, then resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` <- 5), runs the workload three times and
reads the peak (``VmHWM``). The RSS of the interpreter and libraries before the model is built is
subtracted, so a ratio compares the memory of model + workload (weights, activations, scratch,
optimizer state) rather than being diluted by a constant. torch's CPU allocator returns large
blocks to the OS, so RSS follows live tensor memory. Linux only.

Usage: python benchmarks/zo_step.py [--rounds 5] [--threads N] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH, LENGTH = 8, 64


def build_model(seed: int = 0):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(dropout=0.0, attention_dropout=0.0)  # the defaults are the opt-125m architecture
    return OPTForCausalLM(config).float().eval()


def make_closure(model):
    ids = torch.randint(4, 50000, (BATCH, LENGTH), generator=torch.Generator().manual_seed(1))

    def closure():
        with torch.inference_mode():
            return model(input_ids=ids, labels=ids).loss
    return closure, ids


# -- the original step, re-implemented for comparison (large_models/trainer.py ``zo_step``) ------------------------
def original_step(model, closure, eps: float, lr: float, weight_decay: float = 0.0) -> float:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seed = np.random.randint(1_000_000_000)

    def perturb(scale: float) -> None:
        torch.manual_seed(seed)
        for _, p in named:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scale * z * eps

    with torch.no_grad():
        perturb(1)
        loss1 = closure()
        perturb(-2)
        loss2 = closure()
        g = float((loss1 - loss2) / (2 * eps))
        perturb(1)
        torch.manual_seed(seed)
        for name, p in named:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            if not any(k in name for k in ("bias", "layer_norm", "layernorm")):
                p.data = p.data - lr * (g * z + weight_decay * p.data)
            else:
                p.data = p.data - lr * g * z
    return g


# -- timing --------------------------------------------------------------------------------
def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timings(rounds: int) -> dict:
    from zoft.optim.mezo import MeZO

    model = build_model()
    closure, _ = make_closure(model)
    params = [p for p in model.parameters() if p.requires_grad]
    gauss = MeZO(params, lr=1e-7, eps=1e-3, direction="gaussian", seed=0)
    rade = MeZO(params, lr=1e-7, eps=1e-3, direction="rademacher", seed=0)
    variants = {
        "forward": closure,
        "mezo_gaussian": lambda: gauss.step(closure),
        "mezo_rademacher": lambda: rade.step(closure),
        "original": lambda: original_step(model, closure, eps=1e-3, lr=1e-7),
    }
    for fn in variants.values():  # warm-up: allocator, thread pool, kernels
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(time_it(variants[name]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"median_s": med, "samples_s": samples}


# -- memory (one subprocess per workload) --------------------------------------------------
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(workload: str) -> None:
    from zoft.optim.mezo import MeZO

    base = _status("VmRSS")
    model = build_model()
    closure, ids = make_closure(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if workload == "inference":
        def run():
            closure()
    elif workload == "mezo":
        opt = MeZO(params, lr=1e-7, eps=1e-3, seed=0)

        def run():
            opt.step(closure)
    elif workload == "adam":
        opt = torch.optim.AdamW(params, lr=1e-5)

        def run():
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
    else:
        raise ValueError(workload)
    weights = sum(p.numel() * p.element_size() for p in params)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    for _ in range(3):
        run()
    print(json.dumps({"workload": workload, "peak": _status("VmHWM"), "base": base, "weights": weights}))


def memory() -> dict:
    out = {}
    for workload in ("inference", "mezo", "adam"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", workload], capture_output=True,
                              text=True, env=dict(os.environ), check=True)
        out[workload] = json.loads(proc.stdout.strip().splitlines()[-1])
    above = {k: v["peak"] - v["base"] for k, v in out.items()}
    return {
        "peak_mem_ratio": above["mezo"] / above["inference"],
        "adam_over_mezo_mem": above["adam"] / above["mezo"],
        "peak_rss_ratio_raw": out["mezo"]["peak"] / out["inference"]["peak"],
        "peak_above_base_mb": {k: round(v / 2**20, 1) for k, v in above.items()},
        "weights_mb": round(out["mezo"]["weights"] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    t = timings(args.rounds)
    med = t["median_s"]
    result = {
        "step_over_2fwd": {"gaussian": med["mezo_gaussian"] / (2 * med["forward"]),
                           "rademacher": med["mezo_rademacher"] / (2 * med["forward"])},
        "speedup_vs_original": med["original"] / med["mezo_gaussian"],
        "original_over_2fwd": med["original"] / (2 * med["forward"]),
    }
    if not args.skip_memory:
        result.update(memory())
    result.update({
        "median_s": med,
        "samples_s": {k: [round(x, 4) for x in v] for k, v in t["samples_s"].items()},
        "settings": {"model": "opt-125m architecture, random init, fp32", "batch": [BATCH, LENGTH],
                     "device": "cpu", "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
                     "cpu_count": os.cpu_count(), "torch": torch.__version__},
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
