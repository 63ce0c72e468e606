"""Tiny end-to-end runs of the masked-LM family through train.py's composition and the one loop:
mlm-prompt and cls-head with Adam and MeZO, the non-differentiable metric objective, and the
paper's RoBERTa commands."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES, compose_config
from zoft.config.validate import ConfigError, validate
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.kshot import generate_kshot
from zoft.run import run


@pytest.fixture(scope="module")
def kshot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kshot")
    generate_kshot(LMBFF_TASKS["sst-2-kshot"], FIXTURES / "lmbff" / "SST-2", root, 8, [42])
    generate_kshot(LMBFF_TASKS["sst-5-kshot"], FIXTURES / "lmbff" / "sst-5", root, 3, [42])
    return root


def overrides(root, out, *extra) -> list[str]:
    return ["task=sst-2-kshot", f"task.data_dir={root}", "task.k=8", "task.sample_seed=42",
            "trainer.progress_bar=false", "trainer.log_steps=1", "trainer.eval_before_training=false",
            f"output_dir={out}", *extra]


def train_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def assert_loss_falls(run_dir, drop=0.05):
    losses = train_losses(run_dir)
    window = max(len(losses) // 10, 1)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < first - drop, (first, last)


# A random tiny RoBERTa barely separates sentences at the mask / <s> state: its loss sits at ln 2
# and MeZO's progress in a few hundred steps is ~1e-4 (measured over seeds and float32/float64),
# too small to assert on any CPU. MeZO's run here checks the pipeline; that its steps descend is
# shown exactly by test_a_mezo_step_descends_to_first_order below. Adam's drop is large.
@pytest.mark.parametrize("model,objective", [("tiny-roberta", "mlm-prompt"), ("tiny-roberta-cls", "cls-head")])
@pytest.mark.parametrize("optimizer,lr,steps,drop", [("adam", "3e-3", 40, 0.05), ("mezo", "1e-2", 300, None)])
def test_training_lowers_the_loss(kshot_root, tmp_path, model, objective, optimizer, lr, steps, drop):
    cfg = compose_config(overrides(kshot_root, tmp_path, f"model={model}", "method=ft", f"optimizer={optimizer}",
                                   f"optimizer.lr={lr}", f"trainer.max_steps={steps}", "trainer.batch_size=16",
                                   f"trainer.eval_steps={steps // 2}", "trainer.select_by=metric"))
    results = run(cfg)
    assert results["status"] == "completed"
    assert results["data"]["sizes"] == {"train": 16, "dev": 16, "test": 24}
    assert 0 <= results["metrics"]["test_accuracy"] <= 1
    if drop is not None:
        assert_loss_falls(tmp_path, drop)
    if optimizer == "mezo":
        assert results["training"]["forward_passes"] == 2 * steps
    preds = [json.loads(x) for x in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) == 24 and {p["prediction"] for p in preds} <= {"terrible", "great"}


def test_prompt_training_reaches_the_fixture_task(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "method=ft", "optimizer=adam",
                                   "optimizer.lr=3e-3", "trainer.max_steps=60", "trainer.batch_size=8"))
    results = run(cfg)
    assert results["metrics"]["dev_accuracy"] >= 0.9, results["metrics"]


def test_metric_objective_with_mezo(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "method=ft", "optimizer=mezo",
                                   "optimizer.lr=1e-3", "trainer.max_steps=20", "trainer.batch_size=16",
                                   "task.objective=metric"))
    results = run(cfg)
    losses = train_losses(tmp_path)
    # -(batch accuracy) over 16 examples: multiples of 1/16 in [-1, 0]
    assert all(-1 <= x <= 0 and abs(x * 16 - round(x * 16)) < 1e-6 for x in losses)
    m = results["metrics"]
    assert m["dev_loss"] == pytest.approx(-m["dev_accuracy"]) and m["dev_ce_loss"] > 0


def test_metric_objective_needs_a_zeroth_order_optimizer(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "optimizer=adam", "task.objective=metric"))
    with pytest.raises(ConfigError, match="task.objective=metric.*zeroth-order"):
        validate(cfg)


def test_cls_head_has_one_output_per_class(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta-cls", "task=sst-5-kshot", "task.k=3",
                                   "method=ft", "optimizer=adam", "trainer.max_steps=2", "trainer.batch_size=5"))
    results = run(cfg)
    assert results["data"]["sizes"]["train"] == 15
    scores = json.loads((tmp_path / "predictions_test.jsonl").read_text().splitlines()[0])["scores"]
    assert len(scores) == 5


def test_overrides_and_their_errors(kshot_root, tmp_path):
    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "method=ft", "optimizer=adam",
                                   "trainer.max_steps=1", "task.template=*cls**mask*:*+sent_0**sep+*",
                                   "task.label_words=[bad,good]"))
    results = run(cfg)
    pred = json.loads((tmp_path / "predictions_test.jsonl").read_text().splitlines()[0])
    assert pred["prediction"] in ("bad", "good") and results["status"] == "completed"
    bad = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "task.template=*cls**sent_0**sep*",
                                   "task.label_words=[bad,good,okay]"))
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert "no *mask* part" in str(err.value) and "has 3 words but sst-2-kshot has 2 classes" in str(err.value)
    wrong_kind = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "task.objective=cls-head"))
    with pytest.raises(ConfigError, match="model=tiny-roberta-cls"):
        validate(wrong_kind)
    causal = compose_config(overrides(kshot_root, tmp_path, "model=tiny-opt"))
    with pytest.raises(ConfigError, match="masked-LM task"):
        validate(causal)


def test_paper_roberta_commands_compose():
    from zoft.train.loop import eval_interval

    mezo = compose_config(["model=roberta-large", "task=sst-2-kshot", "method=mezo"])
    validate(mezo)
    assert (mezo.trainer.batch_size, mezo.trainer.max_steps, eval_interval(mezo.trainer, 100000)) == (64, 100000, 10000)
    assert mezo.trainer.select_by == "metric" and mezo.trainer.lr_scheduler == "constant"
    assert mezo.optimizer.name == "mezo" and mezo.optimizer.lr == pytest.approx(1e-6)
    assert mezo.optimizer.eps == pytest.approx(1e-3) and mezo.model.dtype == "float32"
    assert mezo.task.k == 16 and mezo.task.sample_seed == 42
    ft = compose_config(["model=roberta-large", "task=sst-2-kshot", "method=ft", "optimizer=adam"])
    validate(ft)
    assert (ft.trainer.batch_size, ft.trainer.max_steps, eval_interval(ft.trainer, 1000)) == (8, 1000, 100)
    assert ft.optimizer.lr == pytest.approx(1e-5) and ft.trainer.lr_scheduler == "linear"


def _float64_objective(kshot_root, kind: str):
    """A float64 tiny RoBERTa (``kind`` masked or seq-cls), its objective, and the k-shot train batch."""
    import torch

    from zoft.config.schema import ModelConfig
    from zoft.lmbff.data import load_kshot_splits
    from zoft.lmbff.template import PromptEncoder, encode_plain
    from zoft.models.loader import load_model
    from zoft.objectives.mlm import ClsHeadObjective, MlmPromptObjective

    task = LMBFF_TASKS["sst-2-kshot"]
    loaded = load_model(ModelConfig(name="t", family="roberta", kind=kind, device="cpu"), num_labels=2)
    model = loaded.model.double()
    tok = loaded.tokenizer
    common = dict(pad_id=tok.pad_token_id, device=torch.device("cpu"), metric="accuracy", report=(),
                  show_progress=False)
    if kind == "masked":
        objective = MlmPromptObjective(PromptEncoder(tok, task.template, task.label_words), **common)
    else:
        objective = ClsHeadObjective(encode=lambda s: encode_plain(tok, s, 128), label_words=task.label_words, **common)
    splits, _ = load_kshot_splits(task, str(kshot_root), 8, 42, task.label_words)
    batch = objective.prepare(splits["train"], train=True)
    return model, objective, batch


@pytest.mark.parametrize("kind", ["masked", "seq-cls"])
def test_zeroth_order_estimate_matches_autograd(kshot_root, kind):
    """(L(theta + eps z) - L(theta - eps z)) / 2 eps equals grad L . z for the objective's loss:
    the loss MeZO sees is the one backprop differentiates (deterministic, no dropout)."""
    import torch

    model, objective, batch = _float64_objective(kshot_root, kind)
    params = [p for p in model.parameters()]
    model.zero_grad()
    objective.loss(model, batch).backward()
    gen = torch.Generator().manual_seed(0)
    zs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    directional = sum((p.grad * z).sum() for p, z in zip(params, zs)).item()
    eps = 1e-5  # |eps z| ~ 3e-3 in parameter space: truncation error ~1e-6 relative (fp64)
    with torch.no_grad():
        for p, z in zip(params, zs):
            p.add_(eps * z)
        plus = objective.loss(model, batch).item()
        for p, z in zip(params, zs):
            p.sub_(2 * eps * z)
        minus = objective.loss(model, batch).item()
    estimate = (plus - minus) / (2 * eps)
    assert abs(directional) > 1e-4
    assert estimate == pytest.approx(directional, rel=1e-4)


def test_linear_probe_on_the_mask_state_fits_the_label_word_rows(kshot_root, tmp_path):
    """RoBERTa linear probing (the original's medium_models/src/linearhead_trainer.py): features at the mask, sklearn fit, coefficients
    written into the decoder rows of the label words; the model then predicts what sklearn does."""
    import numpy as np
    import torch

    from zoft.methods.linear_probe import fit_logistic
    from zoft.models.loader import load_model

    cfg = compose_config(overrides(kshot_root, tmp_path, "model=tiny-roberta", "method=linear-probe"))
    results = run(cfg)
    assert results["status"] == "completed"
    loaded = load_model(cfg.model)
    word_ids = [loaded.tokenizer.convert_tokens_to_ids("Ġ" + w) for w in ("terrible", "great")]
    assert results["pre_training"]["classes"] == sorted(word_ids)
    assert results["pre_training"]["num_samples"] == 16
    # An independent fit on the same features (the decoder's input at the mask) reaches the
    # same training loss the run reports.
    from zoft.objectives.build import build_objective
    from zoft.tasks import get_task
    from zoft.tasks.data import load_task_data

    spec = get_task("sst-2-kshot")
    data = load_task_data(spec, cfg.task)
    objective = build_objective(cfg, spec, loaded, data)
    feats, targets = objective.features(loaded.model, objective.prepare(data.train, train=True))
    assert feats.shape == (16, loaded.model.config.hidden_size)
    assert sorted(set(targets.tolist())) == sorted(word_ids)
    clf = fit_logistic(feats.numpy(), targets.numpy(), True, False, 0)
    probs = clf.predict_proba(feats.numpy())
    index = np.searchsorted(clf.classes_, targets.numpy())
    expected = float(-np.log(probs[np.arange(16), index]).mean())
    assert results["pre_training"]["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize("kind", ["masked", "seq-cls"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_mezo_step_descends_to_first_order(kshot_root, kind, seed):
    """A MeZO step moves theta by -lr * g * z with g ~ z . grad L, so its first-order change of
    the loss, grad L . delta = -lr * g * (z . grad L), is <= 0 whatever z is drawn. In float64 with
    a small step the actual change matches that prediction: MeZO descends on the LM-BFF objectives,
    on any machine (no learning margin to tune)."""
    import torch

    from zoft.optim import MeZO

    model, objective, batch = _float64_objective(kshot_root, kind)
    params = list(model.parameters())
    model.zero_grad()
    before = objective.loss(model, batch)
    before.backward()
    grads = [p.grad.clone() for p in params]
    start = [p.detach().clone() for p in params]
    opt = MeZO(params, lr=1e-3, eps=1e-5, seed=seed)
    with torch.no_grad():
        opt.step(lambda: objective.loss(model, batch))
        after = objective.loss(model, batch).item()
    predicted = sum((g * (p.detach() - s0)).sum() for g, p, s0 in zip(grads, params, start)).item()
    assert predicted < 0, predicted
    assert after - before.item() == pytest.approx(predicted, rel=0.1), (after - before.item(), predicted)
