"""The OPT task suite: golden prompts (large_models/templates.py), readers of the official layouts, candidate
scoring for multiple choice, and tiny end-to-end runs per task kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FAST, compose_config
from zoft.config.schema import ModelConfig, TaskConfig
from zoft.models.loader import load_model
from zoft.objectives.candidates import CandidateObjective
from zoft.objectives.causal import collate, scores_from_logprobs, option_logprobs
from zoft.prompting import encode_example
from zoft.run import run
from zoft.tasks import get_task
from zoft.examples import Example
from zoft.tasks.data import load_task_data, read_split
from zoft.tasks.readers import DataFileError

OPT_TASKS = ("sst2", "rte", "cb", "boolq", "wsc", "wic", "multirc", "copa", "record", "squad", "drop")


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelConfig(name="tiny-opt", device="cpu"))


def verbalized(name: str, fields: dict, cand: str) -> str:
    return get_task(name).prompt.verbalize(Example(fields=fields, candidates=(cand,)), cand)


def encoded(name: str, fields: dict) -> str:
    return get_task(name).prompt.encode(Example(fields=fields))


# --- golden renderings (exact strings of large_models/templates.py) ----------------------------------------

def test_every_task_is_registered_with_a_config():
    from conftest import CONF

    for name in OPT_TASKS:
        assert get_task(name).name == name
        assert (CONF / "task" / f"{name}.yaml").is_file()


def test_rte_cb_wic_golden():
    assert verbalized("rte", {"premise": "It rained.", "hypothesis": "It was wet"}, "Yes") == \
        'It rained.\nDoes this mean that "It was wet" is true? Yes or No?\nYes'
    assert encoded("cb", {"premise": "He left.", "hypothesis": "he is gone"}) == \
        'Suppose He left. Can we infer that "he is gone"? Yes, No, or Maybe?\n'
    assert verbalized("cb", {"premise": "He left.", "hypothesis": "he is gone"}, "Maybe").endswith("Maybe?\nMaybe")
    assert verbalized("wic", {"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan."}, "No") == \
        'Does the word "bank" have the same meaning in these two sentences? Yes, No?\nA river bank.\nA bank loan.\nNo'


def test_boolq_question_mark_and_capital():
    assert verbalized("boolq", {"passage": "Cats purr.", "question": "do cats purr"}, "Yes") == \
        "Cats purr. Do cats purr?\nYes"
    assert encoded("boolq", {"passage": "P.", "question": "is it?"}) == "P. Is it?\n"


def test_wsc_lowercases_the_pronoun_only():
    assert verbalized("wsc", {"text": "Mark lied. He was sorry.", "span1_text": "Mark", "span2_text": "He"}, "Yes") == \
        'Mark lied. He was sorry.\nIn the previous sentence, does the pronoun "he" refer to Mark? Yes or No?\nYes'


def test_multirc_golden():
    assert verbalized("multirc", {"paragraph": "Tom ran.", "question": "Who ran?", "answer": "Tom"}, "No") == \
        'Tom ran.\nQuestion: Who ran?\nI found this answer "Tom". Is that correct? Yes or No?\nNo'


def test_copa_connective_period_and_capitalisation():
    effect = {"premise": "The man was tired. ", "question": "effect"}
    cause = {"premise": "My body cast a shadow", "question": "cause"}
    assert encoded("copa", effect) == "The man was tired so "
    assert verbalized("copa", effect, "He went to bed.") == "The man was tired so he went to bed."
    assert verbalized("copa", cause, "I was outside.") == "My body cast a shadow because I was outside."
    assert verbalized("copa", cause, "The SUN rose.") == "My body cast a shadow because the SUN rose."
    tpl = get_task("copa").prompt
    ex = Example(fields=effect, candidates=("He slept.",))
    assert tpl.encode_sfc(ex) == "so" and tpl.verbalize_sfc(ex, "He slept.") == "so he slept."


def test_record_highlights_and_placeholder():
    fields = {"passage": "Ann met Bob.\n@highlight\nAnn and Bob talked\n@highlight\nNo one else", "query": "Later @placeholder left."}
    assert encoded("record", fields) == "Ann met Bob.\n- Ann and Bob talked\n- No one else\n-"
    assert verbalized("record", fields, "Bob") == "Ann met Bob.\n- Ann and Bob talked\n- No one else\n- Later Bob left."
    tpl = get_task("record").prompt
    assert tpl.verbalize_sfc(Example(fields=fields), "Ann") == "- Later Ann left."


def test_squad_drop_golden():
    squad = {"title": "T", "context": "C.", "question": " Where? "}
    assert encoded("squad", squad) == "Title: T\nContext: C.\nQuestion: Where?\nAnswer:"
    assert get_task("squad").prompt.verbalize(Example(fields=squad), "here") == "Title: T\nContext: C.\nQuestion: Where?\nAnswer: here\n"
    drop = {"passage": "P.", "question": "How many? "}
    assert get_task("drop").prompt.verbalize(Example(fields=drop), "3") == "Passage: P.\nQuestion: How many?\nAnswer: 3\n"
    assert get_task("squad").prompt.encode_sfc is None


def test_prompt_keeps_trailing_newline_and_option_is_the_label_word(tiny):
    spec = get_task("rte")
    ex = Example(fields={"premise": "It rained.", "hypothesis": "It was wet"}, candidates=("Yes", "No"), gold=0)
    enc = encode_example(spec, ex, tiny.tokenizer)
    text = tiny.tokenizer.decode(enc.input_ids[0], skip_special_tokens=True)
    assert text.endswith("Yes or No?\nYes")
    yes = tiny.tokenizer.encode("Yes", add_special_tokens=False)
    assert enc.option_lens[0] == len(yes) and list(enc.input_ids[0][-len(yes):]) == yes


# --- readers of the official layouts -----------------------------------------------------------

def test_fixture_readers_for_every_task(fixtures_dir):
    expected = {  # (train examples, test examples, candidates of the first example)
        "rte": (12, 4, ("Yes", "No")), "cb": (10, 5, ("Yes", "No", "Maybe")), "boolq": (12, 4, ("Yes", "No")),
        "wsc": (12, 4, ("No", "Yes")), "wic": (12, 4, ("No", "Yes")), "multirc": (18, 6, ("No", "Yes")),
        "copa": (12, 4, None), "record": (10, 4, None), "squad": (12, 5, ()), "drop": (12, 6, ()),
    }
    for name, (n_train, n_test, cands) in expected.items():
        spec = get_task(name)
        _, train = read_split(spec, "train", str(fixtures_dir / name))
        _, test = read_split(spec, "test", str(fixtures_dir / name))
        assert (len(train), len(test)) == (n_train, n_test), name
        if cands is not None:
            assert train[0].candidates == cands, name


def test_string_and_boolean_labels_map_to_the_spec_candidates(fixtures_dir):
    _, rte = read_split(get_task("rte"), "train", str(fixtures_dir / "rte"))
    assert rte[0].gold == 0 and rte[1].gold == 1  # entailment -> Yes, not_entailment -> No
    _, boolq = read_split(get_task("boolq"), "train", str(fixtures_dir / "boolq"))
    assert boolq[0].gold == 0 and boolq[1].gold == 1  # true -> Yes
    _, wsc = read_split(get_task("wsc"), "train", str(fixtures_dir / "wsc"))
    assert wsc[0].candidates[wsc[0].gold] == "Yes" and wsc[1].candidates[wsc[1].gold] == "No"


def test_hub_rows_read_like_official_files():
    """The Hub's flat rows (aps/super_glue, google/boolq, rajpurkar/squad, ucinlp/drop)."""
    src = lambda n: get_task(n).source.read_record  # noqa: E731
    assert src("boolq")({"question": "q", "passage": "p", "answer": False})[0].gold == 1
    assert src("rte")({"premise": "a", "hypothesis": "b", "label": 1, "idx": 3})[0].gold == 1
    wsc = src("wsc")({"text": "t", "span1_index": 0, "span2_index": 1, "span1_text": "A", "span2_text": "It", "label": 1, "idx": 0})[0]
    assert wsc.fields["span2_text"] == "It" and wsc.gold == 1
    mrc = src("multirc")({"paragraph": "p", "question": "q", "answer": "a", "label": 0,
                          "idx": {"paragraph": 0, "question": 0, "answer": 0}})[0]
    assert mrc.candidates == ("No", "Yes") and mrc.gold == 0
    rec = src("record")({"passage": "p", "query": "@placeholder q", "entities": ["A", "B", "A"], "answers": ["B", "A"]})[0]
    assert rec.candidates == ("A", "B") and rec.gold == (1, 0)
    sq = src("squad")({"id": "x", "title": "T", "context": "c", "question": "q", "answers": {"text": ["a", "a", "b"], "answer_start": [0, 0, 1]}})[0]
    assert sq.answers == ("a", "b")
    dr = src("drop")({"passage": "p", "question": "q", "query_id": "1", "answers_spans": {"spans": ["4"], "types": ["number"]}})[0]
    assert dr.answers == ("4",)


