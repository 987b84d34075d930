"""The ``msrvtt_qa`` dataset: MSRVTT-QA, open-ended (xudejing release, or doc-doc's CSV copy).

Expected layout under ``--data-root``, per split whichever exists (the JSON wins)::

    {train,val,test}_qa.json     the original release: a list of {"question", "answer",
                                 "category_id", "video_id", "id"}
    {train,val,test}.csv         doc-doc/HQGA's reformat: video,question,answer,qid,type
                                 (video = video_id, qid = id, type = category_id)
    ans_word.json                doc-doc's answer list, the top 4,000 train answers (optional)
    videos/video<N>.mp4          the clips; MSR-VTT's own TrainValVideo/ and TestVideo/
                                 folders are searched too (or the ``video_root`` option)

Only the CSV copy of val and test is public (no public copy of the original JSON was
found); both shapes give identical records: ``qid = str(id)``, ``video_id = f"video{N}"``
(MSR-VTT's file stem), open-ended answer, and ``qtype`` = the question's first word (what
/ who / how / when / where), the official breakdown; ``color_qtype=True`` applies just-ask's
``color`` rule. ``category_id`` is MSR-VTT's *video* category, not a question type, and is
not kept.

Answer vocabulary: classification over the most frequent train answers; out-of-vocabulary
test answers count as wrong. The original release kept 1,000, HCRN, just-ask and doc-doc's
``ans_word.json`` keep 4,000. :meth:`MsrvttQA.answer_vocab` returns ``ans_word.json`` when
present, otherwise the top ``vocab_size`` (default 4,000; 1,000 reproduces the original
release) train answers, ties broken by first appearance; passing ``vocab_size`` always
recomputes from train. Official metric: top-1 accuracy overall and per question word.
"""

from __future__ import annotations

from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import read_table, split_files, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.msvd_qa import read_qa_json
from vqacache.featurize.datasets.paths import VideoFinder, video_dirs
from vqacache.featurize.datasets.qtypes import wh_qtype
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, read_answer_list, require_train

NAME = "msrvtt_qa"
SPLITS = ("train", "val", "test")
CSV_COLUMNS = ("video", "question", "answer", "qid")
ANSWER_LIST = "ans_word.json"
VIDEO_DIRS = ("videos", "TrainValVideo", "TestVideo")
DEFAULT_VOCAB = 4000
EXPECTED = "{train,val,test}_qa.json or {train,val,test}.csv (MSRVTT-QA)"


def read_docdoc_csv(path: Path, split: str, *, color_qtype: bool = False) -> list[QuestionRecord]:
    """Parse doc-doc's MSRVTT-QA CSV (``video,question,answer,qid,type``) into records."""
    records = [
        QuestionRecord(
            qid=row["qid"],
            video_id=f"video{row['video']}",
            question=row["question"],
            candidates=(),
            answer=row["answer"],
            qtype=wh_qtype(row["question"], color=color_qtype),
            split=split,
        )
        for _, row in read_table(
            NAME, path, CSV_COLUMNS, header_hint="video,question,answer,qid,type"
        )
    ]
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class MsrvttQA:
    """MSRVTT-QA over the original JSON or doc-doc's CSV, per split; splits are those present."""

    name = NAME

    def __init__(
        self,
        data_root: Path | None,
        *,
        video_root: Path | None = None,
        vocab_size: int | None = None,
        color_qtype: bool = False,
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        candidates = {s: [f"{s}_qa.json", f"{s}.csv"] for s in SPLITS}
        self._files = split_files(NAME, self.data_root, candidates, EXPECTED)
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, VIDEO_DIRS))
        self.video_root = self._finder.root
        if vocab_size is not None and vocab_size < 1:
            raise UsageError(f"{NAME}: vocab_size must be at least 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.color_qtype = color_qtype
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            path = self._files[split]
            if path.suffix == ".json":
                records = read_qa_json(
                    path, split, dataset=NAME, video_prefix="video", color_qtype=self.color_qtype
                )
            else:
                records = read_docdoc_csv(path, split, color_qtype=self.color_qtype)
            self._questions[split] = records
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``<dir>/<video_id>.mp4`` in the first of the video folders that has it."""
        return self._finder.find([f"{video_id}.mp4"])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """``ans_word.json`` if shipped (and no ``vocab_size``), else the top train answers."""
        shipped = self.data_root / ANSWER_LIST
        if self.vocab_size is None and shipped.is_file():
            return read_answer_list(NAME, shipped)
        top = self.vocab_size or DEFAULT_VOCAB
        require_train(NAME, self.splits(), f"top-{top} train answers")
        return frequent_answers((str(q.answer) for q in self.questions("train")), top=top)
