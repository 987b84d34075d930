"""The ``clevrer`` dataset: CLEVRER, descriptive (open-ended) and multiple-choice questions.

Expected layout under ``--data-root``::

    train.json, validation.json, test.json     whichever exist; splits train, val, test
    valid-orig-small.json                       read as val when validation.json is absent
                                                (CLEVRER-Humans' re-keyed subset)
    video_train/video_00000-01000/video_00000.mp4 ...   the videos (or ``video_root``)

Each file is a list of ``{"scene_index", "video_filename", "questions": [...]}``, or (the
re-keyed copy) an object ``{scene_index: {"questions": [...]}}``. A question has
``question_id`` (per video), ``question``, ``question_type`` and either ``answer``
(descriptive, open-ended) or ``choices``: ``[{choice_id, choice, answer: "correct" |
"wrong"}]`` (explanatory, predictive, counterfactual). Test files have no answers.

Records: a descriptive question becomes one open-ended record, ``qid =
f"{scene}_{question_id}"``. A multiple-choice question may have any number of correct
choices (0-4), which no single answer index can hold, so it becomes one binary record per
choice, as CLEVRER scores it: ``qid = f"{scene}_{question_id}_{choice_id}"``, ``question =
f"{question} {choice}"``, answer ``"correct"`` or ``"wrong"``. Per-option accuracy is the
accuracy over these records; per-question accuracy groups them by ``qid`` without the last
``_<choice_id>`` (all options right). ``qtype`` is ``question_type`` (descriptive,
explanatory, predictive, counterfactual), the official breakdown.

``video_id`` is ``video_<scene:05d>``; its file is
``video_{train|validation|test}/video_<lo>-<lo+1000>/video_<scene:05d>.mp4`` by index range
(train 0-9,999, validation 10,000-14,999, test 15,000-19,999), or flat as
``video_<scene:05d>.mp4``.

Answer vocabulary: every distinct train answer of open-ended records (descriptive answers
and the option labels ``correct`` / ``wrong``), most frequent first, as baselines classify.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

NAME = "clevrer"
FILES = {
    "train": ["train.json"],
    "val": ["validation.json", "valid-orig-small.json"],
    "test": ["test.json"],
}
FOLDERS = ((10_000, "video_train"), (15_000, "video_validation"), (20_000, "video_test"))
"""Scene index upper bounds and the release folder holding those videos."""
LABELS = ("correct", "wrong")
EXPECTED = "train.json/validation.json/test.json (CLEVRER)"


def video_name(scene: int) -> str:
    """``video_<scene:05d>`` (CLEVRER's file stem; also the ``video_id``)."""
    return f"video_{scene:05d}"


def release_path(scene: int) -> str:
    """``video_train/video_04000-05000/video_04760.mp4`` for scene 4760."""
    folder = next((f for bound, f in FOLDERS if scene < bound), FOLDERS[-1][1])
    lo = scene // 1000 * 1000
    return f"{folder}/video_{lo:05d}-{lo + 1000:05d}/{video_name(scene)}.mp4"


def _scenes(path: Path) -> list[tuple[int, list[Any], str]]:
    """``(scene index, questions, where)`` of either file shape."""
    data = read_json(NAME, path, (list, dict))
    items = data.items() if isinstance(data, dict) else enumerate(data)
    out = []
    for key, entry in items:
        where = f"{path}: scene {key}"
        if not isinstance(entry, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        raw = entry.get("scene_index", key if isinstance(data, dict) else None)
        try:
            scene = int(raw)
        except (TypeError, ValueError):
            raise UsageError(f"{NAME}: {where}: scene index {raw!r} is not an integer") from None
        out.append((scene, field(NAME, where, entry, "questions", list), where))
    return out


def _records(scene: int, q: dict[str, Any], split: str, where: str) -> list[QuestionRecord]:
    qid = f"{scene}_{field(NAME, where, q, 'question_id', (int, str))}"
    question = field(NAME, where, q, "question")
    qtype = field(NAME, where, q, "question_type")
    common = {"video_id": video_name(scene), "candidates": (), "qtype": qtype, "split": split}
    if "choices" not in q:
        return [QuestionRecord(qid=qid, question=question, answer=q.get("answer"), **common)]
    records = []
    for c in field(NAME, where, q, "choices", list):
        if not isinstance(c, dict):
            raise UsageError(f"{NAME}: {where}: question {qid} has a choice that is not an object")
        label = c.get("answer")
        if label is not None and label not in LABELS:
            raise UsageError(f"{NAME}: {where}: choice answer {label!r} is not correct/wrong")
        records.append(
            QuestionRecord(
                qid=f"{qid}_{field(NAME, where, c, 'choice_id', (int, str))}",
                question=f"{question} {field(NAME, where, c, 'choice')}",
                answer=label,
                **common,
            )
        )
    return records


def read_clevrer(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one CLEVRER question file into records (MC questions: one per choice)."""
    records = []
    for scene, questions, where in _scenes(path):
        for q in questions:
            if not isinstance(q, dict):
                raise UsageError(f"{NAME}: {where}: a question is not a JSON object")
            records += _records(scene, q, split, where)
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class Clevrer:
    """CLEVRER over the release question files; splits are the files present."""

    name = NAME

    def __init__(self, data_root: Path | None, *, video_root: Path | None = None) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(NAME, self.data_root, FILES, EXPECTED)
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, (".",)))
        self.video_root = self._finder.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_clevrer(self._files[split], split)
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """The release layout (see the module docstring), else flat ``<video_id>.mp4``."""
        scene = int(video_id.removeprefix("video_"))
        return self._finder.find([release_path(scene), f"{video_id}.mp4"])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Every distinct train answer (descriptive answers, ``correct``, ``wrong``)."""
        require_train(NAME, self.splits(), "every distinct train answer")
        return frequent_answers(
            str(q.answer) for q in self.questions("train") if q.answer is not None
        )
