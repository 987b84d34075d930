"""The ``agqa`` dataset: AGQA 2.0 balanced, open-ended compositional questions on Charades.

Expected layout under ``--data-root`` (or its ``AGQA_balanced/`` folder)::

    train_balanced.txt, test_balanced.txt   JSON despite the extension: {question_id: record}
                                            (``*_balanced.json`` and the README excerpt
                                            ``*_balanced_example.json`` are read too)
    Charades_v1_480/<video_id>.mp4          Charades videos (or the ``video_root`` option)

A record (AGQA README) has ``question``, ``answer``, ``video_id``, ``global`` (reasoning
categories, a list), ``semantic`` (object / relation / action), ``structural`` (query /
verify / logic / choose / compare), ``ans_type``, ``steps``, ``novel_comp``, ``more_steps``,
``program``, scene-graph grounding and indirect-reference flags. It becomes an open-ended
:class:`QuestionRecord` with ``qid`` = the question id (``YSKX3-9``) and ``qtype =
f"{semantic}/{structural}"`` (``object/verify``). Binary vs open follows ``structural``
(``query`` = open; the README says the released ``ans_type`` labels are wrong). AGQA's
other breakdowns (reasoning categories, novel compositions, indirect references, more
steps) need fields a record does not carry: :meth:`Agqa.annotations` returns the raw
records of a split for them.

Answer vocabulary: every distinct train answer, most frequent first (baselines classify
over all train answers; the set is small and closed). Official metric: accuracy overall
and per reasoning / semantic / structural / binary-vs-open (README protocol, no scorer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import field, read_json
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import VideoFinder, video_dirs
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, require_train

NAME = "agqa"
SPLITS = ("train", "test")
FOLDERS = (".", "AGQA_balanced")
SUFFIXES = ("_balanced.txt", "_balanced.json", "_balanced_example.json")
VIDEO_DIR = "Charades_v1_480"
EXPECTED = "train_balanced.txt/test_balanced.txt (AGQA 2.0, also under AGQA_balanced/)"


def is_open(structural: str) -> bool:
    """AGQA's binary-vs-open split: ``query`` questions are open, all others binary."""
    return structural == "query"


def read_agqa(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one AGQA balanced file into records, in file order."""
    data = read_json(NAME, path, dict)
    records = []
    for qid, item in data.items():
        where = f"{path}: question {qid}"
        if not isinstance(item, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        semantic = field(NAME, where, item, "semantic")
        structural = field(NAME, where, item, "structural")
        records.append(
            QuestionRecord(
                qid=str(qid),
                video_id=field(NAME, where, item, "video_id"),
                question=field(NAME, where, item, "question"),
                candidates=(),
                answer=item.get("answer"),
                qtype=f"{semantic}/{structural}",
                split=split,
            )
        )
    return records


@register_dataset(NAME)
class Agqa:
    """AGQA 2.0 balanced over ``{train,test}_balanced.txt``; splits are the files present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files: dict[str, Path] = {}
        for split in SPLITS:
            names = [self.data_root / d / f"{split}{s}" for d in FOLDERS for s in SUFFIXES]
            found = next((p for p in names if p.is_file()), None)
            if found is not None:
                self._files[split] = found
        if not self._files:
            raise UsageError(f"{NAME}: --data-root {self.data_root} holds none of {EXPECTED}")
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, (VIDEO_DIR,)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_agqa(self._files[split], split)
        return list(self._questions[split])

    def annotations(self, split: str) -> dict[str, dict[str, Any]]:
        """The raw AGQA records of ``split`` by question id (for the README's breakdowns).

        Read from disk on each call and not kept: the full files hold millions of records.
        """
        require_split(NAME, split, self.splits())
        return read_json(NAME, self._files[split], dict)

    def video_path(self, video_id: str) -> Path:
        """``Charades_v1_480/<video_id>.mp4``."""
        return self._finder.find([f"{video_id}.mp4"])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Every distinct train answer, most frequent first."""
        require_train(NAME, self.splits(), "every distinct train answer")
        return frequent_answers(
            str(q.answer) for q in self.questions("train") if q.answer is not None
        )
