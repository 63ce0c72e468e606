"""SQuAD/DROP: SQuAD-normalised F1/EM, batched greedy generation with left padding and newline
stops, the LM-style answer loss, the non-differentiable (-F1) objective, and end-to-end runs."""

from __future__ import annotations

import pytest
import torch

from conftest import FAST, compose_config
from zoft.config.schema import ModelConfig
from zoft.metrics import accuracy, exact_match, f1_score, normalize_answer
from zoft.models.loader import load_model
from zoft.objectives.generation import GenerationObjective, greedy_generate, stop_token_ids
from zoft.objectives.metric import MetricObjective
from zoft.run import run
from zoft.tasks import get_task
from zoft.examples import Example


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelConfig(name="tiny-opt", device="cpu"))


# --- metrics ------------------------------------------------------------------------------------

def test_normalisation():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("  A\tb\nc ") == "b c"


def test_f1_by_hand():
    # pred tokens {denver, broncos}; gold {broncos}: P = 1/2, R = 1 -> F1 = 2/3
    assert f1_score("Denver Broncos", ["Broncos"]) == pytest.approx(2 / 3)
    assert f1_score("the Denver Broncos!", ["Denver Broncos"]) == 1.0
    assert f1_score("Carolina", ["Denver Broncos"]) == 0.0
    # max over golds; repeated tokens count by multiplicity: pred "a b b" vs gold "b b c" -> 2/3, 2/3
    assert f1_score("x b b", ["z", "b b c"]) == pytest.approx(2 / 3)
    assert f1_score("", ["Broncos"]) == 0.0


def test_no_answer_special_case_is_exact_match():
    assert f1_score("no answer", ["CANNOTANSWER"]) == 0.0
    assert f1_score("CANNOTANSWER", ["CANNOTANSWER"]) == 1.0
    assert f1_score("no", ["no answer"]) == 0.0  # plain F1 would give 2/3
    assert f1_score("No answer.", ["no answer"]) == 1.0


def test_exact_match_and_accuracy():
    assert exact_match("The Broncos.", ["Panthers", "broncos"]) == 1.0
    assert exact_match("Broncos win", ["broncos"]) == 0.0
    assert accuracy([0, 1, 2], [(0,), (0, 2), (2,)]) == pytest.approx(2 / 3)


# --- generation ---------------------------------------------------------------------------------

def _greedy_reference(model, ids, steps, stops):
    """Unbatched greedy decoding with a full forward per token (no cache, no padding)."""
    ids, out = list(ids), []
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if nxt in stops:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_batched_left_padded_generation_equals_unbatched(tiny):
    tok = tiny.tokenizer
    prompts = [tok.encode("Question: Where?\nAnswer:"), tok.encode("Passage: the movie was great and the cast was lovely\nAnswer:")]
    stops = stop_token_ids(tok)
    assert stops[0] == tok.encode("\n", add_special_tokens=False)[-1] and tok.eos_token_id in stops
    got = greedy_generate(tiny.model, prompts, pad_id=tok.pad_token_id, stop_ids=stops, max_new_tokens=8,
                          max_length=512, device=torch.device("cpu"))
    with torch.no_grad():
        expected = [_greedy_reference(tiny.model, p, 8, set(stops)) for p in prompts]
    assert got == expected
    # the budget shrinks to what the context has left
    short = greedy_generate(tiny.model, prompts, pad_id=tok.pad_token_id, stop_ids=stops, max_new_tokens=8,
                            max_length=len(prompts[1]) + 2, device=torch.device("cpu"))
    assert all(len(s) <= 2 for s in short)


