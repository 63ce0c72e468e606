"""How long ``python train.py`` takes to refuse a command it cannot run.

    python benchmarks/startup.py                          # 5 runs of each command
    python benchmarks/startup.py --runs 10 --json startup.json
    python benchmarks/startup.py --root /tmp/older-checkout   # time another tree's train.py

Two commands, each run ``--runs`` times in a fresh process with an empty Hugging Face cache
(``HF_HOME`` is a new temporary folder) and ``HF_HUB_OFFLINE=1``:

* ``paper``: ``python train.py method=mezo task=sst2 model=opt-13b``, which must stop because the
  weights are neither cached nor downloadable;
* ``config-error``: ``python train.py optimizer.lr=-1``, a value the validation refuses.

Both must exit with status 2. Prints each command's median and minimum wall time, the ratio of the
medians, and where the paper command's time goes: the slowest top-level imports of one run under
``python -X importtime`` (cumulative, i.e. with everything they import), and their sum. The last
line is a JSON object. The times depend on the machine and its load: compare figures taken in one
run of the script, or in runs back to back (``--root`` times another checkout's ``train.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose train.py runs (--root: another one)
COMMANDS = {
    "paper": ["method=mezo", "task=sst2", "model=opt-13b"],
    "config-error": ["optimizer.lr=-1"],
}
# One line of `python -X importtime`: "import time: self [us] | cumulative | imported package",
# the package indented by two spaces per nesting level.
IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def offline_env(home: Path) -> dict[str, str]:
    """The environment of an offline machine with nothing in its Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                                                            "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="0")
    return env


def run_once(root: Path, args: list[str], workdir: Path, env: dict[str, str],
             extra: tuple[str, ...] = ()) -> tuple[float, subprocess.CompletedProcess]:
    """Seconds from process start to exit, and the finished process."""
    command = [sys.executable, *extra, str(root / "train.py"), *args, f"hydra.run.dir={workdir}"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=workdir.parent, env=env, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - start, proc


def top_level_imports(stderr: str) -> list[tuple[str, float]]:
    """The imports made directly by the program (nesting level 0), slowest first, cumulative seconds."""
    level0 = []
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:  # one space after "|": imported by the program itself
            level0.append((match.group(4), int(match.group(2)) / 1e6))
    return sorted(level0, key=lambda item: -item[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="how many imports to list")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose train.py runs")
    args = parser.parse_args()
    root = args.root.resolve()

    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = offline_env(Path(tmp) / "hf-home")
        for name, overrides in COMMANDS.items():
            seconds, codes, message = [], set(), ""
            for i in range(args.runs):
                took, proc = run_once(root, overrides, Path(tmp) / f"{name}-{i}", env)
                seconds.append(took)
                codes.add(proc.returncode)
                message = (proc.stderr.strip().splitlines() or [""])[-1]
            result[name] = {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
                            "runs": args.runs, "exit_codes": sorted(codes), "message": message[:160]}
            print(f"{name:13s} median {statistics.median(seconds):6.2f} s  min {min(seconds):6.2f} s  "
                  f"exit {sorted(codes)}  {message[:100]}")
        traced_s, traced = run_once(root, COMMANDS["paper"], Path(tmp) / "importtime", env, ("-X", "importtime"))
        every = top_level_imports(traced.stderr)
        imports = every[:args.top]
    ratio = result["paper"]["median_s"] / result["config-error"]["median_s"]
    print(f"ratio paper / config-error (medians): {ratio:.2f}")
    importing = sum(t for _, t in every)
    print(f"paper command under -X importtime: {traced_s:.2f} s, of which imports {importing:.2f} s; "
          "slowest top-level imports (cumulative):")
    for module, took in imports:
        print(f"  {took:6.3f} s  {module}")
    ok = all(r["exit_codes"] == [2] for r in result.values())
    record = {**result, "root": str(root), "ratio": round(ratio, 2), "importtime_run_s": round(traced_s, 3),
              "imports_s": round(importing, 3), "imports": [[m, round(t, 3)] for m, t in imports], "all_exit_2": ok}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
