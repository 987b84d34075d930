"""The ``star`` dataset: STAR, situated reasoning, 4-way multiple choice on video segments.

Expected layout under ``--data-root``::

    STAR_train.json, STAR_val.json, STAR_test.json   whichever exist (csbobby/STAR_Benchmark)
    Charades_v1_480/<video_id>.mp4                   Charades videos (or ``video_root``)

Each file is a JSON list of questions: ``question_id`` (``Interaction_T1_0``),
``question``, ``video_id`` (Charades), ``start`` / ``end`` (seconds), ``choices`` (a list
of ``{choice_id, choice}``) and, in train/val, ``answer``: the answer *text*; the answer
index is that of the choice whose text equals it (an answer matching no choice is an
error). Test has no answers. Programs and situation graphs are not kept.

Segments: a question is about ``[start, end]`` of the Charades video; the record keeps
those seconds, the video is featurized whole and the segment is selected by presentation
time when reading. ``qtype`` is the question family, the ``question_id`` prefix:
Interaction, Sequence, Prediction or Feasibility (the template ``T#`` stays in the
``qid``). Official metric: accuracy per family and their mean (test on EvalAI).
"""

from __future__ import annotations

from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import field, read_json, split_files, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import VideoFinder, video_dirs
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

NAME = "star"
SPLITS = ("train", "val", "test")
VIDEO_DIR = "Charades_v1_480"
EXPECTED = "STAR_train.json/STAR_val.json/STAR_test.json (STAR)"


def _record(item: dict, split: str, where: str) -> QuestionRecord:
    qid = field(NAME, where, item, "question_id")
    choices = field(NAME, where, item, "choices", list)
    if not choices or not all(
        isinstance(c, dict) and isinstance(c.get("choice"), str) for c in choices
    ):
        raise UsageError(f"{NAME}: {where}: 'choices' must be a list of {{choice_id, choice}}")
    ordered = sorted(choices, key=lambda c: c.get("choice_id", 0))
    candidates = tuple(c["choice"] for c in ordered)
    answer = item.get("answer")
    if answer is not None:
        if answer not in candidates:
            raise UsageError(f"{NAME}: {where}: answer {answer!r} is none of the choices of {qid}")
        answer = candidates.index(answer)
    start = field(NAME, where, item, "start", (int, float))
    end = field(NAME, where, item, "end", (int, float))
    return QuestionRecord(
        qid=qid,
        video_id=field(NAME, where, item, "video_id"),
        question=field(NAME, where, item, "question"),
        candidates=candidates,
        answer=answer,
        qtype=qid.split("_", 1)[0],
        split=split,
        start=float(start),
        end=float(end),
    )


def read_star(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one ``STAR_<split>.json`` into records, in file order."""
    records = []
    for i, item in enumerate(read_json(NAME, path, list)):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        records.append(_record(item, split, where))
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class Star:
    """STAR over ``STAR_<split>.json``; splits are the files present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(
            NAME, self.data_root, {s: [f"STAR_{s}.json"] for s in SPLITS}, EXPECTED
        )
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, (VIDEO_DIR,)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_star(self._files[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``Charades_v1_480/<video_id>.mp4``."""
        return self._finder.find([f"{video_id}.mp4"])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Multiple choice: no answer vocabulary."""
        return []
