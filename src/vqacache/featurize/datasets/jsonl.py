"""The ``jsonl`` dataset: a lab's own VideoQA data, one JSON object per question.

Layout under ``--data-root``::

    <split>.jsonl          one file per split; the split is the file name without
                           ``.jsonl`` (train, val and test first, then the others sorted)
    answer_vocab.txt       optional: the answer vocabulary, one answer per line
    videos/<video>.mp4     the videos (or under the ``video_root`` option)

Schema of one line (keys not listed are ignored)::

    {"qid": "q0001",                 required, str or int, unique within the file
     "video": "clip_007",            required, the video id (may contain "/")
     "question": "what falls?",      required
     "candidates": ["a cup", ...],   optional: present and non-empty = multiple choice
     "answer": 1,                    optional: multiple choice, the index into candidates
                                     (or the exact candidate text); open-ended, the answer
                                     text; absent or null = unlabelled
     "qtype": "why",                 optional, any string
     "start": 1.5, "end": 4.0,       optional, seconds: the question is about this segment
     "video_path": "sub/c7.webm"}    optional: the file, relative to the video root (or
                                     absolute); default <video root>/<video>.<ext> with the
                                     first existing of mp4, mkv, webm, avi, mov, m4v

The same ``video`` may appear in many lines and splits; it is featurized once. Lines that
give one ``video`` two different ``video_path`` values are an error.

Answer vocabulary: ``answer_vocab.txt`` when present, else every distinct open-ended
answer of the train split, most frequent first (ties: first appearance); ``[]`` when there
is no train split or all its questions are multiple choice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import field, parse_index, read_jsonl, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import VideoFinder, video_dirs
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, read_answer_list

NAME = "jsonl"
CANONICAL = ("train", "val", "test")
VOCAB_FILE = "answer_vocab.txt"
EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v")
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
EXPECTED = "<split>.jsonl files (one JSON object per question)"


def _answer(where: str, row: dict[str, Any], candidates: tuple[str, ...]) -> int | str | None:
    answer = row.get("answer")
    if answer is None or not candidates:
        if answer is not None and not isinstance(answer, str):
            raise UsageError(f"{NAME}: {where}: open-ended answer {answer!r} is not a string")
        return answer
    if isinstance(answer, str) and answer in candidates:
        return candidates.index(answer)
    return parse_index(NAME, where, answer, len(candidates))


def _seconds(where: str, row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"{NAME}: {where}: {key} {value!r} is not a number of seconds >= 0")
    return float(value)


def parse_line(where: str, row: dict[str, Any], split: str) -> QuestionRecord:
    """One jsonl object -> :class:`QuestionRecord` (schema in the module docstring)."""
    raw = row.get("candidates") or []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise UsageError(f"{NAME}: {where}: candidates must be a list of strings")
    candidates = tuple(raw)
    qtype = row.get("qtype")
    if qtype is not None and not isinstance(qtype, str):
        raise UsageError(f"{NAME}: {where}: qtype {qtype!r} is not a string")
    start, end = _seconds(where, row, "start"), _seconds(where, row, "end")
    if start is not None and end is not None and end < start:
        raise UsageError(f"{NAME}: {where}: end {end} is before start {start}")
    return QuestionRecord(
        qid=str(field(NAME, where, row, "qid", (str, int))),
        video_id=str(field(NAME, where, row, "video", (str, int))),
        question=field(NAME, where, row, "question"),
        candidates=candidates,
        answer=_answer(where, row, candidates),
        qtype=qtype,
        split=split,
        start=start,
        end=end,
    )


def _split_order(name: str) -> tuple[int, str]:
    return (CANONICAL.index(name) if name in CANONICAL else len(CANONICAL), name)


@register_dataset(NAME)
class JsonlDataset:
    """A lab's own questions in ``<split>.jsonl`` files (schema in the module docstring)."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        found = [p for p in self.data_root.glob("*.jsonl") if p.is_file()]
        if not found:
            raise UsageError(f"{NAME}: --data-root {self.data_root} holds no {EXPECTED}")
        bad = sorted(p.name for p in found if not SPLIT_NAME.fullmatch(p.stem))
        if bad:
            raise UsageError(
                f"{NAME}: {self.data_root / bad[0]}: a split name must be letters, digits, "
                "'_', '-' or '.', starting with a letter or digit"
            )
        self._files = {p.stem: p for p in sorted(found, key=lambda p: _split_order(p.stem))}
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}
        self._paths: dict[str, tuple[str, str]] = {}  # video -> (video_path, where)

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            path = self._files[split]
            records = []
            for n, row in read_jsonl(NAME, path):
                where = f"{path}:{n}"
                record = parse_line(where, row, split)
                self._note_path(where, record.video_id, row.get("video_path"))
                records.append(record)
            unique_qids(NAME, path, records)
            self._questions[split] = records
        return list(self._questions[split])

    def _note_path(self, where: str, video: str, video_path: Any) -> None:
        if video_path is None:
            return
        if not isinstance(video_path, str) or not video_path:
            raise UsageError(f"{NAME}: {where}: video_path {video_path!r} is not a path")
        known = self._paths.setdefault(video, (video_path, where))
        if known[0] != video_path:
            raise UsageError(
                f"{NAME}: {where}: video {video!r} has video_path {video_path!r} here but "
                f"{known[0]!r} at {known[1]}"
            )

    def video_path(self, video_id: str) -> Path:
        """The line's ``video_path`` (relative to the video root), else ``<video>.<ext>``."""
        if video_id in self._paths:
            given = Path(self._paths[video_id][0]).expanduser()
            return given if given.is_absolute() else self.video_root / given
        return self._finder.find([f"{video_id}.{e}" for e in EXTENSIONS])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        questions = [q for s in splits for q in self.questions(s)]
        if split is not None:  # paths given in other splits' files count too
            for other in self.splits():
                self.questions(other)
        return videos_of(questions, self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """``answer_vocab.txt`` if present, else every distinct open-ended train answer."""
        shipped = self.data_root / VOCAB_FILE
        if shipped.is_file():
            return read_answer_list(NAME, shipped)
        if "train" not in self.splits():
            return []
        open_ended = (
            q for q in self.questions("train") if not q.candidates and q.answer is not None
        )
        return frequent_answers(str(q.answer) for q in open_ended)
