"""The ``vlep`` dataset: VLEP, video-and-language future event prediction (2-way choice).

Expected layout under ``--data-root``::

    vlep_train_release.jsonl, vlep_dev_release.jsonl, vlep_test_release.jsonl
                                  whichever exist; splits train, val (= dev), test
    videos/<vid_name>.mp4         the clips (or under the ``video_root`` option)

Each line: ``{"example_id", "vid_name", "ts": [st, ed], "events": [e0, e1], "answer",
"split"}`` (test has no ``answer``). A line becomes a :class:`QuestionRecord` with
``qid = str(example_id)``, ``video_id = vid_name``, the two events as candidates, the
answer index, and the premise event ``ts`` as ``start`` / ``end`` seconds (the clip is
featurized whole; the premise is selected by presentation time when reading, and what
follows it is what the events predict). VLEP has no question: ``question`` is ``""``.
``vlep_dev_archive.jsonl`` (premise text and rationales) is not read.

``vid_name``: TV clips are TVQA-style names with an ``_ep`` suffix
(``friends_s03e09_seg02_clip_07_ep``); YouTube clips are
``{youtube_id}_subs_{idx}_{HH:MM:SS start}_{end}_ep``. Both are distributed as 3 fps frames
on request; pack them into ``videos/<vid_name>.mp4`` (``.mkv`` / ``.webm`` accepted).
No question types (``qtype`` None); official metric: accuracy (``standalone_eval/eval.py``,
VALUE ``evaluate_vlep.py``).
"""

from __future__ import annotations

from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import (
    field,
    parse_index,
    parse_span,
    read_jsonl,
    split_files,
    unique_qids,
)
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import VideoFinder, video_dirs
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

NAME = "vlep"
FILES = {
    "train": ["vlep_train_release.jsonl"],
    "val": ["vlep_dev_release.jsonl"],
    "test": ["vlep_test_release.jsonl"],
}
EXTENSIONS = ("mp4", "mkv", "webm")
N_EVENTS = 2
EXPECTED = "vlep_{train,dev,test}_release.jsonl (VLEP)"


def read_vlep(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one VLEP jsonl into records, in file order."""
    records = []
    for n, row in read_jsonl(NAME, path):
        where = f"{path}:{n}"
        events = field(NAME, where, row, "events", list)
        if len(events) != N_EVENTS or not all(isinstance(e, str) for e in events):
            raise UsageError(f"{NAME}: {where}: 'events' must be two strings")
        answer = row.get("answer")
        start, end = parse_span(NAME, where, row.get("ts"))
        records.append(
            QuestionRecord(
                qid=str(field(NAME, where, row, "example_id", (int, str))),
                video_id=field(NAME, where, row, "vid_name"),
                question="",
                candidates=tuple(events),
                answer=None if answer is None else parse_index(NAME, where, answer, N_EVENTS),
                qtype=None,
                split=split,
                start=start,
                end=end,
            )
        )
    unique_qids(NAME, path, (r.qid for r in records))
    return records


@register_dataset(NAME)
class Vlep:
    """VLEP over the release jsonl files; splits are the files present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(NAME, self.data_root, FILES, EXPECTED)
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_vlep(self._files[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``videos/<vid_name>.{mp4,mkv,webm}``, first present."""
        return self._finder.find([f"{video_id}.{e}" for e in EXTENSIONS])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Two-way choice: no answer vocabulary."""
        return []
