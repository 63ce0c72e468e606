"""SST2 with the OPT protocol: golden prompts, local data, sampling, candidate scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoft.config.schema import ModelConfig, TaskConfig
from zoft.models.loader import load_model
from zoft.objectives.causal import candidate_scores, classification_loss, collate
from zoft.prompting import encode_example
from zoft.tasks import get_task
from zoft.examples import Example
from zoft.tasks.data import load_task_data
from zoft.tasks.readers import DataFileError
from zoft.tasks.sampling import sample_subset


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelConfig(name="tiny-opt", device="cpu"))


def test_sst2_template_golden():
    spec = get_task("sst2")
    ex = Example(fields={"sentence": " a charming journey . "}, candidates=("terrible", "great"), gold=1)
    assert spec.prompt.encode(ex) == "a charming journey . It was"
    assert spec.prompt.verbalize(ex, "great") == "a charming journey . It was great"
    assert spec.prompt.verbalize_sfc(ex, "terrible") == " It was terrible"


def test_option_len_counts_the_candidate_tokens(tiny):
    spec = get_task("sst2")
    ex = Example(fields={"sentence": "a charming journey ."}, candidates=("terrible", "great"), gold=1)
    enc = encode_example(spec, ex, tiny.tokenizer)
    great = tiny.tokenizer.encode(" great", add_special_tokens=False)
    assert enc.option_lens == (1, 1)
    assert enc.input_ids[1][-1] == great[0]
    assert enc.input_ids[1][0] == tiny.tokenizer.bos_token_id
    assert enc.gold == (1,)


def test_sampling_matches_the_original_numpy_protocol():
    items = list(range(50))
    np.random.seed(7)
    expected = [items[i] for i in np.random.permutation(50)[:10]]
    state = np.random.get_state()
    assert sample_subset(items, 7, 10) == expected
    assert np.array_equal(np.random.get_state()[1], state[1])  # global stream untouched


def test_local_glue_tsv(fixtures_dir):
    spec = get_task("sst2")
    data = load_task_data(spec, TaskConfig(name="sst2", data_dir=str(fixtures_dir / "sst2"),
                                           num_train=4, num_dev=2, num_test=3))
    assert (len(data.train), len(data.dev), len(data.test)) == (4, 2, 3)
    assert all(ex.candidates == ("terrible", "great") for ex in data.train)
    assert data.sources["train"].endswith("train.tsv")
    again = load_task_data(spec, TaskConfig(name="sst2", data_dir=str(fixtures_dir / "sst2"),
                                            num_train=4, num_dev=2, num_test=3))
    assert [e.fields for e in again.train] == [e.fields for e in data.train]


def test_num_train_larger_than_data_is_an_error(fixtures_dir):
    with pytest.raises(ValueError, match="task.num_train=100 is larger than the training data"):
        load_task_data(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(fixtures_dir / "sst2"),
                                                    num_train=100, num_dev=0))


def test_malformed_tsv_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbroken line without tab\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    with pytest.raises(DataFileError, match=r"train.tsv:3: expected 2 tab-separated columns"):
        load_task_data(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(tmp_path), num_train=1, num_dev=0))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataFileError, match="none of train.tsv"):
        load_task_data(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(tmp_path)))
    (tmp_path / "train.tsv").write_text("")
    with pytest.raises(DataFileError, match="empty"):
        load_task_data(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(tmp_path)))


def test_candidate_scores_match_a_hand_computation(tiny):
    """Batched, padded scoring equals per-candidate, unpadded mean log-probs computed by hand."""
    spec = get_task("sst2")
    examples = [
        Example(fields={"sentence": "a lovely film"}, candidates=("terrible", "great"), gold=1),
        Example(fields={"sentence": "honestly the plot seemed dull and the acting was poor"},
                candidates=("terrible", "great"), gold=0),
    ]
    encoded = [encode_example(spec, ex, tiny.tokenizer) for ex in examples]
    with torch.no_grad():
        batch = collate(encoded, tiny.tokenizer.pad_token_id)
        scores = candidate_scores(tiny.model, batch)
        for i, enc in enumerate(encoded):
            for c, (ids, k) in enumerate(zip(enc.input_ids, enc.option_lens)):
                logits = tiny.model(torch.tensor([ids])).logits[0]
                logp = torch.log_softmax(logits, -1)
                expected = np.mean([logp[t - 1, ids[t]].item() for t in range(len(ids) - k, len(ids))])
                assert scores[i, c].item() == pytest.approx(expected, abs=1e-5)
        loss = classification_loss(scores, batch.gold)
        manual = -np.mean([torch.log_softmax(scores[i], -1)[g].item() for i, g in enumerate([1, 0])])
        assert loss.item() == pytest.approx(manual, abs=1e-6)


def test_llama_left_padding_does_not_change_scores():
    """Explicit position ids make padded scoring exact for rotary models too."""
    loaded = load_model(ModelConfig(name="tiny-llama", family="llama", device="cpu"))
    spec = get_task("sst2")
    short = Example(fields={"sentence": "superb"}, candidates=("terrible", "great"), gold=1)
    long = Example(fields={"sentence": "overall the music sounded wonderful and the cast was lovely"},
                   candidates=("terrible", "great"), gold=1)
    encs = [encode_example(spec, e, loaded.tokenizer) for e in (short, long)]
    with torch.no_grad():
        together = candidate_scores(loaded.model, collate(encs, loaded.tokenizer.pad_token_id))
        alone = candidate_scores(loaded.model, collate(encs[:1], loaded.tokenizer.pad_token_id))
    assert torch.allclose(together[0], alone[0], atol=1e-5)
