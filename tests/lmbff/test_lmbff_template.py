"""The LM-BFF template language on tiny-roberta: golden renderings of every task's template,
every part type, limits, truncation, the mask position, and label-word checks."""

from __future__ import annotations

import pytest

from zoft.lmbff.catalog import LMBFF_TASKS
from zoft.lmbff.template import PromptEncoder, TemplateError, encode_plain, label_word_ids, parse_template
from zoft.models.tiny import build_tiny_tokenizer

TOK = build_tiny_tokenizer("roberta")
ONE = ("a great film",)
TWO = ("The movie was great.", "It is Good")

# Golden token strings per template (LM-BFF's template rendering, as the original's medium_models/src/dataset.py, on tiny-roberta's BPE).
GOLDEN = {
    "*cls**sent_0*_It_was*mask*.*sep+*":
        ["<s>", "a", "Ġgreat", "Ġfilm", "ĠIt", "Ġwas", "<mask>", ".", "</s>"],
    "*cls**sent_0*_This_is*mask*.*sep+*":
        ["<s>", "a", "Ġgreat", "Ġfilm", "ĠThis", "Ġis", "<mask>", ".", "</s>"],
    "*cls**mask*:*+sent_0**sep+*":
        ["<s>", "<mask>", ":", "Ġa", "Ġgreat", "Ġfilm", "</s>"],
    # premise minus its last character, "?", mask, ",", space + hypothesis lower-cased first char
    "*cls**sent-_0*?*mask*,*+sentl_1**sep+*":
        ["<s>", "The", "Ġmovie", "Ġwas", "Ġgreat", "?", "<mask>", ",", "Ġit", "Ġis", "Ġ", "Good", "</s>"],
    "*cls**sent_0**mask*,*+sentl_1**sep+*":
        ["<s>", "The", "Ġmovie", "Ġwas", "Ġgreat", ".", "<mask>", ",", "Ġit", "Ġis", "Ġ", "Good", "</s>"],
}


def ids(text: str) -> list[int]:
    return TOK.encode(text, add_special_tokens=False)


def encoder(template: str, words=("terrible", "great"), **kw) -> PromptEncoder:
    return PromptEncoder(TOK, template, words, **kw)


@pytest.mark.parametrize("name", sorted(LMBFF_TASKS))
def test_every_task_template_renders_golden(name):
    task = LMBFF_TASKS[name]
    enc = PromptEncoder(TOK, task.template, task.label_words, max_length=task.max_seq_length,
                        first_sent_limit=task.first_sent_limit, other_sent_limit=task.other_sent_limit)
    out = enc.encode(TWO if task.num_sentences == 2 else ONE)
    assert TOK.convert_ids_to_tokens(list(out.input_ids)) == GOLDEN[task.template]
    assert out.input_ids[out.mask_pos] == TOK.mask_token_id == 4
    assert out.input_ids[0] == TOK.cls_token_id == 0 and out.input_ids[-1] == TOK.sep_token_id == 2


def test_sst2_ids_match_the_tokenizer_piece_by_piece():
    out = encoder("*cls**sent_0*_It_was*mask*.*sep+*").encode(ONE)
    expected = [TOK.cls_token_id] + ids("a great film") + ids(" It was") + [TOK.mask_token_id] \
        + [TOK.convert_tokens_to_ids(".")] + [TOK.sep_token_id]
    assert list(out.input_ids) == expected
    assert out.mask_pos == expected.index(TOK.mask_token_id)


def test_nli_ids_match_the_tokenizer_piece_by_piece():
    out = encoder("*cls**sent-_0*?*mask*,*+sentl_1**sep+*").encode(TWO)
    expected = [0] + ids("The movie was great") + [TOK.convert_tokens_to_ids("?"), 4,
                                                    TOK.convert_tokens_to_ids(",")] + ids(" it is Good") + [2]
    assert list(out.input_ids) == expected


@pytest.mark.parametrize("part,text", [
    ("sent_1", "It is Good"), ("+sent_1", " It is Good"), ("sent-_1", "It is Goo"),
    ("sentl_1", "it is Good"), ("+sentl_1", " it is Good"), ("sentl-_1", "it is Goo"),
    ("sentu_0", "The movie was great."), ("+sentu_0", " The movie was great."),
    ("+sentu-_0", " The movie was great"),
])
def test_sentence_part_variants(part, text):
    out = encoder(f"*mask**{part}*").encode(("the movie was great.", "It is Good") if "sentu" in part else TWO)
    assert list(out.input_ids) == [4] + ids(text)


