"""The ``activitynet_qa`` dataset: ActivityNet-QA, open-ended (MILVLG/activitynet-qa).

Expected layout under ``--data-root``::

    {train,val,test}_q.json     [{"video_name", "question", "question_id"}, ...]
    {train,val,test}_a.json     [{"answer", "type", "question_id"}, ...] (optional per split)
    videos/v_<video_name>.mp4   ActivityNet v1.3 files; .mkv and .webm, and names without
                                the ``v_`` prefix, are tried too (or the ``video_root`` option)

The question and answer files are joined on ``question_id`` (which is also the ``qid``,
e.g. ``v_TIEzvhv6xaI_2``); a split without its ``_a.json`` has unlabelled questions.
``video_id`` is the YouTube id in ``video_name``.

``qtype`` is the official ``type`` as a name: 0 ``motion``, 1 ``spatial``, 2 ``temporal``
and the six "free" types 3-8 as ``free/yes_no``, ``free/color``, ``free/object``,
``free/location``, ``free/number``, ``free/other``. The official breakdown (``eval.py``)
reports Motion, Spatial, Temporal, Free and All; Free = every ``free/*`` question (compute
it as correct/count over types 3-8: the script's own Free aggregate is wrong).

Answer vocabulary (just-ask's convention): train answers seen at least ``min_count`` = 2
times, most frequent first (1,654 answers); ties broken by first appearance.
Official metric: exact-match accuracy per type and overall (the paper's WUPS is not in
the official script).
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
from vqacache.featurize.datasets.vocab import frequent_answers, require_train

NAME = "activitynet_qa"
SPLITS = ("train", "val", "test")
QTYPES = (
    "motion", "spatial", "temporal",
    "free/yes_no", "free/color", "free/object", "free/location", "free/number", "free/other",
)  # fmt: skip
"""``qtype`` by the official integer ``type`` (its index)."""
EXTENSIONS = ("mp4", "mkv", "webm")
MIN_COUNT = 2
EXPECTED = "{train,val,test}_q.json (ActivityNet-QA)"


def _answers(path: Path) -> dict[str, tuple[str, int]]:
    """``{question_id: (answer, type)}`` from one ``*_a.json``."""
    out = {}
    for i, item in enumerate(read_json(NAME, path, list)):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        qtype = field(NAME, where, item, "type", int)
        if not 0 <= qtype < len(QTYPES):
            raise UsageError(f"{NAME}: {where}: type {qtype} is outside 0-{len(QTYPES) - 1}")
        out[field(NAME, where, item, "question_id")] = (field(NAME, where, item, "answer"), qtype)
    return out


def read_activitynet(q_path: Path, a_path: Path | None, split: str) -> list[QuestionRecord]:
    """Join one ``*_q.json`` with its ``*_a.json`` (if any) into records, in question order."""
    answers = _answers(a_path) if a_path is not None else {}
    records = []
    for i, item in enumerate(read_json(NAME, q_path, list)):
        where = f"{q_path}: item {i}"
        if not isinstance(item, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        qid = field(NAME, where, item, "question_id")
        if a_path is not None and qid not in answers:
            raise UsageError(f"{NAME}: {where}: question {qid} has no answer in {a_path.name}")
        answer, qtype = answers.get(qid, (None, None))
        records.append(
            QuestionRecord(
                qid=qid,
                video_id=field(NAME, where, item, "video_name"),
                question=field(NAME, where, item, "question"),
                candidates=(),
                answer=answer,
                qtype=QTYPES[qtype] if qtype is not None else None,
                split=split,
            )
        )
    unique_qids(NAME, q_path, records)
    return records


@register_dataset(NAME)
class ActivityNetQA:
    """ActivityNet-QA over the ``*_q.json`` / ``*_a.json`` pairs; splits are those present."""

    name = NAME

    def __init__(
        self, data_root: Path | None, *, video_root: Path | None = None, min_count: int = MIN_COUNT
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(
            NAME, self.data_root, {s: [f"{s}_q.json"] for s in SPLITS}, EXPECTED
        )
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        if min_count < 1:
            raise UsageError(f"{NAME}: min_count must be at least 1, got {min_count}")
        self.min_count = min_count
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            a_path = self.data_root / f"{split}_a.json"
            self._questions[split] = read_activitynet(
                self._files[split], a_path if a_path.is_file() else None, split
            )
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``v_<id>`` or ``<id>`` + .mp4/.mkv/.webm, first present; else ``v_<id>.mp4``."""
        names = [f"{stem}.{ext}" for stem in (f"v_{video_id}", video_id) for ext in EXTENSIONS]
        return self._finder.find(names)

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Train answers seen at least ``min_count`` times, most frequent first."""
        require_train(NAME, self.splits(), f"train answers seen at least {self.min_count} times")
        answers = (str(q.answer) for q in self.questions("train") if q.answer is not None)
        return frequent_answers(answers, min_count=self.min_count)
