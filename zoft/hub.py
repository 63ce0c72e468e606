"""Access to the Hugging Face Hub, decided as huggingface_hub decides it.

* Offline or not: huggingface_hub's own switch (``HF_HUB_OFFLINE``, or ``TRANSFORMERS_OFFLINE``),
  read from ``huggingface_hub.constants``, so zoft and the library that downloads never disagree.
  (``datasets`` has its own switch, ``HF_DATASETS_OFFLINE``: :mod:`zoft.tasks.readers` reads it.)
* Where: huggingface_hub's endpoint (``HF_ENDPOINT``: scheme, host and port).
* How: one request through huggingface_hub's own HTTP client (``get_session``), so the proxy
  settings the downloads use (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, or a
  client factory set in code) apply to the check too. It is bounded by :data:`PROBE_TIMEOUT_S`:
  a machine without a network is told so within seconds, not after the library's retries.

The request is the one ``HfApi.auth_check`` makes (``/api/<type>s/<repo>/auth-check``), with a
timeout: its answer also tells a gated repository (licence not accepted, or no token) and a missing
or private one apart from a reachable Hub, before any download starts.

Nothing here imports torch or transformers (``python train.py`` runs it before they load).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 5.0


class Access(enum.Enum):
    OK = "ok"  # the Hub answered and the repository is readable (or the answer does not say otherwise)
    UNREACHABLE = "unreachable"  # no answer: no network, a refused connection, a proxy failing, a timeout
    GATED = "gated"  # the licence is not accepted by the token's account, or no token was given
    NOT_FOUND = "not found"  # no such repository, or a private one the token cannot read


@dataclass(frozen=True)
class HubAnswer:
    access: Access
    detail: str = ""  # the error, one line, for the message


def hub_offline() -> bool:
    """huggingface_hub's offline switch (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub huggingface_hub talks to (``HF_ENDPOINT``, default https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def probe_repo(repo_id: str, repo_type: str = "model", timeout: float = PROBE_TIMEOUT_S) -> HubAnswer:
    """Ask the Hub whether ``repo_id`` can be read, through huggingface_hub's client and proxies."""
    from huggingface_hub import get_session
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    url = f"{hub_endpoint()}/api/{repo_type}s/{repo_id}/auth-check"
    try:
        response = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
        hf_raise_for_status(response)
    except GatedRepoError as err:  # before its parent class RepositoryNotFoundError
        return HubAnswer(Access.GATED, one_line(err))
    except RepositoryNotFoundError as err:
        return HubAnswer(Access.NOT_FOUND, one_line(err))
    except HfHubHTTPError as err:  # the Hub (or a mirror without this route) answered: the download decides
        return HubAnswer(Access.OK, one_line(err))
    except Exception as err:  # noqa: BLE001 - connection, proxy, TLS and timeout errors of any HTTP library
        proxy = proxy_for(url)
        via = f" (through the proxy {proxy}, from the environment)" if proxy else ""
        return HubAnswer(Access.UNREACHABLE, one_line(err) + via)
    return HubAnswer(Access.OK)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``,
    unless ``NO_PROXY`` covers the host), read from the environment alone as huggingface_hub's
    HTTP client reads it; its user and password are left out, so the message can be shown and
    logged. None when the request goes direct."""
    import urllib.request
    from urllib.parse import urlsplit

    target = urlsplit(url)
    if urllib.request.proxy_bypass_environment(target.hostname or ""):
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy:
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port: the request failed on it; name the host alone
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def gated_advice(repo_id: str, repo_type: str = "model") -> str:
    """What to do about a gated repository: accept its licence, then give a token."""
    page = f"{hub_endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    return (f"{repo_id!r} is a gated repository: its licence must be accepted and a token given. Accept the "
            f"licence on {page} (logged in to the Hub), then log in here with `hf auth login` (older "
            "huggingface_hub: `huggingface-cli login`) or set HF_TOKEN to a token of that account, and run again")


def not_found_advice(repo_id: str, repo_type: str = "model") -> str:
    return (f"the Hub ({hub_endpoint()}) has no {repo_type} repository {repo_id!r}, or it is private and the "
            "token (HF_TOKEN or `hf auth login`) cannot read it; check the spelling")


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The cache folder of the repository's ``main`` revision
    (``$HF_HUB_CACHE/models--org--name/snapshots/<commit>``, where ``hf download`` and
    ``from_pretrained`` put files), or None when the cache holds nothing of the repository.

    The folder may lack files (a download cut short) or not exist yet (nothing completed): the
    caller decides what is missing.
    """
    from huggingface_hub import constants

    # huggingface_hub's cache layout (file_download.repo_folder_name), spelled out here: importing
    # file_download costs a quarter of a second that the offline check of train.py need not pay.
    repo = Path(constants.HF_HUB_CACHE) / "--".join([f"{repo_type}s", *repo_id.split("/")])
    if not repo.is_dir():
        return None
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        return snapshots / ref.read_text(encoding="utf-8").strip()
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1] if found else snapshots / "main"  # no snapshot yet: a folder that lacks every file
