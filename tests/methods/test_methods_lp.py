"""Linear probing: features are the head's input, the fitted classifier is written into the head
rows so the model's own label-word softmax equals sklearn's probabilities, and the run integrates
it (alone, or followed by MeZO as the paper's LP-MeZO)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import FAST, TINY64, compose_config
from methods_helpers import LABEL_IDS, MASK_POS, batch, tiny
from zoft.config.validate import ConfigError, validate
from zoft.methods.linear_probe import fit_logistic, linear_probe, write_back
from zoft.models.heads import masked_features
from zoft.run import run


def _head_probs(head, feats, classes):
    return head(feats)[:, torch.as_tensor(classes)].softmax(-1).detach().numpy()


@pytest.mark.parametrize("num_classes,bias", [(2, True), (3, False)])
def test_write_back_makes_the_head_reproduce_sklearn(num_classes, bias):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 16, generator=gen)
    labels = torch.tensor([10, 20, 30][:num_classes])[torch.arange(60) % num_classes]
    feats += 0.8 * F.one_hot(torch.arange(60) % num_classes, 16).float()  # separable-ish
    head = torch.nn.Linear(16, 40, bias=bias)
    clf = fit_logistic(feats.numpy(), labels.numpy(), fit_intercept=bias, early_stopping=False)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head
    write_back(model, clf.classes_, clf.coef_, clf.intercept_ if bias else None)
    np.testing.assert_allclose(_head_probs(head, feats, clf.classes_), clf.predict_proba(feats.numpy()), atol=1e-5)


def test_masked_features_are_the_decoder_input_at_the_mask():
    model = tiny("roberta")
    ids, mask, pos, _ = batch("roberta")
    feats = masked_features(model, ids, mask, torch.full((ids.shape[0],), pos))
    with torch.no_grad():
        h = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state[:, pos]
        ref = model.lm_head.layer_norm(F.gelu(model.lm_head.dense(h)))
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)


def test_roberta_probe_writes_label_rows_used_by_the_mlm_forward():
    model = tiny("roberta")
    ids, mask, pos, labels = batch("roberta", rows=32)
    feats = masked_features(model, ids, mask, torch.full((32,), pos))
    targets = LABEL_IDS[labels]
    out = linear_probe(model, feats, targets)
    assert out["classes"] == LABEL_IDS.tolist() and out["num_samples"] == 32
    clf = fit_logistic(feats.numpy(), targets.numpy(), fit_intercept=True, early_stopping=False)
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask).logits[:, MASK_POS][:, LABEL_IDS].softmax(-1)
    np.testing.assert_allclose(probs.numpy(), clf.predict_proba(feats.numpy()), atol=1e-4)
    # The tied input embedding changed with the head rows (as in the original, unless untie_head).
    assert torch.equal(model.get_input_embeddings().weight[LABEL_IDS], model.get_output_embeddings().weight[LABEL_IDS])


def test_linear_probe_run_fits_without_a_loop(tmp_path):
    results = run(compose_config(FAST + TINY64 + ["method=linear-probe", f"output_dir={tmp_path}",
                                         "trainer.eval_before_training=true"]))
    assert results["status"] == "completed"
    lp = results["pre_training"]
    assert "training" not in results and "continue_training" not in lp  # the fit alone; no loop ran
    assert lp["num_samples"] == 32  # one option token per gold answer (" terrible" / " great")
    assert len(lp["classes"]) == 2 and np.isfinite(lp["train_loss"])
    m = results["metrics"]
    # The fitted classifier beats the random tiny model's training loss on the dev set.
    assert m["dev_loss"] < m["initial_dev_loss"]
    assert (tmp_path / "predictions_test.jsonl").is_file()


def test_lp_mezo_preset_probes_then_trains(tmp_path):
    results = run(compose_config(FAST + ["method=lp-mezo", f"output_dir={tmp_path}", "trainer.max_steps=10",
                                         "trainer.eval_steps=0", "trainer.batch_size=8"]))
    assert results["config"]["method"]["lp_then"] == "mezo"
    assert 0 <= results["pre_training"]["dev_accuracy"] <= 1  # the probe alone, before MeZO
    assert results["training"]["steps"] == 10
    assert results["parameters"]["trainable"] == results["parameters"]["total"]
    assert results["config"]["method"]["lp_early_stopping"] is True


def test_lp_then_must_match_the_optimizer():
    cfg = compose_config(["method=linear-probe", "method.lp_then=mezo", "optimizer=adam"])
    with pytest.raises(ConfigError, match="add optimizer=mezo"):
        validate(cfg)


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_causal_features_are_the_final_hidden_state_before_each_option_token(family):
    from zoft.config.schema import TaskConfig
    from zoft.models.tiny import build_tiny_tokenizer
    from zoft.objectives.candidates import CandidateObjective
    from zoft.tasks import get_task
    from zoft.tasks.data import load_task_data

    spec = get_task("demo")
    data = load_task_data(spec, TaskConfig(name="demo", num_train=6, num_dev=0, num_test=0))
    tok = build_tiny_tokenizer(family)
    objective = CandidateObjective(spec, tok, torch.device("cpu"), max_length=512,
                                   train_as_classification=True, show_progress=False)
    items = objective.prepare(data.train, train=True)
    model = tiny(family)
    feats, targets = objective.features(model, items)
    refs, gold_ids = [], []
    for it in items:  # one example at a time, no padding: the state before each gold option token
        enc = it.train_enc
        ids = torch.tensor([enc.input_ids[enc.gold[0]]])
        n = enc.option_lens[enc.gold[0]]
        with torch.no_grad():
            h = model.base_model(input_ids=ids).last_hidden_state  # after the final norm
        refs.append(h[0, -n - 1:-1])
        gold_ids.append(ids[0, -n:])
    torch.testing.assert_close(feats, torch.cat(refs), rtol=1e-4, atol=1e-4)
    assert targets.tolist() == torch.cat(gold_ids).tolist()
