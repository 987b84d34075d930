"""A WordPiece tokenizer built from a dataset's own text, for teachers with random weights.

A teacher with ``random[:SEED]`` weights still needs a tokenizer, and a fresh offline machine
has none. With random weights the tokenizer's vocabulary carries no meaning, only ids, so one
built from the dataset's questions, candidates, answers and answer vocabulary serves; it is
recorded in the teacher's spec (``tokenizer.identity = "wordpiece-from-dataset"``, its size
and sha256), so two runs over the same text share a store's teacher. Real weights never get
one: they use their own tokenizer (or ``--imageqa-tokenizer``).

The vocabulary is built here, deterministically, rather than by ``tokenizers``'
``WordPieceTrainer``, whose merges depend on hash-map order (huggingface/tokenizers #1794: the
same text can give another vocabulary in another process). The text is split exactly as the
BERT tokenizer that reads the vocabulary splits it (``tokenizers``' ``BertNormalizer``, lower
case, accents stripped, and ``BertPreTokenizer``), then the vocabulary (method
:data:`METHOD`) is, in id order:

* bert-base-uncased's special layout: ``[PAD]`` 0, ``[unused0..98]`` 1-99, ``[UNK]`` 100,
  ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103 (BLIP's text config and ALBEF read these ids);
* every character seen, sorted, then each as a continuation ``##c``, sorted (so every word of
  the dataset tokenizes without ``[UNK]``);
* the words, most frequent first, ties by the word, up to :data:`MAX_VOCAB` tokens in all
  (the teachers' embedding tables hold 30522 tokens).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

METHOD = "dataset-wordpiece-v1"
IDENTITY = "wordpiece-from-dataset"
MAX_VOCAB = 30522
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class DatasetTokenizer:
    """A built WordPiece vocabulary: ``tokens`` in id order. Equal (and hashed) by its sha256."""

    sha256: str
    tokens: tuple[str, ...] = field(compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.tokens)

    def spec(self) -> dict[str, Any]:
        """What the teacher's spec records about it (merged into its ``tokenizer`` entry)."""
        return {"identity": IDENTITY, "method": METHOD, "do_lower_case": True, "vocab_size": len(self.tokens),
                "vocab_sha256": self.sha256}

    def load(self) -> Any:
        """A transformers ``BertTokenizer`` (lower case) over this vocabulary."""
        from transformers import BertTokenizer

        return BertTokenizer(vocab={t: i for i, t in enumerate(self.tokens)}, do_lower_case=True)


def tokens_sha256(tokens: Iterable[str]) -> str:
    """sha256 of the tokens in id order, one per line (as ALBEF's ``tokenizer_spec`` hashes a vocabulary)."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def build_dataset_tokenizer(texts: Iterable[str], max_vocab: int = MAX_VOCAB) -> DatasetTokenizer:
    """The vocabulary of ``texts`` (see the module docstring); same texts, in any order -> the
    same tokens and sha256."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        if text:
            counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(str(text))))
    chars = sorted({c for word in counts for c in word})
    tokens = [*SPECIALS, *chars, *(f"##{c}" for c in chars)]
    if len(tokens) > max_vocab:
        raise ValueError(f"the dataset's text has {len(chars)} distinct characters; too many for a "
                         f"{max_vocab}-token vocabulary")
    seen = set(tokens)
    words = sorted((w for w in counts if w not in seen), key=lambda w: (-counts[w], w))
    tokens += words[: max_vocab - len(tokens)]
    return DatasetTokenizer(tokens_sha256(tokens), tuple(tokens))


def dataset_texts(dataset: Any) -> list[str]:
    """Every question, candidate and text answer of every split of ``dataset``, and its answer
    vocabulary (open-ended sets): what the teacher will tokenize."""
    from vqacache.featurize.datasets import answer_vocab_of

    texts: list[str] = []
    open_ended = False
    for split in dataset.splits():
        for q in dataset.questions(split):
            texts.append(q.question)
            texts.extend(q.candidates)
            if isinstance(q.answer, str):
                texts.append(q.answer)
            open_ended = open_ended or not q.candidates
    if open_ended:
        texts.extend(answer_vocab_of(dataset))
    return texts
