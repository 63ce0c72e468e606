"""The LM-BFF template language (medium_models/src/dataset.py, after LM-BFF), rendered with the model's own special tokens.

A template is a string of parts separated by ``*``:

* ``cls``, ``mask``, ``sep``, ``sep+`` (a sep that also starts a new segment), ``bos``, ``eos``:
  the tokenizer's special token ids;
* ``sent_i`` and its variants ``+sent_i`` (leading space), ``sent-_i`` (last character removed),
  ``sentl_i`` / ``sentu_i`` (first character lower-/upper-cased) and their combinations such as
  ``+sentl_i``, ``sentl-_i``, ``+sentu-_i``: the tokens of sentence ``i``;
* ``label_i``: the label word of class ``i``;
* anything else: literal text with ``_`` meaning a space; a one-character literal is looked up
  directly as a token (so ``.`` is the bare-punctuation token, without a leading space).

Sentences are encoded without special tokens, cut to ``first_sent_limit`` (sentence 0) or
``other_sent_limit`` (others) tokens, and the whole input is cut to ``max_length`` from the tail
(or the head with ``truncate_head``); when that cut would drop the mask, the longest sentences
are shortened instead (LM-BFF crashed on such inputs). A template must contain ``mask``; label words get a leading
space and must be single tokens.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # validation parses templates without loading transformers
    from transformers import PreTrainedTokenizerBase

from zoft.errors import ZoftUserError

log = logging.getLogger(__name__)

SPECIAL_PARTS = {"cls": "cls_token_id", "mask": "mask_token_id", "sep": "sep_token_id",
                 "sep+": "sep_token_id", "bos": "bos_token_id", "eos": "eos_token_id"}
# +? (leading space) sent, l/u (case of the first character), - (drop last character), _index
_SENT = re.compile(r"^(?P<space>\+)?sent(?P<case>[lu])?(?P<cut>-)?_(?P<index>\d+)$")
_LABEL = re.compile(r"^label_(?P<index>\d+)$")
# Label words starting with these are used as tokens verbatim (no leading space), as LM-BFF.
VERBATIM_LABEL_START = ("<", "[", ".", ",")


class TemplateError(ZoftUserError, ValueError):
    """A template or label word that cannot be used with this tokenizer."""


@dataclass(frozen=True)
class Part:
    """One ``*``-separated piece: ``kind`` is special | sent | label | text."""

    kind: str
    value: str = ""  # special: its name; text: the literal (spaces restored)
    index: int = 0  # sent / label: which sentence / class
    space: bool = False  # sent: prefix a space
    case: str = ""  # sent: "l" or "u" applied to the first character
    cut: bool = False  # sent: drop the last character


def parse_template(template: str) -> list[Part]:
    """Split ``template`` into parts; raises :class:`TemplateError` on malformed parts or when
    there is no ``mask``."""
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(f"template {template!r} is empty; e.g. '*cls**sent_0*_It_was*mask*.*sep+*'")
    parts: list[Part] = []
    for raw in template.split("*"):
        if raw == "":
            continue  # "**" separates two parts without text between them
        if raw in SPECIAL_PARTS:
            parts.append(Part("special", value=raw))
        elif (m := _SENT.match(raw)) is not None:
            parts.append(Part("sent", index=int(m["index"]), space=bool(m["space"]),
                              case=m["case"] or "", cut=bool(m["cut"])))
        elif (m := _LABEL.match(raw)) is not None:
            parts.append(Part("label", index=int(m["index"])))
        elif raw.startswith("labelx_"):
            raise TemplateError(
                f"template part {raw!r} (label of a demonstration) needs in-context demonstrations, "
                "which zoft's masked-LM prompts do not use; remove it from the template")
        elif re.match(r"^\+?sent[lu]?-?_", raw) or raw.startswith("label_"):
            raise TemplateError(
                f"template part {raw!r} is malformed; sentence parts look like sent_0, +sent_1, "
                "sent-_0, sentl_1, +sentl_1, sentu_0, +sentu-_0; label parts like label_0")
        else:
            parts.append(Part("text", value=raw.replace("_", " ")))
    if not any(p.kind == "special" and p.value == "mask" for p in parts):
        raise TemplateError(f"template {template!r} has no *mask* part; a prompt needs one mask position")
    return parts


def sentence_text(part: Part, sentences: Sequence[str]) -> str:
    """The text a sentence part stands for (case change, then last-character cut, then space)."""
    text = sentences[part.index]
    if part.case == "l":
        text = text[:1].lower() + text[1:]
    elif part.case == "u":
        text = text[:1].upper() + text[1:]
    if part.cut:
        text = text[:-1]
    return (" " + text) if part.space else text


def label_word_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """Token id of each label word, with a leading space; every one must be a single token."""
    ids = []
    for word in words:
        word = str(word).lstrip()
        if not word:
            raise TemplateError("a label word is empty; give one non-empty word per class")
        if word.startswith(VERBATIM_LABEL_START):
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise TemplateError(f"label word {word!r} is not a token of the {type(tokenizer).__name__} vocabulary")
        else:
            pieces = tokenizer.tokenize(" " + word)
            if len(pieces) != 1:
                raise TemplateError(
                    f"label word {' ' + word!r} is {len(pieces)} tokens {pieces} for this tokenizer, "
                    "but masked-LM prompts need each label word (with its leading space) to be one "
                    "token; choose other words with task.label_words=[...]")
            token_id = tokenizer.convert_tokens_to_ids(pieces[0])
        ids.append(int(token_id))
    if len(set(ids)) != len(ids):
        raise TemplateError(f"label words {list(words)} map to repeated tokens {ids}; use distinct words")
    return ids


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids, segment ids (0 before the first sep+, then 1, ...) and the mask index (or None
    when the input has no template)."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    mask_pos: Optional[int]


class PromptEncoder:
    """Renders examples with one template for one tokenizer (LM-BFF ``tokenize_multipart_input``)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: str,
        label_words: Sequence[str],
        *,
        max_length: int = 128,
        first_sent_limit: Optional[int] = None,
        other_sent_limit: Optional[int] = None,
        truncate_head: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.parts = parse_template(template)
        self.label_words = list(label_words)
        self.label_ids = label_word_ids(tokenizer, self.label_words)
        self.max_length = max_length
        self.first_sent_limit = first_sent_limit
        self.other_sent_limit = other_sent_limit
        self.truncate_head = truncate_head
        self._warned = False
        self.specials = {name: self._special_id(name) for name in
                         {p.value for p in self.parts if p.kind == "special"}}
        for p in self.parts:
            if p.kind == "label" and p.index >= len(self.label_ids):
                raise TemplateError(f"template part label_{p.index} but the task has {len(self.label_ids)} label words")

    def _special_id(self, name: str) -> int:
        token_id = getattr(self.tokenizer, SPECIAL_PARTS[name])
        if token_id is None:
            raise TemplateError(f"template part {name!r}: the tokenizer {type(self.tokenizer).__name__} has no such special token")
        return int(token_id)

    def _enc(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _literal(self, text: str) -> list[int]:
        if len(text) == 1:
            # LM-BFF converts one-character literals directly, so "." is the bare "." token;
            # a character that is not itself a token (e.g. a space in byte-level BPE) is encoded.
            token_id = self.tokenizer.convert_tokens_to_ids(text)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                return [int(token_id)]
        return self._enc(text)

    def max_sentence_index(self) -> int:
        return max((p.index for p in self.parts if p.kind == "sent"), default=-1)

    def encode(self, sentences: Sequence[str]) -> EncodedPrompt:
        """Render ``sentences`` into ids; raises when the mask does not survive truncation."""
        if self.max_sentence_index() >= len(sentences):
            raise TemplateError(
                f"template {self.template!r} uses sent_{self.max_sentence_index()} but the task's "
                f"examples have {len(sentences)} sentence(s)")
        pieces: list[tuple[Part, list[int], int]] = []  # (part, token ids, segment id)
        segment = 0
        for part in self.parts:
            if part.kind == "special":
                new = [self.specials[part.value]]
            elif part.kind == "label":
                new = [self.label_ids[part.index]]
            elif part.kind == "sent":
                new = self._enc(sentence_text(part, sentences))
                limit = self.first_sent_limit if part.index == 0 else self.other_sent_limit
                if limit is not None:
                    new = new[:limit]
            else:
                new = self._literal(part.value)
            pieces.append((part, new, segment))
            if part.kind == "special" and part.value == "sep+":
                segment += 1
        pieces = self._keep_mask(pieces)
        ids = [t for _, new, _ in pieces for t in new]
        types = [seg for _, new, seg in pieces for _ in new]
        return self._finish(ids, types, need_mask=True)

    def _keep_mask(self, pieces: list[tuple[Part, list[int], int]]) -> list[tuple[Part, list[int], int]]:
        """When cutting the input to ``max_length`` would drop the mask, shorten the longest
        sentences instead (from their end) so the whole template survives. LM-BFF crashed here;
        nothing changes for inputs it could encode."""
        total = sum(len(new) for _, new, _ in pieces)
        if total <= self.max_length:
            return pieces
        mask_id = self.specials["mask"]
        ids = [t for _, new, _ in pieces for t in new]
        mask_at = ids.index(mask_id)
        kept = range(total - self.max_length, total) if self.truncate_head else range(self.max_length)
        if mask_at in kept:
            return pieces
        excess = total - self.max_length
        pieces = [(p, list(new), seg) for p, new, seg in pieces]
        while excess > 0:
            sent = [i for i, (p, new, _) in enumerate(pieces) if p.kind == "sent" and new]
            if not sent:
                raise TemplateError(
                    f"template {self.template!r} alone is longer than max_seq_length={self.max_length} tokens")
            longest = max(sent, key=lambda i: len(pieces[i][1]))
            new = pieces[longest][1]
            cut = min(excess, len(new))
            del new[len(new) - cut:]
            excess -= cut
        if not self._warned:
            log.warning("an input longer than max_seq_length=%d would lose its <mask>; its longest "
                        "sentence was shortened instead (set task.first_sent_limit to control this)",
                        self.max_length)
            self._warned = True
        return pieces

    def _finish(self, ids: list[int], types: list[int], need_mask: bool) -> EncodedPrompt:
        if len(ids) > self.max_length:
            log.debug("input of %d tokens truncated to %d", len(ids), self.max_length)
            keep = slice(len(ids) - self.max_length, None) if self.truncate_head else slice(0, self.max_length)
            ids, types = ids[keep], types[keep]
        mask_pos = None
        if need_mask:
            mask_id = self.specials["mask"]
            if mask_id not in ids:  # unreachable after _keep_mask; kept as a guard
                raise TemplateError(f"the <mask> token fell outside max_seq_length={self.max_length}")
            mask_pos = ids.index(mask_id)
        return EncodedPrompt(tuple(ids), tuple(types), mask_pos)


def encode_plain(tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str], max_length: int) -> EncodedPrompt:
    """No template (the ``cls-head`` ablation, LM-BFF ``finetune``): cls, then each sentence
    followed by sep; cut to ``max_length`` from the tail."""
    ids = [tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id]
    types = [0]
    for i, sent in enumerate(sentences):
        new = list(tokenizer.encode(sent, add_special_tokens=False)) + [tokenizer.sep_token_id]
        ids += new
        types += [i] * len(new)
    ids, types = ids[:max_length], types[:max_length]
    return EncodedPrompt(tuple(ids), tuple(types), None)


def label_texts(template: str, label_words: Sequence[str]) -> list[str]:
    """One description per class for the ``similarity`` objective: the template's own words with
    the class's label word in the mask and the input left out (special tokens dropped), e.g.
    ``*cls**sent_0*_It_was*mask*.*sep+*`` with great/terrible gives "It was great." /
    "It was terrible.". Punctuation that would start a text (an NLI template's ``?``) is dropped."""
    parts = parse_template(template)
    texts = []
    for word in label_words:
        pieces = []
        for part in parts:
            if part.kind == "text":
                pieces.append(part.value)
            elif part.kind == "special" and part.value == "mask":
                pieces.append(" " + str(word).strip())
            elif part.kind == "label":
                pieces.append(" " + str(label_words[part.index]).strip())
        text = re.sub(r"\s+", " ", "".join(pieces)).strip()
        text = re.sub(r"^[^\w]+\s*", "", text)
        texts.append(text or str(word).strip())
    return texts
