"""ALBEF's text side: the bert-base-uncased WordPiece vocabulary with ALBEF's special tokens.

ALBEF ships its own ``models/tokenization_bert.py``, which differs from BERT's in one place:
a single text becomes ``[CLS] tokens`` with **no** trailing ``[SEP]``. Its VQA code appends
``[SEP]`` to every answer as text (``configs/VQA.yaml`` ``eos: '[SEP]'``), so

* a question (or any text the encoder embeds) is ``[CLS] q_1 .. q_n``;
* an answer is ``[CLS] a_1 .. a_m [SEP]``: ``[CLS]`` is the decoder's start token, and the
  answer's likelihood includes the ``[SEP]`` that ends it.

Questions are first cleaned as ALBEF's VQA test set does (``dataset/utils.py``
``pre_question``, at most 50 words): :func:`pre_question`. The WordPiece vocabulary is
bert-base-uncased's (ALBEF's ``--text_encoder`` default), from the Hugging Face cache or a
local directory; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path
from typing import Any

import torch

from vqacache.cache_spec.errors import UsageError

DEFAULT_TOKENIZER = "bert-base-uncased"
QUESTION_MAX_WORDS = 50
_PUNCT = re.compile(r"([,.'!?\"()*#:;~])")


def load_bert_tokenizer(tokenizer: Any = None) -> Any:
    """A transformers BERT tokenizer: ``tokenizer`` itself when it is one, else loaded from a
    local directory (``vocab.txt``) or, by default, bert-base-uncased from the Hugging Face
    cache (offline). Missing -> one-line :class:`UsageError`."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import BertTokenizer

    source = str(tokenizer) if tokenizer is not None else DEFAULT_TOKENIZER
    try:
        return BertTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:  # not cached, not a directory, unreadable
        raise UsageError(
            f"the {source} tokenizer is not available locally ({type(exc).__name__}); download it once "
            f"(huggingface-cli download {DEFAULT_TOKENIZER} vocab.txt tokenizer_config.json) or pass a directory "
            "holding its vocab.txt"
        ) from exc


CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation
"""What :func:`character_tokenizer` spells words with (68 characters)."""


def character_vocab() -> list[str]:
    """A character-level WordPiece vocabulary in id order: bert-base-uncased's special layout
    (``[PAD]`` 0, ``[unused0..98]``, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103),
    then each of :data:`CHARACTERS`, then each as a continuation ``##c`` (240 tokens)."""
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return [*specials, *CHARACTERS, *(f"##{c}" for c in CHARACTERS)]


def character_tokenizer() -> Any:
    """A lower-casing transformers ``BertTokenizer`` over :func:`character_vocab`: every word is
    spelled letter by letter (``what`` -> ``w ##h ##a ##t``). The tiny ALBEF's own tokenizer, so
    that it needs no download; its identity is the vocabulary's sha256 (:func:`tokenizer_spec`)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={t: i for i, t in enumerate(character_vocab())}, do_lower_case=True)


def tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """What identifies the tokenizer's numbers: class, lower-casing, vocabulary size and sha256
    (of the tokens in id order, one per line); never where it was loaded from."""
    vocab = tokenizer.get_vocab()
    ordered = "\n".join(token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]))
    return {
        "class": type(tokenizer).__name__,
        "do_lower_case": bool(getattr(tokenizer, "do_lower_case", True)),
        "vocab_size": len(vocab),
        "vocab_sha256": hashlib.sha256(ordered.encode("utf-8")).hexdigest(),
        "format": "albef: [CLS] text (no [SEP]); answers [CLS] answer [SEP]",
    }


def pre_question(question: str, max_words: int = QUESTION_MAX_WORDS) -> str:
    """ALBEF's question cleaning: lower-case, drop ``,.'!?"()*#:;~``, ``-`` and ``/`` become
    spaces, trailing spaces stripped, at most ``max_words`` words."""
    question = _PUNCT.sub("", question.lower()).replace("-", " ").replace("/", " ").rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def tokenize(
    tokenizer: Any, texts: list[str], *, answer: bool, max_length: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """n texts -> ``ids`` (n, L) int64 and ``mask`` (n, L) int64 (1 = token, 0 = padding), L the
    longest row: ``[CLS] text`` or, with ``answer``, ``[CLS] answer [SEP]``; at most
    ``max_length`` tokens per row (the end of the text is cut, never the special tokens)."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    keep = max_length - 1 - int(answer)
    rows = [[cls, *p[:keep], *([sep] if answer else [])] for p in pieces]
    longest = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), longest), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), longest), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
