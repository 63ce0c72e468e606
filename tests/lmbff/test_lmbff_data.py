"""Readers of the LM-BFF tasks' original formats, k-shot generation (counts, determinism per
seed, the 1k test cap, the 2K refusal) and the k-shot task loader."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmbff_helpers import cr_lines
from conftest import FIXTURES
from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.data import load_kshot_splits
from zoft.lmbff.formats import LmBffDataError, read_label_first, read_split
from zoft.lmbff.kshot import generate_kshot

RAW = FIXTURES / "lmbff"
T = LMBFF_TASKS


def test_glue_readers_follow_each_column_layout():
    sst2 = read_split(T["sst-2-kshot"], RAW / "SST-2/train.tsv")
    assert len(sst2) == 48 and sst2[0][0][0].startswith("the ") and sst2[0][1] in (0, 1)
    cola = read_split(T["cola-kshot"], RAW / "CoLA/train.tsv")  # no header: all 12 rows
    assert len(cola) == 12 and cola[0] == (("The movie were wonderful.",), 0)
    mrpc = read_split(T["mrpc-kshot"], RAW / "MRPC/train.tsv")  # BOM header skipped
    assert len(mrpc) == 12 and mrpc[1] == (('The film was excellent, "really".', "It was fantastic."), 1)
    mnli = read_split(T["mnli-kshot"], RAW / "MNLI/train.tsv")
    assert mnli[1] == (("The film was excellent.", "It is fantastic"), 1)  # entailment -> index 1
    qqp = read_split(T["qqp-kshot"], RAW / "QQP/dev.tsv")  # the short row is skipped
    assert qqp == [(("What is a film?", "What is a movie?"), 1), (("Who is he?", "Where is it?"), 0)]


def test_csv_and_label_first_readers():
    mr = read_split(T["mr-kshot"], RAW / "mr/train.csv")
    assert mr[0] == (('a movie , "wonderful" and awful',), 0) and len(mr) == 10
    sst5 = read_split(T["sst-5-kshot"], RAW / "sst-5/stsa.fine.train")
    assert len(sst5) == 30 and sst5[3] == (("the story , lovely and odd",), 3)
    trec = read_label_first(RAW / "trec/TREC.test")  # raw COARSE:fine labels -> LM-BFF indices
    assert [r[0] for r in trec] == ["5", "4", "3", "0", "1", "2"]
    assert trec[0][1] == "How far is it from Denver to Aspen ?"
    latin = read_label_first(RAW / "latin1.all")  # Latin-1 with U+0085 inside a line
    assert latin == [["0", "caf\xe9 society \x85 and more ."], ["1", "na\xefve but fun ."]]


def test_bad_labels_and_formats_are_reported_with_their_place(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nbad film\t7\n")
    with pytest.raises(LmBffDataError, match=r"train.tsv:3: label '7'.*0, 1"):
        read_split(T["sst-2-kshot"], bad)
    with pytest.raises(LmBffDataError, match="reads GLUE tsv"):
        read_split(T["sst-2-kshot"], RAW / "mr/train.csv")


def _original_kshot(lines: list[str], seed: int, k: int, label_of) -> tuple[list[str], list[str]]:
    """LM-BFF's generator, written independently with the global numpy RNG as the original."""
    lines = list(lines)
    np.random.seed(seed)
    np.random.shuffle(lines)
    groups: dict[str, list[str]] = {}
    for line in lines:
        groups.setdefault(label_of(line), []).append(line)
    return ([x for g in groups.values() for x in g[:k]], [x for g in groups.values() for x in g[k:2 * k]])


@pytest.mark.parametrize("seed", [13, 21, 42, 87, 100])
def test_glue_kshot_matches_the_original_protocol(tmp_path, seed):
    (folder,) = generate_kshot(T["sst-2-kshot"], RAW / "SST-2", tmp_path, 8, [seed])
    assert folder == tmp_path / "SST-2" / f"8-{seed}"
    raw = (RAW / "SST-2/train.tsv").read_text().splitlines(keepends=True)
    train, dev = _original_kshot(raw[1:], seed, 8, lambda l: l.strip().split("\t")[-1])
    assert (folder / "train.tsv").read_text() == raw[0] + "".join(train)
    assert (folder / "dev.tsv").read_text() == raw[0] + "".join(dev)
    assert (folder / "test.tsv").read_text() == (RAW / "SST-2/dev.tsv").read_text()
    splits, _ = load_kshot_splits(T["sst-2-kshot"], str(tmp_path), 8, seed, ("terrible", "great"))
    assert Counter(e.gold for e in splits["train"]) == {0: 8, 1: 8}
    assert Counter(e.gold for e in splits["dev"]) == {0: 8, 1: 8}
    assert len(splits["test"]) == 24


