"""The ``nextgqa`` dataset: NExT-GQA (doc-doc/NExT-GQA), NExT-QA multiple choice + grounding.

Expected layout under ``--data-root``::

    train.csv, val.csv, test.csv    whichever exist
    gsub_{val,test}.json            optional: the grounding spans per question
    map_vid_vidorID.json            optional (NExT-QA's map): {"2909445186": "0101/2909445186"}
    NExTVideo/<map[video]>.mp4      the videos; flat <video>.mp4 without a map (or
                                    under the ``video_root`` option)

The CSV header is NExT-QA's with ``video_id`` first and the answer as *text*:
``video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4``; the answer
index is that of the candidate equal to it. Records are those of ``nextqa``: ``qid =
f"{video_id}_{qid}"``, candidates ``a0..a4``, ``qtype`` the type code (val/test hold no
descriptive questions). NExT-GQA's grounding labels (``gsub_<split>.json``: ``{video:
{"location": {qid: [[st, en], ...]}}}``) are targets, not the question's segment, so they
are not ``start`` / ``end``: :meth:`NextGQA.grounding` returns them by ``qid``. Official
metrics: NExT-QA accuracy plus grounding mIoP / mIoU and IoP@0.5 (``eval_ground.py``).
"""

from __future__ import annotations

from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import read_json, read_table, split_files, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.nextqa import CANDIDATE_COLUMNS, MAP_FILE, VIDEO_DIR
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

NAME = "nextgqa"
SPLITS = ("train", "val", "test")
COLUMNS = ("video_id", "question", "answer", "qid", "type", *CANDIDATE_COLUMNS)
HEADER = "video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4"
EXPECTED = "train.csv/val.csv/test.csv (NExT-GQA)"


def read_nextgqa_csv(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one NExT-GQA CSV (text answers) into multiple-choice records, in file order."""
    records = []
    for n, row in read_table(NAME, path, COLUMNS, header_hint=HEADER):
        candidates = tuple(row[c] for c in CANDIDATE_COLUMNS)
        if row["answer"] not in candidates:
            raise UsageError(f"{NAME}: {path.name}:{n}: answer {row['answer']!r} is none of a0-a4")
        records.append(
            QuestionRecord(
                qid=f"{row['video_id']}_{row['qid']}",
                video_id=row["video_id"],
                question=row["question"],
                candidates=candidates,
                answer=candidates.index(row["answer"]),
                qtype=row["type"] or None,
                split=split,
            )
        )
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class NextGQA:
    """NExT-GQA over its CSVs; splits are the CSVs present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._csvs = split_files(NAME, self.data_root, {s: [f"{s}.csv"] for s in SPLITS}, EXPECTED)
        map_path = self.data_root / MAP_FILE
        self._map: dict[str, str] = {}
        if map_path.is_file():
            self._map = {str(k): str(v) for k, v in read_json(NAME, map_path, dict).items()}
        self.video_root = (
            Path(video_root).expanduser().resolve() if video_root else self.data_root / VIDEO_DIR
        )
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._csvs)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_nextgqa_csv(self._csvs[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``<video_root>/<map[video_id]>.mp4``, or ``<video_root>/<video_id>.mp4`` unmapped."""
        return self.video_root / f"{self._map.get(video_id, video_id)}.mp4"

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Multiple choice: no answer vocabulary."""
        return []

    def grounding(self, split: str) -> dict[str, list[tuple[float, float]]]:
        """``{qid: [(start, end), ...]}`` seconds from ``gsub_<split>.json`` ({} if absent)."""
        require_split(NAME, split, self.splits())
        path = self.data_root / f"gsub_{split}.json"
        if not path.is_file():
            return {}
        spans: dict[str, list[tuple[float, float]]] = {}
        for video, entry in read_json(NAME, path, dict).items():
            location = entry.get("location") if isinstance(entry, dict) else None
            if not isinstance(location, dict):
                raise UsageError(f"{NAME}: {path}: video {video} has no 'location' mapping")
            for qid, pairs in location.items():
                try:
                    spans[f"{video}_{qid}"] = [(float(s), float(e)) for s, e in pairs]
                except (TypeError, ValueError):
                    raise UsageError(
                        f"{NAME}: {path}: video {video} question {qid}: spans {pairs!r} "
                        "are not [[st, en], ...]"
                    ) from None
        return spans
