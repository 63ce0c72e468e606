"""The 14 LM-BFF tasks as data (LM-BFF's templates and label words, as in the original's medium_models scripts): label order, label words, template, sentence
limits, metric, and the column layout of their original files. Pure data, no registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from zoft.errors import ZoftUserError

SST2_TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
THIS_IS_TEMPLATE = "*cls**sent_0*_This_is*mask*.*sep+*"
NLI_TEMPLATE = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"
PARAPHRASE_TEMPLATE = "*cls**sent_0**mask*,*+sentl_1**sep+*"
TREC_TEMPLATE = "*cls**mask*:*+sent_0**sep+*"


@dataclass(frozen=True)
class LmBffTask:
    """One task of the LM-BFF suite.

    ``data_name``: the folder name in LM-BFF's archive and k-shot tree (``SST-2``, ``sst-5``...).
    ``labels``: the raw labels in processor order (= the order of ``label_words``).
    ``fmt``: ``glue`` (tab-separated, original GLUE columns) or ``csv`` (no header, label first).
    ``text_columns`` / ``label_column`` / ``header``: the GLUE layout (csv: label 0, text 1).
    ``metric``: the dev objective and headline metric (accuracy | mcc | f1);
    ``extra_metrics``: also reported.
    """

    name: str
    data_name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    template: str
    metric: str
    fmt: str
    text_columns: tuple[int, ...] = (1,)
    label_column: int = 0
    header: bool = False
    max_seq_length: int = 128
    first_sent_limit: Optional[int] = None
    other_sent_limit: Optional[int] = None
    extra_metrics: tuple[str, ...] = ()
    # GLUE rows with fewer columns are skipped (QQP's train file has a few broken rows, which
    # LM-BFF's processor skips too); elsewhere they are an error.
    skip_short_rows: bool = False
    description: str = ""

    @property
    def num_sentences(self) -> int:
        return len(self.text_columns) if self.fmt == "glue" else 1

    @property
    def dev_names(self) -> tuple[str, ...]:
        return ("dev_matched.tsv",) if self.data_name == "MNLI" else (("dev.tsv",) if self.fmt == "glue" else ("dev.csv",))

    @property
    def test_names(self) -> tuple[str, ...]:
        return ("test_matched.tsv",) if self.data_name == "MNLI" else (("test.tsv",) if self.fmt == "glue" else ("test.csv",))

    @property
    def train_names(self) -> tuple[str, ...]:
        return ("train.tsv",) if self.fmt == "glue" else ("train.csv",)


def _csv(name, data_name, n_labels, words, template, metric, **kw) -> LmBffTask:
    return LmBffTask(name=name, data_name=data_name, labels=tuple(str(i) for i in range(n_labels)),
                     label_words=tuple(words), template=template, metric=metric, fmt="csv", **kw)


NLI3 = ("contradiction", "entailment", "neutral")
NLI3_WORDS = ("No", "Yes", "Maybe")
NLI2 = ("entailment", "not_entailment")
NLI2_WORDS = ("Yes", "No")

LMBFF_TASKS: dict[str, LmBffTask] = {t.name: t for t in [
    LmBffTask("sst-2-kshot", "SST-2", ("0", "1"), ("terrible", "great"), SST2_TEMPLATE, "accuracy",
              "glue", text_columns=(0,), label_column=1, header=True,
              description="GLUE SST-2 sentiment"),
    _csv("sst-5-kshot", "sst-5", 5, ("terrible", "bad", "okay", "good", "great"), SST2_TEMPLATE,
         "accuracy", first_sent_limit=110, other_sent_limit=20, description="SST-5 fine-grained sentiment"),
    _csv("mr-kshot", "mr", 2, ("terrible", "great"), SST2_TEMPLATE, "accuracy",
         first_sent_limit=110, other_sent_limit=50, description="MR movie-review polarity"),
    _csv("cr-kshot", "cr", 2, ("terrible", "great"), SST2_TEMPLATE, "accuracy",
         first_sent_limit=110, other_sent_limit=50, description="CR customer-review polarity"),
    _csv("mpqa-kshot", "mpqa", 2, ("terrible", "great"), SST2_TEMPLATE, "accuracy",
         first_sent_limit=110, description="MPQA opinion polarity"),
    _csv("subj-kshot", "subj", 2, ("subjective", "objective"), THIS_IS_TEMPLATE, "accuracy",
         first_sent_limit=110, other_sent_limit=50, description="Subj subjectivity"),
    _csv("trec-kshot", "trec", 6, ("Description", "Entity", "Expression", "Human", "Location", "Number"),
         TREC_TEMPLATE, "accuracy", first_sent_limit=110, description="TREC-6 question type"),
    LmBffTask("cola-kshot", "CoLA", ("0", "1"), ("incorrect", "correct"), THIS_IS_TEMPLATE, "mcc",
              "glue", text_columns=(3,), label_column=1, header=False, extra_metrics=("accuracy",),
              description="GLUE CoLA acceptability (Matthews correlation)"),
    LmBffTask("mnli-kshot", "MNLI", NLI3, NLI3_WORDS, NLI_TEMPLATE, "accuracy", "glue",
              text_columns=(8, 9), label_column=-1, header=True, max_seq_length=256, first_sent_limit=240,
              description="MNLI (matched) entailment"),
    LmBffTask("snli-kshot", "SNLI", NLI3, NLI3_WORDS, NLI_TEMPLATE, "accuracy", "glue",
              text_columns=(7, 8), label_column=-1, header=True, max_seq_length=256,
              description="SNLI entailment"),
    LmBffTask("qnli-kshot", "QNLI", NLI2, NLI2_WORDS, NLI_TEMPLATE, "accuracy", "glue",
              text_columns=(1, 2), label_column=-1, header=True, description="QNLI question entailment"),
    LmBffTask("rte-kshot", "RTE", NLI2, NLI2_WORDS, NLI_TEMPLATE, "accuracy", "glue",
              text_columns=(1, 2), label_column=-1, header=True, max_seq_length=256, first_sent_limit=240,
              description="RTE entailment"),
    LmBffTask("mrpc-kshot", "MRPC", ("0", "1"), ("No", "Yes"), PARAPHRASE_TEMPLATE, "f1", "glue",
              text_columns=(3, 4), label_column=0, header=True, extra_metrics=("accuracy",),
              description="MRPC paraphrase (accuracy and F1; F1 selects)"),
    LmBffTask("qqp-kshot", "QQP", ("0", "1"), ("No", "Yes"), PARAPHRASE_TEMPLATE, "f1", "glue",
              text_columns=(3, 4), label_column=5, header=True, extra_metrics=("accuracy",),
              skip_short_rows=True, description="QQP paraphrase (accuracy and F1; F1 selects)"),
]}

# LM-BFF folder name (any case) -> task; lets the commands take either naming.
BY_DATA_NAME = {t.data_name.lower(): t for t in LMBFF_TASKS.values()}


def find_lmbff_task(name: str) -> LmBffTask:
    """A task by zoft name (``sst-2-kshot``) or LM-BFF name (``SST-2``, ``sst-2``)."""
    if name in LMBFF_TASKS:
        return LMBFF_TASKS[name]
    if name.lower() in BY_DATA_NAME:
        return BY_DATA_NAME[name.lower()]
    raise ZoftUserError(
        f"unknown LM-BFF task {name!r}; valid: {', '.join(LMBFF_TASKS)} "
        f"(or the LM-BFF folder names {', '.join(t.data_name for t in LMBFF_TASKS.values())})")