def test_kshot_is_deterministic_per_seed_and_differs_across_seeds(tmp_path):
    a = generate_kshot(T["sst-2-kshot"], RAW, tmp_path / "a", 4, [13, 21])
    b = generate_kshot(T["sst-2-kshot"], RAW, tmp_path / "b", 4, [13])
    assert (a[0] / "train.tsv").read_bytes() == (b[0] / "train.tsv").read_bytes()
    assert (a[0] / "train.tsv").read_bytes() != (a[1] / "train.tsv").read_bytes()


def test_kshot_other_layouts(tmp_path):
    (cola,) = generate_kshot(T["cola-kshot"], RAW / "CoLA", tmp_path, 3, [42])
    assert len((cola / "train.tsv").read_text().splitlines()) == 6  # no header
    (mrpc,) = generate_kshot(T["mrpc-kshot"], RAW / "MRPC", tmp_path, 3, [42])
    assert (mrpc / "train.tsv").read_text(encoding="utf-8").startswith("\ufeffQuality")
    (mnli,) = generate_kshot(T["mnli-kshot"], RAW / "MNLI", tmp_path, 2, [42])
    assert {p.name for p in mnli.iterdir()} == {"train.tsv", "dev_matched.tsv", "test_matched.tsv", "test_mismatched.tsv"}
    splits, _ = load_kshot_splits(T["mnli-kshot"], str(mnli), 2, 42, ("No", "Yes", "Maybe"))
    assert Counter(e.gold for e in splits["dev"]) == {0: 2, 1: 2, 2: 2} and len(splits["test"]) == 6
    (sst5,) = generate_kshot(T["sst-5-kshot"], RAW / "sst-5", tmp_path, 3, [42])  # label-first -> csv
    splits, _ = load_kshot_splits(T["sst-5-kshot"], str(tmp_path), 3, 42, T["sst-5-kshot"].label_words)
    assert Counter(e.gold for e in splits["train"]) == {i: 3 for i in range(5)} and len(splits["test"]) == 7
    (mr,) = generate_kshot(T["mr-kshot"], RAW / "mr", tmp_path, 2, [42])  # LM-BFF csv stays csv
    assert read_split(T["mr-kshot"], mr / "test.csv") == read_split(T["mr-kshot"], RAW / "mr/test.csv")


