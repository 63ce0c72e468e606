"""Behaviour hash: short trainings of every optimizer option (and the main methods) on the tiny
in-code model and the demo task, reduced to hashes, so that a refactor can show it changed nothing.

    python benchmarks/behaviour_hash.py > /tmp/hash_before.txt
    ... refactor ...
    python benchmarks/behaviour_hash.py > /tmp/hash_after.txt && diff /tmp/hash_before.txt /tmp/hash_after.txt

One line per run: its name, then

* ``weights``: sha256 of the trainable weights of the last checkpoint (``checkpoints/last.pt``: every
  tensor's bytes, in sorted name order) and of the reported ones (``best_trainable.pt`` when
  the run kept one, else ``-``);
* ``losses``: sha256 of the training losses logged in ``metrics.jsonl``;
* ``rows``: sha256 of every ``metrics.jsonl`` row without its timing fields (evaluations,
  rollback rows, learning rates, forward passes);
* ``traj``: sha256 of the zeroth-order trajectory's records (``-`` for backprop);
* ``status``: completed, or the error a run stopped with (the rollback that gives up).

and a last line with all of it as JSON. Runs in-process with one intra-op thread (bit-identical
reruns on one machine); about a minute on one core.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoft.config.store import register_configs  # noqa: E402
from zoft.errors import DivergenceError, Preempted  # noqa: E402
from zoft.outputs import MetricsLog  # noqa: E402
from zoft.optim.trajectory import read_trajectory  # noqa: E402
from zoft.run import run  # noqa: E402
from zoft.train.checkpoint import read_checkpoint  # noqa: E402

# 6 steps of batch 8 on 32 examples, dev every 3 steps, a checkpoint every 3 steps; a linear
# schedule, so the LR changes every step (the rollback rescales a moving schedule).
BASE = ["task.num_train=32", "task.num_dev=8", "task.num_test=8", "trainer.max_steps=6",
        "trainer.eval_steps=3", "trainer.checkpoint_steps=3", "trainer.batch_size=8", "trainer.log_steps=1",
        "trainer.lr_scheduler=linear", "trainer.progress_bar=false", "trainer.eval_before_training=false"]
OPTIMIZERS = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))
# Backprop runs take the protocol's LR; the zeroth-order ones a larger one than the table's
# 1e-6/1e-7 so that six steps move the weights visibly (the hash would still see tiny moves).
ZO_LR = "1e-3"
TIMING = ("elapsed_s", "examples_per_s")
SIGNAL_AT = "signal_at_step"  # a pseudo-override of this script: send SIGUSR1 when that step logs


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def runs() -> list[tuple[str, list[list[str]]]]:
    """(name, [overrides of each attempt]); a run of several attempts reuses its folder."""
    table = []
    for opt in OPTIMIZERS:
        lr = [] if opt in ("adam", "sgd") else [f"optimizer.lr={ZO_LR}"]
        table.append((f"optimizer={opt}", [BASE + ["method=ft", f"optimizer={opt}", *lr]]))
    for method in ("ft", "lora", "prefix", "head", "mezo-lora", "mezo-prefix", "lp-mezo"):
        table.append((f"method={method}", [BASE + [f"method={method}"]]))
    table += [
        # backprop micro-batches (grad_accum) and clipping
        ("adam grad_accum=2 clip=0.5", [BASE + ["method=ft", "optimizer=adam", "trainer.grad_accum=2",
                                                 "optimizer.max_grad_norm=0.5"]]),
        # the zeroth-order forward-pass budget ends the run early (step 4 of 6)
        ("mezo max_zo_forward_steps=8", [BASE + ["method=mezo", f"optimizer.lr={ZO_LR}",
                                                  "trainer.max_zo_forward_steps=8"]]),
        # resume: 3 steps, then the same folder extended to 6 (the checkpoint is read back)
        ("mezo resume 3->6", [BASE + ["method=mezo", f"optimizer.lr={ZO_LR}", "trainer.max_steps=3"],
                              BASE + ["method=mezo", f"optimizer.lr={ZO_LR}"]]),
        ("adam resume 3->6", [BASE + ["method=ft", "optimizer=adam", "trainer.max_steps=3"],
                              BASE + ["method=ft", "optimizer=adam"]]),
        # rollback that recovers: the gradient check trips at step 21 (20 steps of history, a
        # factor no step passes), the loop goes back to step 20's checkpoint with half the LR
        # on a linear schedule, rewinds the trajectory and rewrites metrics.jsonl.
        ("mezo rollback x1 (recovers)", [BASE + ["method=mezo", f"optimizer.lr={ZO_LR}", "trainer.max_steps=26",
                                                 "trainer.eval_steps=7", "trainer.checkpoint_steps=10",
                                                 "trainer.on_divergence=rollback",
                                                 "trainer.divergence_factor=1e-9", "trainer.max_rollbacks=1"]]),
        # rollback that gives up: SGD at LR 1e12 diverges every time (two rollbacks, then the error)
        # preempted: SIGUSR1 arrives during step 4 (no checkpoint due there), the loop
        # checkpoints and stops; the same command resumes and finishes
        ("mezo preempt@4 + resume", [BASE + ["method=mezo", f"optimizer.lr={ZO_LR}", "trainer.checkpoint_steps=0",
                                             f"+{SIGNAL_AT}=4"],
                                     BASE + ["method=mezo", f"optimizer.lr={ZO_LR}", "trainer.checkpoint_steps=0"]]),
        ("sgd rollback x2 (gives up)", [BASE + ["method=ft", "optimizer=sgd", "optimizer.lr=1e12",
                                                "optimizer.max_grad_norm=null", "trainer.max_steps=20",
                                                "trainer.checkpoint_steps=1", "trainer.on_divergence=rollback",
                                                "trainer.max_rollbacks=2"]]),
    ]
    return table


@contextlib.contextmanager
def signal_when_logged(steps: list[int]):
    """Send this process SIGUSR1 when the training row of one of ``steps`` is logged (the loop
    turns it into a checkpoint and a stop at the end of that step)."""
    original = MetricsLog.write

    def write(self, row: dict) -> None:
        original(self, row)
        if "loss" in row and row.get("step") in steps:
            os.kill(os.getpid(), signal.SIGUSR1)

    MetricsLog.write = write
    try:
        yield
    finally:
        MetricsLog.write = original


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def tensors_sha(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def summarize(run_dir: Path, status: str) -> dict:
    last = run_dir / "checkpoints" / "last.pt"
    best = run_dir / "checkpoints" / "best_trainable.pt"
    weights = tensors_sha(read_checkpoint(last)["weights"]) if last.exists() else "-"
    reported = tensors_sha(torch.load(best, map_location="cpu", weights_only=True)) if best.exists() else "-"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    clean = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    traj_path = run_dir / "trajectory.bin"
    traj = "-"
    if traj_path.exists():
        t = read_trajectory(traj_path)
        traj = sha(json.dumps([t.steps, t.lrs, t.grads]).encode())
    return {"weights": weights, "reported": reported, "losses": sha(json.dumps(losses).encode()),
            "n_losses": len(losses), "rows": sha(json.dumps(clean, sort_keys=True).encode()), "traj": traj,
            "rollbacks": sum("rollback_from" in r for r in rows),
            "status": status}


def main() -> int:
    torch.set_num_threads(1)
    import zoft

    print(f"# zoft from {Path(zoft.__file__).parent}", file=sys.stderr)
    register_configs()
    import logging

    logging.disable(logging.WARNING)  # the runs' own logs (rollback warnings) are not the output
    out: dict[str, dict] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoft-hash-") as tmp:
        for i, (name, attempts) in enumerate(runs()):
            run_dir = Path(tmp) / f"run{i}"
            statuses = []  # one per attempt
            for overrides in attempts:
                signal_at = [int(o.split("=")[1]) for o in overrides if o.startswith(f"+{SIGNAL_AT}=")]
                overrides = [o for o in overrides if not o.startswith(f"+{SIGNAL_AT}=")]
                try:  # the runs' own printout goes to stderr: stdout is the hash lines
                    with contextlib.redirect_stdout(sys.stderr), signal_when_logged(signal_at):
                        run(compose_config(overrides + [f"output_dir={run_dir}"]))
                except (DivergenceError, Preempted) as err:
                    statuses.append(f"{type(err).__name__}: {str(err).splitlines()[0]}")
                else:
                    statuses.append("completed")
            out[name] = summarize(run_dir, " | ".join(statuses))
            r = out[name]
            print(f"{name:32s} weights={r['weights']} reported={r['reported']} losses={r['losses']} "
                  f"n={r['n_losses']} rollbacks={r['rollbacks']} rows={r['rows']} traj={r['traj']} "
                  f"status={r['status']}", flush=True)
    print(json.dumps(out, sort_keys=True))
    print(f"{len(out)} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
