"""Peak memory of one optimizer step over the peak of one inference forward, as process RSS.

    python benchmarks/race_memory.py fzoo optimizer.n_directions=8   # prints one JSON line

zoft's estimators run part of their work on worker threads (the chunk passes of
``zoft.optim.estimators.chunks``); torch's MemTracker only sees the calling thread's tensors, so
this measures the whole process instead: the resident set's high-water mark (Linux ``VmHWM``),
reset before each measured call by writing 5 to ``/proc/self/clear_refs``. Each measurement runs in
a fresh subprocess, so nothing an earlier estimator allocated is reused, and with a fixed glibc
mmap threshold (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors go back to the system instead of
hiding the next peak in reused heap.

The model is an OPT built in code (6 layers, hidden 384, vocabulary 8192: 14M parameters, fp32,
one row of 32 tokens), where the weights dominate as in large-model fine-tuning. Both peaks are
counted above the process's resident memory without the model (measured RSS after a warm-up
forward, minus the weights' bytes), so the ratio is (weights + everything a step adds) over
(weights + inference activations). AdamW's step is forward + backward + update (gradients and two
moment buffers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = (384, 6, 1536, 8192)  # hidden, layers, ffn, vocabulary of the measured model


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (RSS high-water needs Linux)")


def _peak_bytes(fn) -> int:
    """Process RSS high-water mark while ``fn`` runs (all threads)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    fn()
    return _status_kib("VmHWM") * 1024


def measure(name: str, overrides: list[str]) -> dict:
    """Run in this process: the inference and step peaks of ``name`` (see the module docstring)."""
    import gc

    import torch
    from transformers import OPTConfig, OPTForCausalLM

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from race_runs import compose  # noqa: E402  (the race's own Hydra composition)
    from zoft.optim.build import build_optimizer
    from zoft.optim.spec import capabilities_of

    torch.set_num_threads(1)
    hidden, layers, ffn, vocab = MODEL
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8,
                       ffn_dim=ffn, max_position_embeddings=64, word_embed_proj_dim=hidden, dropout=0.0)
    model = OPTForCausalLM(config).eval()
    ids = torch.randint(4, vocab, (1, 32), generator=torch.Generator().manual_seed(0))  # (1 row, 32 tokens)
    mode = [torch.inference_mode]

    def loss():
        with mode[0]():
            logits = model(input_ids=ids).logits[:, :-1]  # (1, 31, vocab)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))

    loss()  # warm-up: lazy library state is runtime, not inference
    gc.collect()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    runtime = _status_kib("VmRSS") * 1024 - weights
    inference = _peak_bytes(loss) - runtime

    settings = compose([f"optimizer={name}", "optimizer.lr=1e-6", *overrides]).optimizer
    if name == "adam":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logits = model(input_ids=ids).logits[:, :-1]
                torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1)).backward()
            opt.step()
    else:
        opt = build_optimizer(settings, list(model.named_parameters()), seed=0, model=model)
        if capabilities_of(opt).needs_loss_tensor:  # forward gradient's jvp: no_grad, not inference_mode
            mode[0] = torch.no_grad

        def step():
            opt.step(loss)
    step()  # state is allocated lazily: the second step is the steady state
    gc.collect()
    peak = _peak_bytes(step) - runtime
    return {"estimator": name, "weights_mib": weights / 2**20, "inference_mib": inference / 2**20,
            "step_mib": peak / 2**20, "ratio": peak / inference}


def peak_over_inference(name: str, overrides: list[str]) -> float:
    """:func:`measure` in a fresh subprocess (one thread, fixed mmap threshold); the ratio."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), name, *overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ratio"])


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure(sys.argv[1], sys.argv[2:])))
