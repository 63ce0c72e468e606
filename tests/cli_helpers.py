"""Running ``python train.py`` as a user does, for the command-line tests."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def run_train(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """``python train.py *args`` in ``cwd``, offline, its output captured as text."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
