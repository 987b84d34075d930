"""The ``nextqa_oe`` dataset: NExT-QA open-ended, a.k.a. NExT-OE (doc-doc/NExT-OE).

Expected layout under ``--data-root``::

    train.csv, val.csv, test.csv        whichever exist
    add_reference_answer_test.json      optional: {video: {qid: extra reference answer}}
    map_vid_vidorID.json                optional: {"2909445186": "0101/2909445186", ...}
    NExTVideo/<map[video]>.mp4          the videos (or under the ``video_root`` option)

CSV header: ``video,frame_count,width,height,question,answer,qid,type`` with ``answer``
free text. A row becomes an open-ended :class:`QuestionRecord` (no candidates) with
``qid = f"{video}_{qid}"`` (``#2`` appended to the three repeated pairs of ``train.csv``)
and ``qtype`` = the raw type code (CW, CH, TN, TP, TC, DC, DL, DO and DB, yes/no, which
only NExT-OE has).

NExT-OE's release has no ``map_vid_vidorID.json``; copy NExT-QA's (the same videos) into
the data root or pass ``map_file``. Without a map the videos are looked for flat, as
``<video_root>/<video>.mp4``.

Answer vocabulary: NExT-OE is scored by WUPS against free text (``eval_oe.py``), so it
defines no classification vocabulary; :meth:`NextOE.answer_vocab` gives every distinct
train answer, most frequent first, for heads that classify. The official metric is WUPS@0
and WUPS@0.9 per type and C/T/D group, taking the max over the answer and the extra test
reference (:meth:`NextOE.extra_references`); DB and DC use exact match.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import read_json, read_table, split_files, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.nextqa import MAP_FILE, VIDEO_DIR
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, require_train

NAME = "nextqa_oe"
SPLITS = ("train", "val", "test")
COLUMNS = ("video", "question", "answer", "qid", "type")
REFERENCE_FILE = "add_reference_answer_test.json"
EXPECTED = "train.csv/val.csv/test.csv (NExT-OE)"


def read_nextoe_csv(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one NExT-OE CSV into open-ended question records, in file order.

    The released ``train.csv`` repeats three ``(video, qid)`` pairs for different
    questions; a repeat keeps its row under ``qid = f"{video}_{qid}#<n>"`` (n = 2, 3, ...)
    so that every question stays addressable. val and test have no repeats.
    """
    records = []
    seen: Counter[str] = Counter()
    header = "video,frame_count,width,height,question,answer,qid,type"
    for _, row in read_table(NAME, path, COLUMNS, header_hint=header):
        qid = f"{row['video']}_{row['qid']}"
        seen[qid] += 1
        records.append(
            QuestionRecord(
                qid=qid if seen[qid] == 1 else f"{qid}#{seen[qid]}",
                video_id=row["video"],
                question=row["question"],
                candidates=(),
                answer=row["answer"],
                qtype=row["type"] or None,
                split=split,
            )
        )
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class NextOE:
    """NExT-QA open-ended over the NExT-OE CSVs; splits are the CSVs present."""

    name = NAME

    def __init__(
        self,
        data_root: Path | None,
        *,
        video_root: Path | None = None,
        map_file: Path | None = None,
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._csvs = split_files(NAME, self.data_root, {s: [f"{s}.csv"] for s in SPLITS}, EXPECTED)
        map_path = Path(map_file).expanduser() if map_file else self.data_root / MAP_FILE
        if map_file and not map_path.is_file():
            raise UsageError(f"{NAME}: map_file {map_path} does not exist")
        self._map: dict[str, str] | None = None
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
            self._questions[split] = read_nextoe_csv(self._csvs[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``<video_root>/<map[video_id]>.mp4``, or ``<video_root>/<video_id>.mp4`` unmapped."""
        relative = self._map.get(video_id, video_id) if self._map is not None else video_id
        return self.video_root / f"{relative}.mp4"

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Every distinct train answer, most frequent first (ties: first appearance)."""
        require_train(NAME, self.splits(), "every distinct train answer")
        return frequent_answers(str(q.answer) for q in self.questions("train"))

    def extra_references(self) -> dict[str, str]:
        """``{qid: extra reference answer}`` from ``add_reference_answer_test.json``, or {}."""
        path = self.data_root / REFERENCE_FILE
        if not path.is_file():
            return {}
        data = read_json(NAME, path, dict)
        return {
            f"{video}_{qid}": str(answer)
            for video, answers in data.items()
            if isinstance(answers, dict)
            for qid, answer in answers.items()
        }
