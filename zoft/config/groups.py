"""The config groups' option files (``conf/<group>/<option>.yaml``) as written, for code that
needs what an option file itself sets rather than what a composed config ends with (the
protocol block's "optimizer file" origin, a report's natural objective of a model)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def group_options(group: str) -> list[str]:
    """The option names of ``group`` (its files' stems), sorted."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@lru_cache(maxsize=None)
def option_file(group: str, option: str) -> dict[str, Any]:
    """What ``conf/<group>/<option>.yaml`` writes, unresolved (empty when there is no such file
    or it holds no mapping)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return {}
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return node if isinstance(node, dict) else {}
