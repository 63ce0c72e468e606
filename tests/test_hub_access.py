"""Hub access decided as huggingface_hub decides it (zoft/hub.py, zoft/models/source.py, the Hub
datasets of zoft/tasks/readers.py): the endpoint with its port, proxies, the offline switch, a
partial cache, gated repositories, and the library's own error kept in the message.

Every server is a loopback one (tests/http_helpers.py); huggingface_hub reads HF_ENDPOINT,
HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported, so the tests set its constants as those
variables would have (and the variables too), and one test starts a fresh process to show the
variables themselves are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import huggingface_hub
import pytest
from huggingface_hub import constants

from conftest import ROOT
from http_helpers import LoopbackServer, clear_proxies, closed_port_url
from zoft.config.schema import ModelConfig
from zoft.models.loader import ModelUnavailableError, check_model_available, load_model
from zoft.models.source import check_source
from zoft.tasks.readers import DataFileError, read_hub_split

REPO = "org/tiny-model"
AUTH_CHECK = f"/api/models/{REPO}/auth-check"
GATED = (403, {"X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to model {REPO} is restricted."}, b"{}")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """huggingface_hub online, with an empty cache in tmp_path/hub and no proxy; returns a function
    that points it at an endpoint."""
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    huggingface_hub.close_session()  # its client reads the proxy variables when it is made

    def endpoint(url: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)

    yield endpoint
    huggingface_hub.close_session()


def model_cfg(path: str = REPO) -> ModelConfig:
    return ModelConfig(name="tiny", path=path, device="cpu")


def fake_cache(tmp_path, files: dict[str, bytes]):
    """A cache entry for REPO as huggingface_hub lays it out, holding ``files``."""
    repo = tmp_path / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


CONFIG_ONLY = {"config.json": json.dumps({"model_type": "opt"}).encode()}


def test_endpoint_port_is_honoured(hub):
    with LoopbackServer() as server:
        hub(server.url)
        check_model_available(model_cfg())
        assert check_source(model_cfg()) == (REPO, False)
    assert AUTH_CHECK in server.paths()


def test_proxy_is_honoured_and_without_it_the_hub_is_unreachable(hub, monkeypatch):
    hub(closed_port_url())  # the endpoint itself refuses connections: only the proxy reaches it
    with pytest.raises(ModelUnavailableError) as err:
        check_model_available(model_cfg())
    assert "not in the local Hugging Face cache" in str(err.value) and "cannot be reached" in str(err.value)
    with LoopbackServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        huggingface_hub.close_session()
        check_model_available(model_cfg())
    assert proxy.requests and proxy.requests[0][1].startswith(constants.ENDPOINT + AUTH_CHECK)


def test_a_failing_proxy_is_named_without_its_password(hub, monkeypatch):
    hub(closed_port_url())
    dead_proxy = closed_port_url().replace("http://", "http://user:secret@")
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    huggingface_hub.close_session()
    with pytest.raises(ModelUnavailableError) as err:
        check_model_available(model_cfg())
    message = str(err.value)
    assert "cannot be reached" in message and "secret" not in message
    assert f"through the proxy {dead_proxy.replace('user:secret@', '')}" in message


def test_offline_asks_nothing_and_keeps_the_message(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with LoopbackServer() as server:
        hub(server.url)
        with pytest.raises(ModelUnavailableError) as err:
            check_model_available(model_cfg())
    assert server.requests == []
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert f"hf download {REPO}" in message and "model.path=" in message


def test_partial_cache_offline_is_named_with_its_missing_files(hub, monkeypatch, tmp_path):
    snapshot = fake_cache(tmp_path, CONFIG_ONLY)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        check_model_available(model_cfg())
    message = str(err.value)
    assert "only part" in message and str(snapshot) in message
    assert "model.safetensors or pytorch_model.bin" in message and "tokenizer" in message
    assert "config.json" not in message.split("lacks", 1)[1].split(";")[0]  # it is there


def test_partial_cache_is_completed_online(hub, tmp_path):
    fake_cache(tmp_path, CONFIG_ONLY)
    with LoopbackServer() as server:
        hub(server.url)
        assert check_source(model_cfg()) == (REPO, False)  # not local_files_only: the rest downloads


def test_complete_cache_loads_offline(hub, monkeypatch, tmp_path):
    tiny = load_model(ModelConfig(name="tiny-opt", device="cpu"))
    snapshot = fake_cache(tmp_path, {})
    tiny.model.save_pretrained(snapshot)
    tiny.tokenizer.save_pretrained(snapshot)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_source(model_cfg()) == (REPO, True)
    loaded = load_model(model_cfg())
    assert loaded.model.config.model_type == "opt"


def test_complete_cache_is_used_when_the_hub_is_unreachable(hub, tmp_path):
    snapshot = fake_cache(tmp_path, {"model.safetensors": b"x", "tokenizer.json": b"{}", **CONFIG_ONLY})
    hub(closed_port_url())
    assert snapshot.is_dir() and check_source(model_cfg()) == (REPO, True)


def test_gated_repo_names_the_licence_and_the_token(hub):
    with LoopbackServer({AUTH_CHECK: GATED}) as server:
        hub(server.url)
        with pytest.raises(ModelUnavailableError) as err:
            check_model_available(model_cfg())
    message = str(err.value)
    assert "gated" in message and "licence" in message and f"{server.url}/{REPO}" in message
    assert "hf auth login" in message and "huggingface-cli login" in message and "HF_TOKEN" in message
    assert "save_pretrained" not in message


def test_gated_error_while_loading_is_named_too(hub, monkeypatch):
    """transformers reports a gated repo as an OSError raised from huggingface_hub's GatedRepoError."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    import zoft.models.loader as loader

    def refuse(*args, **kwargs):
        response = httpx2.Response(401, request=httpx2.Request("GET", f"https://huggingface.co/{REPO}"))
        raise OSError("You are trying to access a gated repo.") from GatedRepoError("401 Client Error",
                                                                                     response=response)

    monkeypatch.setattr(loader, "check_source", lambda cfg: (REPO, False))
    monkeypatch.setattr(loader.AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(ModelUnavailableError) as err:
        load_model(model_cfg())
    assert "licence" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert "save_pretrained" not in str(err.value)


def test_missing_repo_is_named(hub):
    missing = (404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}")
    with LoopbackServer({AUTH_CHECK: missing}) as server:
        hub(server.url)
        with pytest.raises(ModelUnavailableError, match="has no model repository 'org/tiny-model'"):
            check_model_available(model_cfg())


@pytest.mark.slow
def test_a_fresh_process_reads_hf_endpoint_and_the_proxy_variables(tmp_path):
    """The variables as a user sets them, read by huggingface_hub at import in a new process."""
    code = ("from zoft.config.schema import ModelConfig; from zoft.models.source import check_source; "
            f"print(check_source(ModelConfig(name='t', path={REPO!r})))")
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                                                     "NO_PROXY")}
    env.update(HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    with LoopbackServer() as proxy:
        env.update(HF_ENDPOINT=closed_port_url(), HTTP_PROXY=proxy.url)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"({REPO!r}, False)"
    assert AUTH_CHECK in proxy.paths()  # (huggingface_hub may ask the endpoint other things too)


# ------------------------------------------------------------------------------ Hub datasets


@pytest.fixture
def datasets_online(hub, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return hub


def test_dataset_error_is_kept_beside_the_hint_offline(monkeypatch):
    assert datasets.config.HF_HUB_OFFLINE  # conftest: HF_DATASETS_OFFLINE=1

    def refuse(*args, **kwargs):
        raise ValueError("Unknown split \"validation\". Should be one of ['train'].")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(DataFileError) as err:
        read_hub_split("org/data", None, "validation")
    message = str(err.value)
    assert "Unknown split" in message and "ValueError" in message
    assert "HF_DATASETS_OFFLINE=1" in message and "task.data_dir=" in message


def test_dataset_through_a_proxy(datasets_online, monkeypatch):
    datasets_online(closed_port_url())
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"text": "hi", "label": 1}])
    with LoopbackServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        huggingface_hub.close_session()
        assert read_hub_split("org/data", "default", "train") == [{"text": "hi", "label": 1}]
    assert proxy.paths() == ["/api/datasets/org/data/auth-check"]


def test_unreachable_hub_fails_before_datasets_retries(datasets_online, monkeypatch):
    datasets_online(closed_port_url())
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not be called"))
    with pytest.raises(DataFileError, match="cannot be reached.*HF_DATASETS_OFFLINE=1"):
        read_hub_split("org/data", None, "train")


def test_gated_dataset_names_the_licence(datasets_online):
    gated = (403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"}, b"{}")
    with LoopbackServer({"/api/datasets/org/data/auth-check": gated}) as server:
        datasets_online(server.url)
        with pytest.raises(DataFileError) as err:
            read_hub_split("org/data", None, "train")
    assert f"{server.url}/datasets/org/data" in str(err.value) and "HF_TOKEN" in str(err.value)