def test_test_split_is_capped_at_1000_with_seed_42(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    header = "sentence\tlabel\n"
    (src / "train.tsv").write_text(header + "".join(f"s{i}\t{i % 2}\n" for i in range(10)))
    dev = [f"d{i}\t{i % 2}\n" for i in range(1200)]
    (src / "dev.tsv").write_text(header + "".join(dev))
    (folder,) = generate_kshot(T["sst-2-kshot"], src, tmp_path / "out", 2, [13])
    np.random.seed(42)
    np.random.shuffle(dev)
    assert (folder / "test.tsv").read_text() == header + "".join(dev[:1000])


def test_too_few_examples_per_label_is_refused(tmp_path):
    with pytest.raises(LmBffDataError, match=r"k=13 needs 26 training examples per label.*label '0': 24"):
        generate_kshot(T["sst-2-kshot"], RAW / "SST-2", tmp_path, 13, [42])
    assert not (tmp_path / "SST-2").exists()


def test_loader_explains_missing_splits(tmp_path):
    with pytest.raises(LmBffDataError, match="prepare-lmbff"):
        load_kshot_splits(T["rte-kshot"], str(tmp_path), 16, 42, ("Yes", "No"))
    with pytest.raises(LmBffDataError, match="set task.data_dir"):
        load_kshot_splits(T["rte-kshot"], None, 16, 42, ("Yes", "No"))


def test_kshot_command_line(tmp_path, capsys):
    from zoft.cli import main

    assert main(["kshot", "--task", "SST-2", "cola-kshot", "--k", "2", "--seeds", "13", "42",
                 "--data-dir", str(RAW), "--out", str(tmp_path)]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*")) == [
        "CoLA/2-13", "CoLA/2-42", "SST-2/2-13", "SST-2/2-42"]
    assert main(["kshot", "--task", "nope", "--data-dir", str(RAW), "--out", str(tmp_path)]) == 2
    assert "unknown LM-BFF task 'nope'" in capsys.readouterr().err


def test_cr_is_rebalanced_as_mezo_and_k512_exists_for_every_seed(tmp_path):
    """MeZO's data script reruns the archive's cr/process.py with 250 in place of 1000: per label the
    first 250 lines (file order) are test, the rest train."""
    lines = cr_lines()
    (tmp_path / "cr").mkdir()
    (tmp_path / "cr" / "custrev.all").write_text("".join(lines))
    folders = generate_kshot(T["cr-kshot"], tmp_path / "cr", tmp_path / "out", 512, [13, 21, 42, 87, 100])
    assert [f.name for f in folders] == ["512-13", "512-21", "512-42", "512-87", "512-100"]
    good = [ln[2:].strip() for ln in lines if ln[0] == "1"]
    bad = [ln[2:].strip() for ln in lines if ln[0] == "0"]
    test = [row.split(",", 1) for row in (folders[0] / "test.csv").read_text().splitlines()]
    assert test == [["1", t] for t in good[:250]] + [["0", t] for t in bad[:250]]  # label 1 appears first
    for folder in folders:
        train = (folder / "train.csv").read_text().splitlines()
        assert Counter(row[0] for row in train) == {"0": 512, "1": 512}
        held_out = {t for _, t in test}
        assert not held_out & {row.split(",", 1)[1] for row in train + (folder / "dev.csv").read_text().splitlines()}


def test_cr_archive_csv_files_give_the_same_rebalanced_splits(tmp_path):
    """The archive's cr/train.csv + test.csv (1000 test per label) and MeZO's (250) re-split alike."""
    lines = cr_lines()
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "custrev.all").write_text("".join(lines))
    for per_label in (1000, 250):  # what process.py writes with 1000 (LM-BFF) and with 250 (MeZO)
        groups = {"1": [ln[2:].strip() for ln in lines if ln[0] == "1"],
                  "0": [ln[2:].strip() for ln in lines if ln[0] == "0"]}
        folder = tmp_path / f"csv{per_label}"
        folder.mkdir()
        (folder / "test.csv").write_text("".join(f"{lab},{t}\n" for lab, g in groups.items() for t in g[:per_label]))
        (folder / "train.csv").write_text("".join(f"{lab},{t}\n" for lab, g in groups.items() for t in g[per_label:]))
    outs = {name: generate_kshot(T["cr-kshot"], tmp_path / name, tmp_path / f"out-{name}", 512, [13, 87])
            for name in ("all", "csv1000", "csv250")}
    for name in ("csv1000", "csv250"):
        for ours, theirs in zip(outs["all"], outs[name]):
            for split in ("train.csv", "dev.csv", "test.csv"):
                assert (ours / split).read_bytes() == (theirs / split).read_bytes(), (name, split)


def test_single_all_files_are_split_as_the_archive_does(tmp_path):
    """MR/MPQA/Subj .all files: the first 1000 lines of each label are test, as LM-BFF's process.py."""
    lines = [f"{i % 2} line {i}\n" for i in range(2100)]
    (tmp_path / "subj.all").write_text("".join(lines))
    (folder,) = generate_kshot(T["subj-kshot"], tmp_path, tmp_path / "out", 4, [42])
    expected = [f"0,line {i}" for i in range(0, 2000, 2)] + [f"1,line {i}" for i in range(1, 2000, 2)]
    rows = (folder / "test.csv").read_text().splitlines()  # 2000 rows, then pandas' sample of 1000 (seed 42)
    picks = np.random.RandomState(42).choice(2000, size=1000, replace=False)
    assert rows == [expected[i] for i in picks]