def test_generation_stops_at_newline():
    """A model that always predicts 'a', 'b', newline, 'c' stops before the newline."""
    class Scripted(torch.nn.Module):
        def __init__(self, script, vocab):
            super().__init__()
            self.script, self.vocab = script, vocab
            self.config = type("C", (), {"is_encoder_decoder": False})()

        def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **kw):
            rows = []
            for _ in range(input_ids.shape[0]):
                gen = []
                for t in self.script[:max_new_tokens]:
                    gen.append(t)
                    if t in eos_token_id:
                        break
                gen += [pad_token_id] * (max_new_tokens - len(gen))
                rows.append(gen)
            return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    newline = 9
    out = greedy_generate(Scripted([5, 6, newline, 7], 20), [[1, 2, 3], [4]], pad_id=0, stop_ids=[newline, 2],
                          max_new_tokens=10, max_length=100, device=torch.device("cpu"))
    assert out == [[5, 6], [5, 6]]


def test_answer_loss_covers_only_answer_and_newline(tiny):
    spec = get_task("squad")
    ex = Example(fields={"title": "T", "context": "The cat sat.", "question": "Who sat?"}, answers=("The cat", "cat"))
    obj = GenerationObjective(spec, tiny.tokenizer, torch.device("cpu"), max_length=512, show_progress=False)
    item = obj.prepare([ex], train=True)[0]
    ids, k = item.train_enc.input_ids[0], item.train_enc.option_lens[0]
    assert tiny.tokenizer.decode(ids[-k:]) == " The cat\n"
    assert tiny.tokenizer.decode(item.eval_enc.input_ids[0]).endswith("Question: Who sat?\nAnswer:")
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0], -1)
        expected = -sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - k, len(ids))) / k
        assert obj.loss(tiny.model, [item]).item() == pytest.approx(expected, abs=1e-5)


def test_metric_objective_is_minus_f1(tiny):
    spec = get_task("drop")
    exs = [Example(fields={"passage": "p", "question": "q"}, answers=("3",)),
           Example(fields={"passage": "the plot", "question": "who?"}, answers=("cast",))]
    inner = GenerationObjective(spec, tiny.tokenizer, torch.device("cpu"), max_length=512, max_new_tokens=4, show_progress=False)
    obj = MetricObjective(inner)
    items = obj.prepare(exs, train=True)
    answers = inner.generate(tiny.model, items)
    expected = -(f1_score(answers[0], ["3"]) + f1_score(answers[1], ["cast"])) / 2
    assert obj.loss(tiny.model, items).item() == pytest.approx(expected)
    ev = obj.evaluate(tiny.model, items, batch_size=2)
    assert ev.metrics["loss"] == pytest.approx(-ev.metrics["f1"]) and "ce_loss" in ev.metrics


# --- end-to-end ---------------------------------------------------------------------------------

GEN_FAST = ["task.num_train=8", "task.num_dev=4", "task.max_new_tokens=4", "trainer.max_steps=4",
            "trainer.eval_steps=2", "trainer.batch_size=4", "trainer.eval_batch_size=8"]


@pytest.mark.parametrize("task,optimizer,extra", [
    ("squad", "adam", []),
    ("drop", "mezo", ["task.objective=metric"]),
])
def test_generation_trains_end_to_end(tmp_path, fixtures_dir, task, optimizer, extra):
    cfg = compose_config(FAST + GEN_FAST + extra + [
        f"task={task}", f"task.data_dir={fixtures_dir / task}", "method=ft", f"optimizer={optimizer}",
        "optimizer.lr=1e-3", f"output_dir={tmp_path}",
    ])
    results = run(cfg)
    m = results["metrics"]
    assert results["status"] == "completed" and 0 <= m["test_f1"] <= 1 and 0 <= m["test_em"] <= 1
    assert (tmp_path / "predictions_test.jsonl").read_text().count("\n") == results["data"]["sizes"]["test"]


def test_metric_objective_needs_mezo(tmp_path, fixtures_dir):
    from zoft.config.validate import ConfigError

    cfg = compose_config(FAST + GEN_FAST + ["task=squad", f"task.data_dir={fixtures_dir / 'squad'}", "method=ft",
                                            "optimizer=adam", "task.objective=metric", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="task.objective=metric has no gradient; it needs an optimizer that uses loss values only"):
        run(cfg)
