"""The similarity objective (encoders without an MLM head, e.g. the MiniLM sentence encoder):
label texts from the template, logits against a hand computation, MeZO's projected gradient
against autograd, every method and optimizer through the config path on a tiny BERT encoder,
the anchored linear probe and LP-MeZO keeping the probe's weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES, compose_config
from zoft.config.validate import ConfigError, validate
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.kshot import generate_kshot
from zoft.lmbff.settings import prompt_settings
from zoft.lmbff.template import label_texts
from zoft.run import run

TASK = LMBFF_TASKS["sst-2-kshot"]


@pytest.fixture(scope="module")
def kshot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kshot")
    generate_kshot(TASK, FIXTURES / "lmbff" / "SST-2", root, 8, [42])
    return root


def overrides(root, out, *extra) -> list[str]:
    return ["model=tiny-bert", "task=sst-2-kshot", f"task.data_dir={root}", "task.k=8", "task.sample_seed=42",
            "trainer.progress_bar=false", "trainer.log_steps=1", "trainer.eval_before_training=false",
            f"output_dir={out}", *extra]


def test_label_texts_are_the_template_words_around_the_mask():
    assert label_texts(TASK.template, TASK.label_words) == ["It was terrible.", "It was great."]
    rte = LMBFF_TASKS["rte-kshot"]  # "*cls**sent-_0*?*mask*,*+sentl_1**sep+*": no leading "?"
    assert label_texts(rte.template, rte.label_words) == ["Yes,", "No,"]
    cfg = compose_config(["model=tiny-bert", "task=sst-2-kshot", "task.label_texts=[Bad.,Good.]"])
    assert prompt_settings(TASK, cfg.task).label_texts == ("Bad.", "Good.")


def test_an_encoder_picks_the_similarity_objective_and_bad_values_are_refused():
    cfg = compose_config(["model=tiny-bert", "task=sst-2-kshot"])
    validate(cfg)
    assert compose_config(["model=minilm-l6", "task=sst-2-kshot"]).model.kind == "encoder"
    for bad, words in [(["task.objective=similarity", "model=tiny-roberta-cls"], "kind encoder"),
                       (["model=tiny-bert", "task.objective=cls-head"], "kind seq-cls"),
                       (["model=tiny-bert", "model.pooling=max"], "model.pooling='max'"),
                       (["model=tiny-bert", "task.similarity_tau=0"], "similarity_tau=0"),
                       (["model=tiny-bert", "task.label_texts=[Only one.]"], "one non-empty text per class"),
                       (["model=tiny-bert", "optimizer=fzoo", "optimizer.probe_batch=2"], "similarity objective")]:
        with pytest.raises(ConfigError, match=words):
            validate(compose_config(["task=sst-2-kshot", *bad]))


def _float64_setup(kshot_root, pooling="mean", tau=0.05):
    """A float64 tiny BERT encoder with its similarity objective, the train items, the tokenizer."""
    from zoft.config.schema import ModelConfig
    from zoft.lmbff.data import load_kshot_splits
    from zoft.models.loader import load_model
    from zoft.objectives.similarity import attach_similarity_head, build_similarity_objective

    loaded = load_model(ModelConfig(name="t", family="bert", kind="encoder", device="cpu"))
    model = loaded.model.double().eval()
    attach_similarity_head(model, 2)
    cfg = compose_config(["model=tiny-bert", "task=sst-2-kshot"])
    objective = build_similarity_objective(
        loaded.tokenizer, prompt_settings(TASK, cfg.task), 128, tau=tau, pooling=pooling,
        pad_id=loaded.tokenizer.pad_token_id, device=torch.device("cpu"), metric="accuracy", report=(),
        show_progress=False)
    splits, _ = load_kshot_splits(TASK, str(kshot_root), 8, 42, TASK.label_words)
    return model, objective, objective.prepare(splits["train"], train=True), loaded.tokenizer


def _sentence_feature(model, tok, text: str, pooling: str) -> torch.Tensor:
    """One text alone, unpadded, through the plain model: [CLS] text [SEP] -> (H,)."""
    ids = torch.tensor([[tok.cls_token_id, *tok.encode(text, add_special_tokens=False), tok.sep_token_id]])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids))[0][0]  # (T, H)
    return hidden[0] if pooling == "cls" else hidden.mean(0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_logits_equal_a_hand_computation(kshot_root, pooling):
    from zoft.objectives.mlm import collate

    model, objective, items, tok = _float64_setup(kshot_root, pooling=pooling, tau=0.07)
    chunk = items[:5]  # sentences of different lengths: the batch is padded, the texts appended
    texts = [_sentence_feature(model, tok, t, pooling) for t in ("It was terrible.", "It was great.")]
    expected = torch.stack([
        torch.stack([F.cosine_similarity(_sentence_feature(model, tok, it.example.fields["sentences"][0], pooling),
                                         t, dim=0) for t in texts]) / 0.07
        for it in chunk])
    with torch.no_grad():
        got = objective.class_logits(model, collate(chunk, tok.pad_token_id, torch.device("cpu")))
    assert got.shape == (5, 2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got.abs().max() <= 1 / 0.07 + 1e-9  # a cosine over tau


def test_mezo_projected_gradient_equals_the_autograd_directional_derivative(kshot_root):
    """MeZO's g = (L(theta + eps z) - L(theta - eps z)) / 2 eps is grad L . z (float64), where L
    sends the batch and the label texts through the same perturbed weights; a step is two
    forward passes of the model."""
    from zoft.optim import MeZO

    model, objective, batch, _ = _float64_setup(kshot_root)
    params = list(model.parameters())  # the body and the head (scale, bias)
    model.zero_grad()
    objective.loss(model, batch).backward()
    # (the pooler is unused by mean pooling: no gradient, and MeZO's moves of it change no loss)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    start = [p.detach().clone() for p in params]
    forwards = []
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    lr = 1e-3
    opt = MeZO(params, lr=lr, eps=1e-5, seed=3)
    with torch.no_grad():
        opt.step(lambda: objective.loss(model, batch))
    hook.remove()
    g = opt.last_projected_grads[0]
    # The update is -lr * g * z, so the z it drew is -(theta' - theta) / (lr * g).
    z = [-(p.detach() - s) / (lr * g) for p, s in zip(params, start)]
    directional = sum((gr * zi).sum() for gr, zi in zip(grads, z)).item()
    assert abs(g) > 1e-3
    assert g == pytest.approx(directional, rel=1e-4)
    assert len(forwards) == 2


def test_the_label_text_start_of_the_probe_reproduces_the_similarity_logits(kshot_root):
    from zoft.objectives.mlm import collate

    model, objective, items, tok = _float64_setup(kshot_root)
    batch = collate(items, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logits = objective.class_logits(model, batch)
    w0, b0 = objective.probe_start(model)
    feats, targets = objective.features(model, items)
    torch.testing.assert_close(feats @ w0.T + b0, logits, rtol=1e-9, atol=1e-9)
    assert targets.tolist() == [it.label for it in items]


def test_the_anchored_probe_stays_at_its_start_when_strongly_regularised():
    from zoft.methods.anchored_probe import fit_anchored_probe, fit_one

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = F.normalize(torch.randn(40, 8, generator=gen, dtype=torch.float64) + 0.8 * (2 * y[:, None] - 1), dim=-1)
    w0 = torch.randn(2, 8, generator=gen, dtype=torch.float64)  # an arbitrary, poor start
    b0 = torch.zeros(2, dtype=torch.float64)
    w, b = fit_one(x, y, w0, b0, lam=1e6)
    assert (w - w0).norm() / w0.norm() < 1e-4  # the pull toward the start wins
    loose, _ = fit_one(x, y, w0, b0, lam=1e-3)
    loss = lambda w_, b_: F.cross_entropy(x @ w_.T + b_, y).item()
    assert loss(loose, b) < loss(w0, b0) - 0.1
    fit = fit_anchored_probe(x, y, w0, b0)
    assert fit.cv_accuracy >= 0.9 and fit.train_loss < loss(w0, b0)


@pytest.mark.parametrize("method,optimizer,lr,trains", [
    ("ft", "adam", "1e-3", "all"),
    ("ft", "mezo", "1e-3", "all"),
    ("lora", "adam", "1e-2", "lora"),
    ("lora", "mezo", "1e-2", "lora"),
    ("prefix", "adam", "1e-2", "prefix"),
    ("prefix", "mezo", "1e-2", "prefix"),
    ("head", "adam", "1e-1", "head"),
    ("head", "mezo", "1e-1", "head"),
    ("linear-probe", "adam", "1e-3", "probe-then-all"),
    ("linear-probe", "mezo", "1e-3", "probe-then-all"),
])
def test_every_method_and_optimizer_runs_through_the_config_path(kshot_root, tmp_path, method, optimizer, lr, trains):
    extra = [f"method={method}", f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.max_steps=4",
             "trainer.batch_size=4", "trainer.eval_steps=2", "trainer.checkpoint_steps=0"]
    if method == "linear-probe":
        extra.append(f"method.lp_then={optimizer}")
    results = run(compose_config(overrides(kshot_root, tmp_path, *extra)))
    assert results["status"] == "completed"
    assert 0 <= results["metrics"]["test_accuracy"] <= 1 and math.isfinite(results["metrics"]["test_loss"])
    trainable, total = results["parameters"]["trainable"], results["parameters"]["total"]
    hidden, layers = 64, 2  # the tiny architecture (zoft.config.schema.TinyArchConfig)
    expected = {"head": 3,  # scale + one bias per class
                "lora": layers * 2 * 8 * (hidden + hidden),  # r=8 A and B on query and value
                "prefix": layers * 2 * 5 * hidden}  # 5 keys + 5 values per layer
    if trains in expected:
        assert trainable == expected[trains]
    elif trains == "all":
        assert trainable == total
    else:  # the probe Linear joins; the scale and bias it replaces are frozen
        assert trainable == total - 3 and results["pre_training"]["anchor"] == "label texts"


def test_zero_shot_on_a_tiny_encoder_scores_every_example(kshot_root, tmp_path, capsys):
    results = run(compose_config(overrides(kshot_root, tmp_path, "method=zero-shot")))
    assert results["status"] == "completed"
    assert "objective    similarity model kind encoder" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == results["data"]["sizes"]["test"] == 24
    for row in rows:
        assert row["prediction"] in ("terrible", "great")
        assert all(abs(s) <= 20 + 1e-4 for s in row["scores"])  # |cos| / 0.05
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    assert results["metrics"]["test_accuracy"] == pytest.approx(accuracy)


def test_lp_mezo_keeps_the_probe_when_mezo_makes_dev_worse(kshot_root, tmp_path):
    """The probe's weights are the first best-checkpoint candidate (step 0): with an LR that
    wrecks them, the run ends with the probe's dev numbers."""
    results = run(compose_config(overrides(kshot_root, tmp_path, "method=lp-mezo", "optimizer.lr=30",
                                           "trainer.max_steps=4", "trainer.batch_size=4", "trainer.eval_steps=2",
                                           "trainer.select_by=loss", "trainer.checkpoint_steps=0")))
    assert results["status"] == "completed"
    probe_dev = results["pre_training"]["dev_loss"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    later = [r["dev_loss"] for r in rows if "dev_loss" in r and r["step"] > 0]
    assert later and min(later) > probe_dev  # MeZO at this LR made dev worse at every evaluation
    assert results["training"]["best_step"] == 0
    assert results["metrics"]["dev_loss"] == pytest.approx(probe_dev, rel=1e-6)


def test_mean_pooling_feeds_the_cls_head_and_its_linear_probe(kshot_root):
    """``model.pooling=mean`` with the cls-head objective: the classifier reads the mean of the
    last hidden states over the real tokens (BERT's untrained pooler is skipped), in training,
    evaluation and linear probing alike."""
    from zoft.config.schema import TinyArchConfig
    from zoft.lmbff.data import load_kshot_splits
    from zoft.lmbff.template import encode_plain
    from zoft.models.tiny import build_tiny_model, build_tiny_tokenizer
    from zoft.objectives.mlm import ClsHeadObjective, collate

    model = build_tiny_model("bert", "seq-cls", TinyArchConfig(), seed=0, num_labels=2).double().eval()
    tok = build_tiny_tokenizer("bert")
    objective = ClsHeadObjective(encode=lambda s: encode_plain(tok, s, 128), label_words=TASK.label_words,
                                 pooling="mean", pad_id=tok.pad_token_id, device=torch.device("cpu"),
                                 metric="accuracy", report=(), show_progress=False)
    splits, _ = load_kshot_splits(TASK, str(kshot_root), 8, 42, TASK.label_words)
    items = objective.prepare(splits["train"], train=True)[:4]
    means = []
    for it in items:
        ids = torch.tensor([it.input_ids])
        with torch.no_grad():
            means.append(model.bert(input_ids=ids, attention_mask=torch.ones_like(ids))[0][0].mean(0))
    means = torch.stack(means)
    with torch.no_grad():
        got = objective.class_logits(model, collate(items, tok.pad_token_id, torch.device("cpu")))
    torch.testing.assert_close(got, model.classifier(means), rtol=1e-10, atol=1e-10)
    feats, targets = objective.features(model, items)
    torch.testing.assert_close(feats, means.float(), rtol=1e-5, atol=1e-6)  # probe features are float32