def test_special_parts_label_parts_and_segments():
    enc = encoder("*bos**label_1**sep+**mask**eos*_and*label_0*")
    out = enc.encode(ONE)
    great, terrible = label_word_ids(TOK, ["great", "terrible"])
    assert list(out.input_ids) == [TOK.bos_token_id, great, TOK.sep_token_id, 4, TOK.eos_token_id,
                                   *ids(" and"), terrible]
    # sep+ starts segment 1 after itself
    assert list(out.token_type_ids) == [0, 0, 0, 1, 1] + [1] * len(ids(" and")) + [1]
    assert enc.label_ids == [terrible, great] and TOK.convert_ids_to_tokens(enc.label_ids) == ["Ġterrible", "Ġgreat"]


def test_sentence_limits_and_truncation():
    long = ("the movie was really quite very good and the story was great",)
    limited = encoder("*cls**sent_0**mask**sep*", first_sent_limit=3).encode(long)
    assert list(limited.input_ids) == [0] + ids(long[0])[:3] + [4, 2]
    other = encoder("*cls**sent_0**mask**+sent_1**sep*", other_sent_limit=2).encode(("a", long[0]))
    assert list(other.input_ids) == [0] + ids("a") + [4] + ids(" " + long[0])[:2] + [2]
    full = [0, 4] + ids(" " + long[0]) + [2]
    tail = encoder("*cls**mask**+sent_0**sep*", max_length=6).encode(long)
    assert list(tail.input_ids) == full[:6] and tail.mask_pos == 1
    head = encoder("*cls**sent_0**mask**sep*", max_length=4, truncate_head=True).encode(long)
    assert list(head.input_ids) == [ids(long[0])[-2], ids(long[0])[-1], 4, 2] and head.mask_pos == 2


def test_long_sentence_is_shortened_rather_than_losing_the_mask():
    long = ("the movie was really good",)
    out = encoder("*cls**sent_0**mask*.*sep*", max_length=5).encode(long)
    assert list(out.input_ids) == [0] + ids(long[0])[:1] + [4, TOK.convert_tokens_to_ids("."), 2]
    assert out.mask_pos == 2
    # the longest of two sentences gives way first
    two = encoder("*cls**+sent_0**+sent_1**mask**sep*", max_length=6).encode(("a", "the movie was really good"))
    assert list(two.input_ids) == [0] + ids(" a") + ids(" the movie was really good")[:2] + [4, 2]
    # when the mask survives the cut, the plain tail cut applies (the original's behaviour)
    tail = encoder("*cls**sent_0**mask**+sent_1**sep*", max_length=6).encode(("a", "the movie was really good"))
    assert list(tail.input_ids) == ([0] + ids("a") + [4] + ids(" the movie was really good") + [2])[:6]
    with pytest.raises(TemplateError, match="alone is longer"):
        encoder("*cls*_It_was_really_quite*sent_0**mask*", max_length=3).encode(long)


@pytest.mark.parametrize("template,message", [
    ("*cls**sent_0*_It_was.*sep+*", "no \\*mask\\*"),
    ("", "empty"),
    ("*cls**sent_x**mask*", "malformed"),
    ("*cls**labelx_0**mask*", "demonstrations"),
])
def test_bad_templates_are_rejected(template, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(template)


def test_template_needing_a_missing_sentence_is_rejected():
    with pytest.raises(TemplateError, match="sent_1"):
        encoder("*cls**sent_0**mask**sent_1*").encode(ONE)


def test_every_task_label_word_is_one_token_with_a_leading_space():
    for task in LMBFF_TASKS.values():
        word_ids = label_word_ids(TOK, task.label_words)
        assert [TOK.convert_ids_to_tokens(i) for i in word_ids] == ["Ġ" + w for w in task.label_words]


def test_multi_token_label_word_is_a_clear_error():
    with pytest.raises(TemplateError, match="task.label_words"):
        label_word_ids(TOK, ["terrible", "magnificently"])
    with pytest.raises(TemplateError, match="repeated"):
        label_word_ids(TOK, ["great", " great"])


def test_verbatim_label_words_are_used_as_tokens():
    assert label_word_ids(TOK, ["<mask>", "."]) == [4, TOK.convert_tokens_to_ids(".")]
    with pytest.raises(TemplateError, match="not a token"):
        label_word_ids(TOK, ["<nope>"])


def test_plain_encoding_for_the_classification_head():
    out = encode_plain(TOK, TWO, max_length=64)
    assert list(out.input_ids) == [0] + ids(TWO[0]) + [2] + ids(TWO[1]) + [2]
    assert out.mask_pos is None
