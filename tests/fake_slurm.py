"""A stand-in for Slurm's commands, for testing ``launcher=slurm`` without a cluster.

``install(bin_dir)`` writes ``sbatch``, ``srun``, ``sacct`` and ``scontrol`` into
``bin_dir``; put it first on PATH. ``sbatch`` answers "Submitted batch job N" at once and a
detached runner executes the job script here: each task of a job array in turn, with the
variables Slurm sets (SLURM_JOB_ID, SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID). ``scontrol requeue``
marks a task, and the runner reruns it when its process ends (SLURM_RESTART_COUNT counts), as
Slurm does. ``sacct`` reports each task's state; ``srun`` writes the step's pid to
``<state>/pid-<job>`` (the test signals it) and runs the command with its output files.
State lives in ``bin_dir/state`` (the commands find it in FAKE_SLURM_STATE).

By hand: ``python tests/fake_slurm.py install /tmp/fake-slurm``, then
``PATH=/tmp/fake-slurm:$PATH python train.py -m launcher=slurm optimizer.lr=0.001,0.0001``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "scontrol")  # what submitit and zoft call
SELF = str(Path(__file__).resolve())


def install(bin_dir: Path) -> Path:
    """Write the fake commands into ``bin_dir``; returns the state folder."""
    bin_dir = Path(bin_dir).resolve()
    (bin_dir / "state").mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nFAKE_SLURM_STATE={shlex.quote(str(bin_dir / 'state'))} exec "
                        f"{shlex.quote(sys.executable)} {shlex.quote(SELF)} {name} \"$@\"\n")
        path.chmod(0o755)
    return bin_dir / "state"


def _state() -> Path:
    return Path(os.environ["FAKE_SLURM_STATE"])


def _set(key: str, state: str) -> None:
    tmp = _state() / f".{key}.tmp"
    tmp.write_text(state)
    tmp.replace(_state() / f"state-{key}")


def sbatch(args: list[str]) -> int:
    script = Path(args[-1])
    text = script.read_text()
    match = re.search(r"^#SBATCH --array=(\d+)-(\d+)", text, re.M)
    tasks = list(range(int(match.group(1)), int(match.group(2)) + 1)) if match else [None]
    counter = _state() / "next_id"
    job = int(counter.read_text()) if counter.exists() else 100
    counter.write_text(str(job + len(tasks) + 1))
    for task in tasks:
        _set(_key(job, task), "PENDING")
    runner = subprocess.Popen([sys.executable, SELF, "_run", str(job), str(script), *map(str, tasks)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=os.environ.copy())
    (_state() / f"runner-{job}").write_text(str(runner.pid))
    print(f"Submitted batch job {job}")
    return 0


def _key(job: int, task) -> str:
    return f"{job}" if task in (None, "None") else f"{job}_{task}"


def _run(args: list[str]) -> int:
    """The runner: each task of the job in turn, rerun while it was requeued."""
    job, script, tasks = int(args[0]), args[1], args[2:]
    for i, task in enumerate(tasks):
        key = _key(job, task)
        env = dict(os.environ, SLURM_JOB_ID=str(job + 1 + i if task != "None" else job), SLURM_NTASKS="1",
                   SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
                   SLURM_JOB_NODELIST="localhost", FAKE_SLURM_KEY=key)
        if task != "None":
            env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=task)
        restarts = 0
        while True:
            env["SLURM_RESTART_COUNT"] = str(restarts)
            _set(key, "RUNNING")
            code = subprocess.call(["bash", script], env=env)
            marker = _state() / f"requeue-{key}"
            if marker.exists():
                marker.unlink()
                restarts += 1
                continue
            _set(key, "COMPLETED" if code == 0 else "FAILED")
            break
    return 0


def srun(args: list[str]) -> int:
    """``srun --unbuffered --output O [--error E] cmd ...``: run cmd with those files, as this pid."""
    files = {}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            files[flag] = args.pop(0)
    env = os.environ
    names = {"%A": env.get("SLURM_ARRAY_JOB_ID", ""), "%a": env.get("SLURM_ARRAY_TASK_ID", ""),
             "%j": env["SLURM_JOB_ID"], "%t": "0"}
    paths = {}
    for flag, pattern in files.items():
        for code, value in names.items():
            pattern = pattern.replace(code, value)
        Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        paths[flag] = pattern
    (_state() / f"pid-{env['FAKE_SLURM_KEY']}").write_text(str(os.getpid()))
    out = os.open(paths.get("--output", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(paths["--error"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if "--error" in paths else out
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.execvp(args[0], args)  # the step keeps this pid: the pid file names it


def sacct(args: list[str]) -> int:
    jobs = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for path in sorted(_state().glob("state-*")):
        key = path.name[len("state-"):]
        if key.split("_")[0] in jobs:
            print(f"{key}|{path.read_text()}|localhost")
    return 0


def scontrol(args: list[str]) -> int:
    if args[:1] != ["requeue"]:
        return 0
    key = os.environ.get("FAKE_SLURM_KEY") if args[1] == os.environ.get("SLURM_JOB_ID") else args[1]
    (_state() / f"requeue-{key}").write_text("")
    _set(key, "REQUEUED")
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "install":
        print(f"installed the fake Slurm commands in {rest[0]}; state in {install(Path(rest[0]))}")
        sys.exit(0)
    sys.exit({"sbatch": sbatch, "_run": _run, "srun": srun, "sacct": sacct, "scontrol": scontrol}[command](rest))
