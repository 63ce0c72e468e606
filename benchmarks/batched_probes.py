"""Batched probes against probes run one after another: seconds per step and the estimates.

    OMP_NUM_THREADS=1 python benchmarks/batched_probes.py            # CPU
    python benchmarks/batched_probes.py --device cuda                # where the speed comes from

Per estimator (MeZO with n = 8 directions, n-SPSA's probes: 16; FZOO with N = 8: 9 probes), on an
OPT-architecture model (8 layers, hidden 256, 6.8M parameters, fp32, batch 16 x 32 tokens), one
step with ``probe_batch`` = 1 (sequential, shadow perturbation: the same weights per probe) and
with every probe of the step in one forward. Prints the median seconds per step over the timed
steps, their ratio, and the largest relative difference of the step's scalars (the batched
forward must give the sequential estimates). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import OPTConfig, OPTForCausalLM  # noqa: E402

from zoft.optim.estimators import FZOO  # noqa: E402
from zoft.optim.mezo import MeZO  # noqa: E402


def model_on(device: str) -> OPTForCausalLM:
    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=8, num_attention_heads=4, ffn_dim=1024,
                    max_position_embeddings=128, word_embed_proj_dim=256, dropout=0.0)
    return OPTForCausalLM(cfg).to(device).eval()


def closure_of(model, ids):
    def closure():
        logits = model(input_ids=ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return closure


def timed(cls, kwargs, probe_batch: int, device: str, steps: int) -> tuple[float, list[list[float]]]:
    model = model_on(device)
    ids = torch.randint(4, 2048, (16, 32), generator=torch.Generator().manual_seed(0)).to(device)
    opt = cls(model.parameters(), lr=1e-6, eps=1e-3, model=model, perturbation="shadow", probe_batch=probe_batch,
              seed=0, **kwargs)
    seconds, scalars = [], []
    for s in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.step(closure_of(model, ids))
        if device == "cuda":
            torch.cuda.synchronize()
        if s:  # the first step warms up
            seconds.append(time.perf_counter() - start)
        scalars.append(list(opt.last_projected_grads))
    return statistics.median(seconds), scalars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    cases = {"MeZO n=8 (16 probes)": (MeZO, {"n_directions": 8}, 16),
             "fzoo (N=8, 9 probes)": (FZOO, {"n_directions": 8}, 9)}
    summary = {}
    for label, (cls, kwargs, probes) in cases.items():
        sequential, seq_scalars = timed(cls, kwargs, 1, args.device, args.steps)
        batched, bat_scalars = timed(cls, kwargs, probes, args.device, args.steps)
        diff = max(abs(a - b) / max(abs(a), 1e-12) for x, y in zip(seq_scalars, bat_scalars) for a, b in zip(x, y))
        summary[label] = {"sequential_s": round(sequential, 4), "batched_s": round(batched, 4),
                          "speedup": round(sequential / batched, 3), "max_rel_scalar_diff": diff}
        print(f"{label:28s} sequential {sequential:.3f} s/step  batched {batched:.3f} s/step  "
              f"speedup {sequential / batched:.2f}x  max rel. scalar difference {diff:.1e}", flush=True)
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "cases": summary}))


if __name__ == "__main__":
    main()
