"""The ``nextqa`` dataset: NExT-QA multiple choice (doc-doc/NExT-QA).

Expected layout under ``--data-root``::

    train.csv, val.csv, test.csv    whichever exist (the official train.csv is often absent)
    map_vid_vidorID.json            {"2909445186": "0101/2909445186", ...}
    NExTVideo/<map[video]>.mp4      the videos (or under the ``video_root`` option)

CSV header: ``video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4``.
A question becomes a :class:`QuestionRecord` with ``qid = f"{video}_{qid}"`` (the key of
the official prediction files), ``answer`` = the int index into ``a0..a4``, and ``qtype`` =
the raw ``type`` code (CW, CH, TN, TC, TP, DC, DL, DO; the official evaluator folds TP
into TN, which is left to the evaluation). The video id is the ``video`` column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

SPLITS = ("train", "val", "test")
MAP_FILE = "map_vid_vidorID.json"
VIDEO_DIR = "NExTVideo"
CANDIDATE_COLUMNS = ("a0", "a1", "a2", "a3", "a4")
COLUMNS = ("video", "question", "answer", "qid", "type", *CANDIDATE_COLUMNS)
EXPECTED = f"train.csv/val.csv/test.csv and {MAP_FILE} (NExT-QA)"


def _load_map(path: Path) -> dict[str, str]:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UsageError(f"nextqa: {path} is not valid JSON ({err})") from None
    if not isinstance(mapping, dict):
        raise UsageError(f"nextqa: {path} must map video ids to 'folder/id' strings")
    return {str(k): str(v) for k, v in mapping.items()}


def _parse_row(raw: dict[str, str | None], split: str, where: str) -> QuestionRecord:
    short = [c for c in COLUMNS if raw.get(c) is None]
    if short:
        raise UsageError(f"nextqa: {where}: the row has no value for {', '.join(short)}")
    row = {c: str(raw[c]) for c in COLUMNS}
    candidates = tuple(row[c] for c in CANDIDATE_COLUMNS)
    try:
        answer = int(row["answer"])
    except ValueError:
        raise UsageError(f"nextqa: {where}: answer {row['answer']!r} is not an index 0-4") from None
    if not 0 <= answer < len(candidates):
        raise UsageError(f"nextqa: {where}: answer index {answer} is outside 0-4")
    return QuestionRecord(
        qid=f"{row['video']}_{row['qid']}",
        video_id=row["video"],
        question=row["question"],
        candidates=candidates,
        answer=answer,
        qtype=row["type"] or None,
        split=split,
    )


def read_nextqa_csv(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one NExT-QA MC CSV into question records, in file order."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
        reader = csv.DictReader(f)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if absent:
            raise UsageError(
                f"nextqa: {path} lacks column(s) {', '.join(absent)}; expected the NExT-QA "
                "multiple-choice header video,frame_count,width,height,question,answer,qid,"
                "type,a0..a4"
            )
        records = [_parse_row(row, split, f"{path.name}:{n}") for n, row in enumerate(reader, 2)]
    seen: set[str] = set()
    for r in records:
        if r.qid in seen:
            raise UsageError(f"nextqa: {path} has question {r.qid} twice")
        seen.add(r.qid)
    return records


@register_dataset("nextqa")
class NextQA:
    """NExT-QA multiple choice over the official CSVs; splits are the CSVs present."""

    name = "nextqa"

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(self.name, data_root, EXPECTED)
        self._csvs = {s: p for s in SPLITS if (p := self.data_root / f"{s}.csv").is_file()}
        map_path = self.data_root / MAP_FILE
        absent = [] if self._csvs else ["train.csv/val.csv/test.csv"]
        absent += [] if map_path.is_file() else [MAP_FILE]
        if absent:
            raise UsageError(
                f"nextqa: --data-root {self.data_root} lacks {' and '.join(absent)} "
                "(NExT-QA annotation files)"
            )
        self._map = _load_map(map_path)
        self.video_root = (
            Path(video_root).expanduser().resolve() if video_root else self.data_root / VIDEO_DIR
        )
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._csvs)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(self.name, split, self.splits())
        if split not in self._questions:
            records = read_nextqa_csv(self._csvs[split], split)
            unmapped = sorted({r.video_id for r in records} - set(self._map))
            if unmapped:
                raise UsageError(
                    f"nextqa: {len(unmapped)} video(s) of {split}.csv are not in {MAP_FILE} "
                    f"(first: {', '.join(unmapped[:3])}); is it the NExT-QA map?"
                )
            self._questions[split] = records
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``<video_root>/<map[video_id]>.mp4``."""
        return self.video_root / f"{self._map[video_id]}.mp4"

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Multiple choice: no answer vocabulary."""
        return []
