"""Answer vocabularies of open-ended benchmarks, built from training answers.

Open-ended VideoQA is usually solved as classification over a fixed answer list taken from
the training split. Benchmarks differ only in how many answers they keep:

* MSVD-QA (original release): the 1,000 most frequent train answers;
* MSRVTT-QA (HCRN, just-ask, doc-doc's ``ans_word.json``): the 4,000 most frequent;
* ActivityNet-QA (just-ask): answers seen at least twice in train;
* TGIF-QA FrameQA, AGQA, NExT-OE, CLEVRER descriptive: every distinct train answer;
* EgoTaskQA: ``<UNK0>``, ``<UNK1>``, then the 4,000 most frequent (lower-cased) answers.

:func:`frequent_answers` implements all of them: most frequent first, ties broken by first
appearance in the training file, so the list is deterministic. (The original MSVD-QA
``answer_set.txt`` came from pandas' unstable ``value_counts``; its order among equally
frequent answers is arbitrary, which is why adapters prefer a shipped list when present.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import read_json


def frequent_answers(
    answers: Iterable[str], *, top: int | None = None, min_count: int = 1
) -> list[str]:
    """Distinct ``answers``, most frequent first (ties: first appearance), filtered.

    ``top`` keeps at most that many; ``min_count`` drops answers seen fewer times.
    """
    counts = Counter(answers)  # insertion order = first appearance
    ranked = sorted(counts, key=lambda a: -counts[a])  # stable: ties keep first appearance
    kept = [a for a in ranked if counts[a] >= min_count]
    return kept if top is None else kept[:top]


def read_answer_list(dataset: str, path: Path) -> list[str]:
    """A shipped answer list: a JSON list of strings, or a text file with one answer per line."""
    if path.suffix == ".json":
        data = read_json(dataset, path, list)
        if not all(isinstance(a, str) for a in data):
            raise UsageError(f"{dataset}: {path} must be a JSON list of answer strings")
        return list(data)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{dataset}: cannot read {path} ({err})") from None
    return [line for line in lines if line.strip()]


def require_train(dataset: str, splits: tuple[str, ...], convention: str) -> None:
    """Raise a one-line error when the answer vocabulary would need an absent train split."""
    if "train" not in splits:
        raise UsageError(
            f"{dataset}: the answer vocabulary ({convention}) is built from the train split, "
            "whose annotation file is not under --data-root"
        )
