"""Offline word-level tokenizers for random-weight runs (no hub access, stable recorded ids).

Stage two with ``--weights random`` has no pretrained tokenizer to read. The vocabulary is
built from the run's own text (questions, candidates, the prompt's words, ``Option A..Z``):
lower-cased words and punctuation runs (the ``tokenizers`` ``Whitespace`` pre-tokenizer),
sorted, after fixed special tokens. The word list is recorded in the run's arguments, so the
ids are the same whenever the model is rebuilt (resume, evaluation). Unknown words map to
the unknown token. (Stage one builds a WordPiece tokenizer for its random BLIP teacher; heads
never import featurize, and a word-level vocabulary is all a tiny random model needs.)

* ``kind="bert"`` (the Q-Former's): ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3;
  ``[CLS] text [SEP]``.
* ``kind="t5"``: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; ``text </s>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

SPECIALS = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "t5": ["<pad>", "</s>", "<unk>"]}
_WORD = re.compile(r"\w+|[^\w\s]+")


def word_vocab(texts: Iterable[str]) -> list[str]:
    """Sorted distinct lower-cased words and punctuation runs of ``texts``."""
    return sorted({w for t in texts for w in _WORD.findall(t.lower())})


def word_tokenizer(words: list[str], kind: str) -> Any:
    """A ``PreTrainedTokenizerFast`` over ``SPECIALS[kind] + words`` (ids in that order)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[kind]
    vocab = {tok: i for i, tok in enumerate([*specials, *[w for w in words if w not in specials]])}
    unk = specials[1] if kind == "bert" else specials[2]
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", truncation_side="left")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   truncation_side="left")