def test_record_entities_from_offsets_and_multiple_golds(fixtures_dir):
    _, train = read_split(get_task("record"), "train", str(fixtures_dir / "record"))
    ex = train[1]
    assert ex.candidates == ("Pete", "Anna", "Paris", "Lucy")  # unique, first occurrence first
    assert ex.candidates[ex.gold_indices[0]] == "Anna"


def test_drop_official_answers_number_date_spans(fixtures_dir):
    _, test = read_split(get_task("drop"), "test", str(fixtures_dir / "drop"))
    assert test[0].answers == ("12", "3 May 2001")  # answer first, then validated answers
    assert test[1].answers == ("Anna",)


def test_unlabeled_record_is_a_clear_error(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"premise": "a", "hypothesis": "b", "idx": 0}\n')
    (tmp_path / "val.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}\n')
    with pytest.raises(DataFileError, match=r"train.jsonl:1: cb record: missing field 'label'"):
        load_task_data(get_task("cb"), TaskConfig(name="cb", data_dir=str(tmp_path), num_train=1, num_dev=0))


def test_wsc_protocol_54_train_500_dev():
    """The paper's 1000+500 on WSC's 554 examples: conf/task/wsc.yaml spells out 54 + 500."""
    from zoft.tasks.sampling import split_train_dev

    cfg = compose_config(["task=wsc"])
    train, dev = split_train_dev(list(range(554)), 0, cfg.task.num_train, cfg.task.num_dev)
    assert (len(train), len(dev)) == (54, 500)
    assert compose_config(["task=cb"]).task.num_dev == 100 and compose_config(["task=copa"]).task.num_dev == 100
    assert compose_config(["task=copa"]).task.train_as_classification is False


# --- multiple-choice scoring vs a hand computation ---------------------------------------------

def test_copa_candidate_scores_and_lm_loss_by_hand(tiny):
    spec = get_task("copa")
    examples = [
        Example(fields={"premise": "The man was tired.", "question": "effect"},
                candidates=("He went to bed early.", "The sun rose."), gold=0),
        Example(fields={"premise": "It rained", "question": "cause"}, candidates=("Clouds came.", "I sang a very long song."), gold=1),
    ]
    obj = CandidateObjective(spec, tiny.tokenizer, torch.device("cpu"), max_length=512, train_as_classification=False,
                             show_progress=False)
    items = obj.prepare(examples, train=False)
    with torch.no_grad():
        cb = collate([it.eval_enc for it in items], tiny.tokenizer.pad_token_id)
        scores = scores_from_logprobs(option_logprobs(tiny.model, cb), cb)
        gold_logps = []
        for i, it in enumerate(items):
            for c, (ids, k) in enumerate(zip(it.eval_enc.input_ids, it.eval_enc.option_lens)):
                logp = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0], -1)
                tok = [logp[t - 1, ids[t]].item() for t in range(len(ids) - k, len(ids))]
                assert scores[i, c].item() == pytest.approx(np.mean(tok), abs=1e-5)
                if c == examples[i].gold:
                    gold_logps += tok
        loss = obj.loss(tiny.model, items)
    assert loss.item() == pytest.approx(-np.mean(gold_logps), abs=1e-5)  # token-mean over the batch
    # The option of COPA is the lower-cased choice after the connective.
    text = tiny.tokenizer.decode(items[0].eval_enc.input_ids[0][-items[0].eval_enc.option_lens[0]:])
    assert text.strip() == "he went to bed early."


