"""Methods on sequence classifiers (``model.kind=seq-cls``, the cls-head objective): which
parameters train for head, LoRA, prefix and linear probing on tiny BERT/RoBERTa classifiers, the
linear probe against an independent scikit-learn fit, and tiny end-to-end runs of every method
with every optimizer family on an LM-BFF task."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from zoft.config.schema import MethodConfig, TinyArchConfig
from lmbff_helpers import sst2_kshot_root
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.methods import apply_method
from zoft.errors import MethodError
from zoft.methods.seqcls import head_prefix
from zoft.models.heads import classifier_linear, is_seq_cls
from zoft.models.tiny import BOS, EOS, VOCAB_SIZE, build_tiny_model
from zoft.run import run

ARCH = TinyArchConfig()
# The task head of each family's classifier: BERT one Linear on the pooler, RoBERTa dense + out_proj.
HEAD_PARAMS = {
    "bert": {"classifier.weight", "classifier.bias"},
    "roberta": {"classifier.dense.weight", "classifier.dense.bias",
                "classifier.out_proj.weight", "classifier.out_proj.bias"},
}
PROBED = {"bert": {"classifier.weight", "classifier.bias"},
          "roberta": {"classifier.out_proj.weight", "classifier.out_proj.bias"}}


def classifier(family: str, num_labels: int = 2) -> torch.nn.Module:
    return build_tiny_model(family, "seq-cls", ARCH, seed=0, num_labels=num_labels).eval()


def adapted(family: str, method: str, **options):
    model = classifier(family)
    torch.manual_seed(1)
    named = apply_method(model, MethodConfig(name=method, **options), family)
    return model, {n for n, _ in named}


def rows(n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (n, 10), generator=gen)
    ids[:, 0], ids[:, -1] = BOS, EOS
    return ids, torch.ones_like(ids), (torch.arange(n) % 2).long()


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_the_task_head_is_found(family):
    model = classifier(family, num_labels=3)
    assert is_seq_cls(model) and not is_seq_cls(build_tiny_model(family, "masked", ARCH, seed=0))
    assert head_prefix(model) == "classifier."
    assert classifier_linear(model).out_features == 3


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_tuning_trains_the_classification_head_alone(family):
    model, names = adapted(family, "head")
    assert names == HEAD_PARAMS[family]
    ids, mask, labels = rows()
    loss = F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in names)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in names)


def test_head_tuning_builds_no_graph_below_the_head():
    model, _ = adapted("bert", "head")
    seen = []
    model.classifier.register_forward_pre_hook(lambda m, args: seen.append(args[0].requires_grad))
    ids, mask, _ = rows()
    out = model(input_ids=ids, attention_mask=mask).logits
    assert seen == [False] and out.requires_grad  # the pooled input carries no graph; the logits do


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_untie_head_is_refused_on_a_classifier(family):
    with pytest.raises(MethodError, match="untie_head"):
        adapted(family, "head", untie_head=True)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_lora_on_a_classifier_also_trains_the_head(family):
    model, names = adapted(family, "lora")
    lora = {n for n in names if ".lora_" in n}
    assert names - lora == HEAD_PARAMS[family]
    # r 8 on query and value of each layer: layers x 2 x r x (in + out)
    assert sum(p.numel() for n, p in model.named_parameters() if n in lora) == 2 * 2 * 8 * (64 + 64)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_prefix_on_a_classifier_also_trains_the_head(family):
    model, names = adapted(family, "prefix")
    prefix = {n for n in names if n.startswith("prefix_kv.")}
    assert names - prefix == HEAD_PARAMS[family]
    assert sum(p.numel() for n, p in model.named_parameters() if n in prefix) == 2 * 2 * 5 * 64


def test_the_bert_prefix_reaches_every_real_token():
    model, _ = adapted("bert", "prefix")
    ids, mask, labels = rows()
    logits = model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        model.prefix_kv.keys[0].mul_(3.0)
    assert not torch.allclose(logits, model(input_ids=ids, attention_mask=mask).logits)
    F.cross_entropy(logits, labels).backward()
    assert model.prefix_kv.keys[1].grad.abs().sum() > 0 and model.classifier.weight.grad is not None


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_linear_probe_marks_the_probed_linear_trainable(family):
    assert adapted(family, "linear-probe")[1] == PROBED[family]
    model, names = adapted(family, "linear-probe", lp_then="mezo")
    assert names == {n for n, _ in model.named_parameters()}


def _pooled(model, ids, mask):
    """The input of the classifier's last Linear, computed here independently of zoft."""
    with torch.no_grad():
        if hasattr(model, "bert"):
            return model.bert(input_ids=ids, attention_mask=mask).pooler_output
        cls = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        return torch.tanh(model.classifier.dense(cls))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_input_features_are_the_pooled_first_token(family):
    from zoft.models.heads import head_input_features

    model = classifier(family)
    ids, mask, _ = rows()
    feats = head_input_features(model, {"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(feats, _pooled(model, ids, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_three_class_probe_is_written_into_the_head(family):
    """Multi-class: one row per class; the model's softmax then equals sklearn's probabilities."""
    from zoft.methods.linear_probe import linear_probe
    from zoft.models.heads import head_input_features

    model = classifier(family, num_labels=3)
    ids, mask, _ = rows(n=45, seed=2)
    labels = torch.arange(45) % 3
    inputs = {"input_ids": ids, "attention_mask": mask}
    feats = head_input_features(model, inputs)
    out = linear_probe(model, feats, labels)
    assert out["classes"] == [0, 1, 2]
    clf = _sklearn_fit(feats.numpy(), labels.numpy())
    with torch.no_grad():
        probs = model(**inputs).logits.softmax(-1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(feats.numpy()), atol=1e-4)


@pytest.fixture(scope="module")
def kshot_root(tmp_path_factory):
    return sst2_kshot_root(tmp_path_factory, 8)


def overrides(root, out, *extra) -> list[str]:
    # Explicit trainer/optimizer values: the tests do not depend on the protocol defaults.
    return ["task=sst-2-kshot", f"task.data_dir={root}", "task.k=8", "task.sample_seed=42",
            "trainer.progress_bar=false", "trainer.log_steps=1", "trainer.eval_before_training=false",
            "trainer.batch_size=8", "trainer.eval_batch_size=32", "trainer.lr_scheduler=constant",
            "trainer.select_by=loss", f"output_dir={out}", *extra]


def _sklearn_fit(features: np.ndarray, labels: np.ndarray):
    """An independent LogisticRegressionCV with the original's settings (L2, lbfgs, 10 Cs, 5 folds)."""
    from sklearn.linear_model import LogisticRegressionCV

    kwargs = dict(max_iter=5000, tol=1e-4, fit_intercept=True, random_state=0)
    accepted = inspect.signature(LogisticRegressionCV.__init__).parameters
    kwargs.update({k: v for k, v in {"l1_ratios": (0.0,), "scoring": "accuracy",
                                      "use_legacy_attributes": True}.items() if k in accepted})
    return LogisticRegressionCV(**kwargs).fit(features, labels)


@pytest.mark.parametrize("model_name,family", [("tiny-bert-cls", "bert"), ("tiny-roberta-cls", "roberta")])
def test_linear_probe_run_matches_an_independent_sklearn_fit(kshot_root, tmp_path, model_name, family):
    """The run fits the head on the pooled features of the train split; afterwards the model's own
    class probabilities on the test split equal those of sklearn fitted here from scratch."""
    from zoft.lmbff.data import load_kshot_splits
    from zoft.lmbff.template import encode_plain
    from zoft.models.loader import load_model

    cfg = compose_config(overrides(kshot_root, tmp_path, f"model={model_name}", "method=linear-probe",
                                   "save_model=true"))
    results = run(cfg)
    assert results["status"] == "completed"
    assert results["pre_training"]["classes"] == [0, 1] and results["pre_training"]["num_samples"] == 16
    assert results["parameters"]["trainable"] == 64 * 2 + 2

    fresh = load_model(cfg.model, num_labels=2)  # the same seeded random body, head not fitted
    base, tok = fresh.model, fresh.tokenizer
    splits, _ = load_kshot_splits(LMBFF_TASKS["sst-2-kshot"], str(kshot_root), 8, 42, ("terrible", "great"))

    def encode(examples):
        encoded = [encode_plain(tok, ex.fields["sentences"], 512).input_ids for ex in examples]
        width = max(map(len, encoded))
        ids = torch.full((len(encoded), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for r, e in enumerate(encoded):
            ids[r, :len(e)], mask[r, :len(e)] = torch.tensor(e), 1
        return ids, mask, np.array([ex.gold_indices[0] for ex in examples])

    ids, mask, labels = encode(splits['train'])
    clf = _sklearn_fit(_pooled(base, ids, mask).numpy(), labels)
    test_ids, test_mask, _ = encode(splits['test'])
    expected = clf.predict_proba(_pooled(base, test_ids, test_mask).numpy())

    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()  # the fitted model
    with torch.no_grad():
        probs = saved(input_ids=test_ids, attention_mask=test_mask).logits.softmax(-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    test_labels = encode(splits['test'])[2]
    assert results["metrics"]["test_accuracy"] == pytest.approx(float((expected.argmax(1) == test_labels).mean()))


# Every method that makes sense on a classifier, with each optimizer family.
METHOD_RUNS = [
    ("ft", "adam", "1e-3"), ("ft", "sgd", "1e-2"), ("ft", "mezo", "1e-3"),
    ("lora", "adam", "1e-2"), ("lora", "sgd", "1e-1"), ("lora", "mezo", "1e-3"),
    ("prefix", "adam", "1e-2"), ("prefix", "sgd", "1e-1"), ("prefix", "mezo", "1e-3"),
    ("head", "adam", "1e-2"), ("head", "sgd", "1e-1"), ("head", "mezo", "1e-2"),
]


@pytest.mark.parametrize("method,optimizer,lr", METHOD_RUNS)
def test_every_method_runs_on_a_bert_classifier(kshot_root, tmp_path, method, optimizer, lr):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-bert-cls", f"method={method}",
                                   f"optimizer={optimizer}", f"optimizer.lr={lr}",
                                   *(["optimizer.eps=1e-2"] if optimizer not in ("adam", "sgd") else []),
                                   "trainer.max_steps=4", "trainer.eval_steps=2"))
    results = run(cfg)
    assert results["status"] == "completed", results.get("error")
    assert 0 <= results["metrics"]["test_accuracy"] <= 1
    if optimizer == "mezo":
        assert results["training"]["forward_passes"] == 8


def test_lp_mezo_runs_on_a_bert_classifier(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-bert-cls", "method=lp-mezo",
                                   "optimizer.lr=1e-5", "optimizer.eps=1e-3", "trainer.max_steps=4",
                                   "trainer.eval_steps=2"))
    results = run(cfg)
    assert results["status"] == "completed", results.get("error")
    assert "dev_accuracy" in results["pre_training"]
    assert results["parameters"]["trainable"] == results["parameters"]["total"]


@pytest.mark.parametrize("method,lr", [("ft", "3e-3"), ("lora", "3e-2")])
def test_adam_fits_the_train_split_of_a_bert_classifier(kshot_root, tmp_path, method, lr):
    """A learning check with a wide margin: 16 training examples memorised by the whole model or
    its adapters (a random tiny BERT's pooled features barely differ between inputs, so the head
    alone cannot fit them; head tuning is checked through the linear probe instead)."""
    import json

    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-bert-cls", f"method={method}",
                                   "optimizer=adam", f"optimizer.lr={lr}", "trainer.max_steps=60",
                                   "trainer.batch_size=16", "trainer.eval_steps=0"))
    assert run(cfg)["status"] == "completed"
    losses = [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, (losses[:5], losses[-5:])
