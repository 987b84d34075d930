"""The ``how2qa`` dataset: How2QA (VALUE release), 4-way multiple choice on clip segments.

Expected layout under ``--data-root``::

    how2qa_train_release.jsonl, how2qa_val_release.jsonl, how2qa_test_public_release.jsonl
                                   whichever exist; splits train, val, test
    how2_vid_mapping.json          optional: {"25848": "XdnZ13OdJck_60_120", ...}
    videos/<name>.mp4              the ~60 s clips (or under the ``video_root`` option)

Each line: ``{"vid_name", "ts": "st-ed", "qid", "q", "a0".."a3", "answer_idx"}`` (the
test file has no ``answer_idx``). A line becomes a :class:`QuestionRecord` with
``qid = str(qid)``, ``video_id = vid_name`` (VALUE's id, defined for every question),
candidates ``a0..a3`` and the segment ``ts`` as ``start`` / ``end`` seconds within the
clip: the clip is featurized whole and the segment is selected by presentation time when
reading.

Video files: VALUE maps most ``vid_name`` to the YouTube clip ``<youtube id>_<start>_<end>``
(``how2_vid_mapping.json``; 2,939 of the 3,115 val questions map, the rest are unmappable
per VALUE). The clip is looked for as ``<mapped name>.{mp4,webm,mkv}``, then as
``<vid_name>.{mp4,webm,mkv}`` (clips obtained from the authors keep VALUE's id).
How2QA has no question types (``qtype`` None); official metric: accuracy
(VALUE ``evaluate_how2qa.py``, predictions ``{qid: index}``).
"""

from __future__ import annotations

from pathlib import Path

from vqacache.featurize.datasets.annotations import (
    field,
    parse_index,
    parse_span,
    read_json,
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

NAME = "how2qa"
FILES = {
    "train": ["how2qa_train_release.jsonl"],
    "val": ["how2qa_val_release.jsonl"],
    "test": ["how2qa_test_public_release.jsonl"],
}
MAPPING_FILE = "how2_vid_mapping.json"
EXTENSIONS = ("mp4", "webm", "mkv")
N_CANDIDATES = 4
EXPECTED = "how2qa_{train,val,test_public}_release.jsonl (How2QA, VALUE)"


def read_how2qa(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one How2QA (VALUE) jsonl into records, in file order."""
    records = []
    for n, row in read_jsonl(NAME, path):
        where = f"{path}:{n}"
        candidates = tuple(field(NAME, where, row, f"a{i}") for i in range(N_CANDIDATES))
        answer = row.get("answer_idx")
        start, end = parse_span(NAME, where, row.get("ts"))
        records.append(
            QuestionRecord(
                qid=str(field(NAME, where, row, "qid", (int, str))),
                video_id=str(field(NAME, where, row, "vid_name", (int, str))),
                question=field(NAME, where, row, "q"),
                candidates=candidates,
                answer=None if answer is None else parse_index(NAME, where, answer, N_CANDIDATES),
                qtype=None,
                split=split,
                start=start,
                end=end,
            )
        )
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class How2QA:
    """How2QA over VALUE's jsonl files; splits are the files present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(NAME, self.data_root, FILES, EXPECTED)
        mapping = self.data_root / MAPPING_FILE
        self._map: dict[str, str] = {}
        if mapping.is_file():
            self._map = {str(k): str(v) for k, v in read_json(NAME, mapping, dict).items()}
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_how2qa(self._files[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``videos/<mapped name>.<ext>``, else ``videos/<vid_name>.<ext>``; first present."""
        stems = [self._map[video_id], video_id] if video_id in self._map else [video_id]
        return self._finder.find([f"{s}.{e}" for s in stems for e in EXTENSIONS])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Multiple choice: no answer vocabulary."""
        return []

    def unmapped_videos(self, split: str | None = None) -> list[str]:
        """Ids of ``split``'s videos that ``how2_vid_mapping.json`` does not map to YouTube."""
        return [v.video_id for v in self.videos(split) if v.video_id not in self._map]
