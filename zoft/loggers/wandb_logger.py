"""``logger=wandb``: one wandb run per job.

* Mode: ``WANDB_MODE`` from the environment wins (so ``WANDB_MODE=disabled`` turns it off), then
  ``logger.mode``, else automatic: online when an API key is configured and the wandb server answers
  within a few seconds, otherwise offline with one log line saying where the run is stored and how
  to upload it later. A failing online start also falls back to offline. No path fails or hangs
  the training run for want of a network. The key and the server are looked for where wandb looks:
  ``WANDB_API_KEY``, else the netrc file (``NETRC``, else ``~/.netrc``, else ``~/_netrc``); the
  server is asked over HTTP through wandb's proxies (``WANDB_HTTPS_PROXY``/``WANDB_HTTP_PROXY``,
  else ``https_proxy``/``http_proxy``/``no_proxy``).
* Runs of one multirun share a group (``logger.group``, default: the sweep folder); each run is
  named after its job folder; the resolved config is logged flat (``optimizer.lr``).
* Per-step rows go to ``train/<key>`` and dev evaluations to ``dev/<metric>``, with the process's
  peak memory; the summary holds the final metrics and the run's status.
* ``finish`` ends the run (exit code 1 for a failed job) and calls ``wandb.teardown()`` so the
  wandb service process does not outlive the job (joblib and submitit workers are long-lived).
"""

from __future__ import annotations

import logging
import netrc
import os
import resource
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from omegaconf import DictConfig

log = logging.getLogger("zoft")

DEFAULT_BASE_URL = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 3.0


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-6}}`` -> ``{"optimizer.lr": 1e-6}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    flat[prefix[:-1]] = tree
    return flat


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)


def netrc_path() -> Path:
    """The netrc file wandb reads and ``wandb login`` writes: ``NETRC``, else ``~/.netrc``, else
    ``~/_netrc`` (the first that exists; ``~/.netrc`` when neither does)."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    for name in (".netrc", "_netrc"):
        if Path("~", name).expanduser().exists():
            return Path("~", name).expanduser()
    return Path("~/.netrc").expanduser()


def has_api_key() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file for the wandb host (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(_base_url()).hostname or ""
    try:
        entry = netrc.netrc(str(netrc_path())).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_proxies() -> dict[str, str]:
    """The proxies wandb uses: its own settings (``WANDB_HTTP_PROXY``, ``WANDB_HTTPS_PROXY``) over the
    standard variables (``http_proxy``, ``https_proxy``; ``no_proxy`` exempts hosts)."""
    proxies = urllib.request.getproxies()
    for scheme in ("http", "https"):
        own = os.environ.get(f"WANDB_{scheme.upper()}_PROXY")
        if own:
            proxies[scheme] = own
    return proxies


def server_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the wandb server answers an HTTP request (any status) within ``timeout`` seconds,
    through :func:`wandb_proxies`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(wandb_proxies()))
    try:
        opener.open(urllib.request.Request(_base_url(), method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # an answer, whatever its status: the server is there
    except (OSError, ValueError):
        return False
    return True


def choose_mode(configured: Optional[str]) -> tuple[str, Optional[str]]:
    """(mode, why it is offline or None)."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env, None
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return "disabled", None
    if configured:
        return configured, None
    if not has_api_key():
        return "offline", "no API key (set WANDB_API_KEY or run `wandb login`)"
    if not server_reachable():
        return "offline", f"{_base_url()} is not reachable"
    return "online", None


def peak_memory_mb() -> float:
    """Peak accelerator memory when CUDA is in use, else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _hydra_names(run_dir: Path) -> tuple[Optional[str], str]:
    """(sweep folder for multirun jobs or None, job name)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return str(hc.sweep.dir), Path(hc.runtime.output_dir).name
    except Exception:  # noqa: BLE001 - not running under Hydra
        pass
    return None, run_dir.name


def train_row_to_wandb(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl row -> wandb keys (``train/loss``, ``dev/accuracy``)."""
    out = {}
    for key, value in row.items():
        if key == "step":
            continue
        if key.startswith("dev_"):
            out[f"dev/{key[4:]}"] = value
        elif key == "best":
            out["dev/best"] = int(bool(value))
        else:
            out[f"train/{key}"] = value
    return out


def summary_of(results: dict[str, Any]) -> dict[str, Any]:
    """Final metrics as ``test/accuracy``, ``dev/loss``, ``initial_dev/accuracy`` plus status."""
    summary: dict[str, Any] = {"status": results.get("status")}
    for key, value in results.get("metrics", {}).items():
        prefix = "initial_" if key.startswith("initial_") else ""
        split, _, metric = key[len(prefix):].partition("_")
        summary[f"{prefix}{split}/{metric}"] = value
    for key, value in (results.get("training") or {}).items():
        summary[f"training/{key}"] = value
    if "error" in results:
        summary["error"] = f"{results['error']['type']}: {results['error']['message']}"[:500]
    return summary


class WandbLogger:
    """One wandb run; ``log`` per metrics row, ``finish`` in the caller's ``finally``."""

    def __init__(self, run: Any, wandb_module: Any) -> None:
        self.run = run
        self.wandb = wandb_module

    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, results: dict[str, Any]) -> "WandbLogger":
        import wandb

        mode, why_offline = choose_mode(cfg.logger.mode)
        sweep_dir, job_name = _hydra_names(run_dir)
        kwargs = dict(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group or sweep_dir,
            name=job_name,
            tags=list(cfg.logger.tags),
            config={**flatten(results["config"]), **{f"seeds.{k}": v for k, v in results["seeds"].items()}},
            dir=str(run_dir),
            settings=wandb.Settings(init_timeout=60, silent=True, console="off"),
        )
        if why_offline:
            log.warning("wandb: %s; logging offline to %s/wandb (upload later with `wandb sync %s/wandb/offline-run-*`)",
                        why_offline, run_dir, run_dir)
        try:
            run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # noqa: BLE001 - a dashboard must never stop training
            if mode != "online":
                raise
            log.warning("wandb: online start failed (%s); logging offline to %s/wandb", err, run_dir)
            run = wandb.init(mode="offline", **kwargs)
        return cls(run, wandb)

    def log(self, row: dict[str, Any]) -> None:
        data = train_row_to_wandb(row)
        if "loss" in row:  # a training row (eval rows carry dev_*)
            data["train/peak_memory_mb"] = peak_memory_mb()
        self.run.log(data, step=int(row["step"]))

    def finish(self, results: dict[str, Any]) -> None:
        try:
            self.run.summary.update(summary_of(results))
            self.run.finish(exit_code=0 if results.get("status") == "completed" else 1)
        except Exception as err:  # noqa: BLE001 - never mask the run's own outcome
            log.warning("wandb: could not finish the run cleanly: %s", err)
        finally:
            try:
                self.wandb.teardown()  # stops the wandb-core service started for this run
            except Exception as err:  # noqa: BLE001
                log.warning("wandb: teardown failed: %s", err)