def test_record_accuracy_counts_any_gold(tiny):
    spec = get_task("record")
    ex = Example(fields={"passage": "A met B.", "query": "@placeholder left."}, candidates=("A", "B"), gold=(0, 1))
    obj = CandidateObjective(spec, tiny.tokenizer, torch.device("cpu"), max_length=512, train_as_classification=False,
                             show_progress=False)
    result = obj.evaluate(tiny.model, obj.prepare([ex], train=False), batch_size=4)
    assert result.metrics["accuracy"] == 1.0


# --- tiny end-to-end runs (classification, multiple choice) ------------------------------------

@pytest.mark.parametrize("task,optimizer,lr", [("rte", "adam", "1e-3"), ("copa", "mezo", "1e-3"), ("multirc", "mezo", "1e-3")])
def test_train_end_to_end_on_fixtures(tmp_path, fixtures_dir, task, optimizer, lr):
    cfg = compose_config(FAST + [
        f"task={task}", f"task.data_dir={fixtures_dir / task}", "task.num_train=8", "task.num_dev=4",
        "method=ft", f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.max_steps=6", "trainer.eval_steps=3",
        "trainer.batch_size=4", f"output_dir={tmp_path}",
    ])
    results = run(cfg)
    assert results["status"] == "completed"
    assert 0.0 <= results["metrics"]["test_accuracy"] <= 1.0
    assert results["training"]["steps"] == 6
    rows = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == results["data"]["sizes"]["test"]
