"""Peak memory of zero-shot, ICL, MeZO, MeZO-LoRA, FT-prefix and FT (Adam) for OPT-1.3B/2.7B/6.7B/13B, estimated from
measurements of small OPT-architecture models (random weights, built in code, CPU), printed next
to the paper's Table 22 (Malladi et al., 2023).

    OMP_NUM_THREADS=1 python benchmarks/memory_table.py            # about a minute on one core
    python benchmarks/memory_table.py --markdown                   # the README table

How it is measured: torch's ``MemTracker`` (torch.distributed._tools.mem_tracker) follows every
tensor allocated during one step of each scenario and reports the peak, split into parameters,
gradients, optimizer state, and activations/temporaries. It counts live tensor bytes (what a CUDA
caching allocator would hand out), not allocator slack or the CUDA context (~0.5-1 GB on a GPU).

The extrapolation model:
    peak(model) = s * P  +  A(L, h, f, n_heads, T, V)
* ``s * P``: parameter-proportional memory (weights; for FT also gradients and Adam's moments). ``s`` (bytes
  per parameter) is measured on the small models and applied to the target's exact parameter
  count (counted on a meta-device instance of the real OPT config).
* ``A``: activations and temporaries, a non-negative least-squares fit over the small models of
  the features T*h, T*f, T^2*n_heads (once for inference, which frees each layer's activations
  after use; times L for backprop, which keeps every layer's), K*V (the logits of the K kept
  positions) and, for inference/MeZO, V*h (a temporary the size of the largest tensor: MeZO's z
  for the embedding matrix; for FT, the tied embedding's two-path gradient) and, for FT, P
  (autocast's fp16 weight copies and AdamW's foreach temporaries). L = layers, h = hidden size, f = FFN size, T = tokens per row,
  V = vocabulary. Five to seven coefficients from eight small models; the fit's worst
  residual is printed (up to about 27% of the activation part; for inference/MeZO that part is
  under 2% of the total at these sizes, for FT about 20%, so FT estimates are good to ~+-10%).

Setting as the paper's Table 22: MultiRC, about 400 tokens per example (2 candidate rows), batch 1,
no gradient checkpointing; inference/MeZO in fp16; FT with fp32 weights and fp16 autocast (AMP);
ICL with a 2048-token context. zoft's causal objectives compute logits only for the option
positions (``logits_to_keep``), unlike the original, which materialises T x V logits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import OPTConfig, OPTForCausalLM  # noqa: E402
from torch.distributed._tools.mem_tracker import MemTracker  # noqa: E402

from zoft.config.schema import MethodConfig  # noqa: E402
from zoft.methods.registry import apply_method  # noqa: E402
from zoft.objectives.causal import CandidateBatch, candidate_scores, classification_loss  # noqa: E402
from zoft.optim.mezo import MeZO  # noqa: E402

# Scenarios that train with backprop (activations of every layer kept; grads + Adam state) and
# the method each one applies (None: all parameters).
BACKPROP = {"ft-adam": None, "ft-prefix": "prefix"}
METHOD = {"mezo-lora": "lora", "ft-prefix": "prefix"}

V = 50272  # OPT's vocabulary
GB = 1e9
# (hidden, layers, heads, ffn) of the real models, from their Hugging Face configs.
TARGETS = {"opt-1.3b": (2048, 24, 32, 8192), "opt-2.7b": (2560, 32, 32, 10240),
           "opt-6.7b": (4096, 32, 32, 16384), "opt-13b": (5120, 40, 40, 20480)}
# Paper Table 22 (GB; A100s in brackets): zero-shot/MeZO, ICL, prefix FT, full FT.
PAPER = {"opt-1.3b": ("4", "6", "19", "27"), "opt-2.7b": ("7", "8", "29", "55"),
         "opt-6.7b": ("14", "16", "46", "156 (2 GPUs)"), "opt-13b": ("26", "29", "158 (2 GPUs)", "316 (4 GPUs)")}
# A 2^(4-1) fractional factorial over hidden size, layers, tokens and vocabulary: 8 small models
# in which no two of the four factors move together.
SMALL = [(h, layers, t, 50272 if (h == 256) ^ (layers == 4) ^ (t == 512) else 8192)
         for h in (128, 256) for layers in (2, 4) for t in (256, 512)]
ROWS = 2  # MultiRC: 2 candidates per example, batch 1 example
OPTION = 4  # option tokens per row (the kept logits)


@contextlib.contextmanager
def frozen_parameters_take_no_hooks():
    """MemTracker registers gradient hooks on every parameter it sees; the frozen base weights
    of LoRA / prefix tuning cannot take one, and need none (they get no gradient)."""
    class NoHandle:
        def remove(self) -> None:
            pass

    original = torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook
    torch.Tensor.register_hook = lambda t, fn: original[0](t, fn) if t.requires_grad else NoHandle()
    torch.Tensor.register_post_accumulate_grad_hook = (
        lambda t, fn: original[1](t, fn) if t.requires_grad else NoHandle())
    try:
        yield
    finally:
        torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook = original


@dataclass
class Measure:
    state: float  # parameter-proportional bytes at the peak (weights + grads + optimizer state)
    other: float  # activations + temporaries at the peak


def opt_config(h: int, layers: int, heads: int, ffn: int, vocab: int = V) -> OPTConfig:
    return OPTConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                     ffn_dim=ffn, max_position_embeddings=2048, word_embed_proj_dim=h, dropout=0.0,
                     attention_dropout=0.0, do_layer_norm_before=True)


def param_count(cfg: OPTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in OPTForCausalLM(cfg).parameters())


def batch(t: int, vocab: int) -> CandidateBatch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (ROWS, t), generator=gen)
    return CandidateBatch(input_ids=ids, attention_mask=torch.ones_like(ids),
                          option_mask=torch.ones(ROWS, OPTION, dtype=torch.bool), row_example=torch.zeros(ROWS, dtype=torch.long),
                          row_candidate=torch.arange(ROWS), gold=torch.zeros(1, dtype=torch.long), num_candidates=[ROWS])


def loss_fn(model, b: CandidateBatch) -> torch.Tensor:
    return classification_loss(candidate_scores(model, b), b.gold)


def measure(scenario: str, h: int, layers: int, t: int, vocab: int) -> Measure:
    torch.manual_seed(0)
    model = OPTForCausalLM(opt_config(h, layers, max(h // 64, 1), 4 * h, vocab))
    model.eval()
    b = batch(t, vocab)
    if scenario not in BACKPROP:
        model.half()  # the paper's --load_float16
    # LoRA (r 8, alpha 16 on q/v) or prefix (5 tokens per layer); real-activation prefix init
    # runs the model once, outside the tracked step.
    trainable = ([p for _, p in apply_method(model, MethodConfig(name=METHOD[scenario]), "opt")]
                 if scenario in METHOD else list(model.parameters()))
    optimizer = None
    if scenario in ("mezo", "mezo-lora"):
        optimizer = MeZO(trainable, lr=1e-6, eps=1e-3, model=model)  # fp16: exact (shadow) restore
    elif scenario in BACKPROP:
        model.train()
        optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    tracker = MemTracker()
    # MeZO's optimizer is not registered: its only allocations are the z temporaries, which
    # should count as temporaries (they scale with the largest tensor, not with P).
    tracker.track_external(model, *([optimizer] if scenario in BACKPROP else []))
    with tracker, frozen_parameters_take_no_hooks():
        if scenario in ("zero-shot", "icl"):
            with torch.inference_mode():
                loss_fn(model, b)
        elif scenario in ("mezo", "mezo-lora"):
            def closure():
                tracker.reset_mod_stats()  # MeZO runs the model twice per step
                with torch.inference_mode():
                    return loss_fn(model, b)
            optimizer.step(closure)
        else:
            for _ in range(2):  # the second step has Adam's moments allocated
                tracker.reset_mod_stats()
                optimizer.zero_grad(set_to_none=False)
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = loss_fn(model, b)
                loss.backward()
                optimizer.step()
    peak = {str(k).split(".")[-1]: v for k, v in tracker.get_tracker_snapshot("peak")[torch.device("cpu")].items()}
    # The weights are counted from the model: MemTracker files MeZO's z temporaries (made while
    # parameters are updated in place) under PARAM; they belong with the temporaries.
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # MeZO's z is filed under OPT too (MemTracker hooks every optimizer.step): for everything but
    # backprop the parameter-proportional memory is the weights alone.
    state = weights + (peak.get("GRAD", 0) + peak.get("OPT", 0) if scenario in BACKPROP else 0)
    return Measure(state=state, other=peak["Total"] - state)


def features(scenario: str, h: int, layers: int, heads: int, ffn: int, t: int, vocab: int, params: int) -> np.ndarray:
    """Activation features (x ROWS): inference frees each layer's activations after use, so
    its peak is one layer's transients; backprop keeps every layer's for the backward pass."""
    per_layer = [t * h, t * ffn, t * t * heads]
    if scenario in BACKPROP:
        # + P: autocast's fp16 copies of the weights, kept for the backward pass
        # + V*h: the tied embedding's gradient arrives from two paths (lookup and head), summed
        # in fp32 temporaries
        cols = [layers * x for x in per_layer] + [OPTION * vocab, params / ROWS, vocab * h / ROWS]
    else:
        cols = per_layer + [OPTION * vocab, vocab * h / ROWS]
    return np.array(cols, dtype=float) * ROWS


def fit(scenario: str, t_scale: int) -> tuple[float, np.ndarray, float]:
    """(bytes per parameter, activation coefficients, worst relative residual of the fit)."""
    xs, ys, ratios = [], [], []
    for h, layers, t, vocab in SMALL:
        t = t * t_scale
        m = measure(scenario, h, layers, t, vocab)
        p = param_count(opt_config(h, layers, max(h // 64, 1), 4 * h, vocab))
        ratios.append(m.state / p)
        xs.append(features(scenario, h, layers, max(h // 64, 1), 4 * h, t, vocab, p))
        ys.append(m.other)
    x, y = np.array(xs), np.array(ys)
    scale = x.max(axis=0)  # NNLS on columns of comparable size
    coef, _ = nnls(x / scale, y)
    coef = coef / scale
    residual = float(np.max(np.abs(x @ coef - y) / y))
    return float(np.mean(ratios)), coef, residual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # (scenario, tokens per row in the target setting, token scale of the small measurements)
    scenarios = [("zero-shot", 400, 1), ("icl", 2048, 4), ("mezo", 400, 1), ("mezo-lora", 400, 1),
                 ("ft-prefix", 400, 1), ("ft-adam", 400, 1)]
    fits = {}
    for name, _, t_scale in scenarios:
        fits[name] = fit(name, t_scale)
        s, _, res = fits[name]
        print(f"# {name}: {s:.2f} bytes/parameter, activation fit within {100 * res:.1f}% on "
              f"{len(SMALL)} small models", file=sys.stderr)
    rows = []
    for target, (h, layers, heads, ffn) in TARGETS.items():
        p = param_count(opt_config(h, layers, heads, ffn))
        est = {}
        for name, t, _ in scenarios:
            s, coef, _ = fits[name]
            est[name] = (s * p + float(features(name, h, layers, heads, ffn, t, V, p) @ coef)) / GB
        rows.append((target, p, est))
    head = ["model", "params", "zero-shot", "ICL (2048 tok)", "MeZO", "MeZO-LoRA", "FT-prefix", "FT (Adam)",
            "paper: zero-shot/MeZO", "paper: ICL", "paper: prefix FT", "paper: FT"]
    lines = []
    for target, p, est in rows:
        paper = PAPER[target]
        lines.append([target, f"{p / 1e9:.2f}B", f"{est['zero-shot']:.1f}", f"{est['icl']:.1f}", f"{est['mezo']:.1f}",
                      f"{est['mezo-lora']:.1f}", f"{est['ft-prefix']:.1f}", f"{est['ft-adam']:.1f}", *paper])
        print(f"# {target}: " + ", ".join(f"{k} {v:.2f}" for k, v in est.items()) + " GB", file=sys.stderr)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
        for r in [head, *lines]:
            print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    print("GB = 1e9 bytes of live tensors at the peak.", file=sys.stderr)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
