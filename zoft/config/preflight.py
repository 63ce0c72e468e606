"""Checks of the raw command line that Hydra itself reports less helpfully: an unknown option of
a config group gets close-match suggestions before Hydra starts composing."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional, Sequence


# Options that moved to another group, with where they went.
MOVED = {("optimizer", "kernel"): "The kernel view is a mode of its own: mode=kernel (settings: kernel.*; "
                                  "see docs/kernels.md)."}


def unknown_group_choice(argv: Sequence[str], conf_dir: Path) -> Optional[str]:
    """An error message for the first ``group=option`` whose option file does not exist."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "+", "~", "hydra")):
            continue
        key, value = arg.split("=", 1)
        if key not in groups or "," in value or value.startswith(("choice(", "range(", "glob(")):
            continue  # not a group, or a multirun sweep over options (Hydra checks each)
        options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        if value not in options:
            close = difflib.get_close_matches(value, options, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            if (key, value) in MOVED:
                hint = " " + MOVED[(key, value)]
            return f"unknown {key} option {value!r}.{hint} Valid {key} options: {', '.join(options)}"
    return None
