"""The ``msvd_qa`` dataset: MSVD-QA, open-ended (xudejing/video-question-answering release).

Expected layout under ``--data-root``::

    train_qa.json, val_qa.json, test_qa.json   whichever exist
    youtube_mapping.txt                         "-4wsuPCjDBc_5_15 vid1" per line (optional)
    answer_set.txt                              the release's 1,000 answers (optional)
    YouTubeClips/<name>.avi                     the clips (or under the ``video_root`` option)

Each JSON file is a list of ``{"answer", "id", "question", "video_id"}``. A record becomes
an open-ended :class:`QuestionRecord` with ``qid = str(id)`` (unique over the three files),
``video_id = f"vid{video_id}"`` (the release's own name, the right column of the mapping)
and ``qtype`` = the question's first word (what / who / how / when / where), the official
breakdown; ``color_qtype=True`` applies just-ask's rule (``color`` if the question contains
"color"). The clip file is ``YouTubeClips/<mapping[vidN]>.avi``; without a mapping entry
(or when that file is absent) ``YouTubeClips/vidN.avi`` is also tried, the renamed layout
of the release's feature-extraction code.

Answer vocabulary: the original release keeps the 1,000 most frequent train answers
(``create_answerset``); train questions whose answer is outside it are dropped and an
out-of-vocabulary test answer counts as wrong. :meth:`MsvdQA.answer_vocab` returns
``answer_set.txt`` when it is in the data root (its order among equally frequent answers
is pandas' arbitrary one), otherwise the top ``vocab_size`` (default 1,000) train answers,
ties broken by first appearance. Passing ``vocab_size`` always recomputes from train.
Official metric: top-1 accuracy (exact match), overall and per question word.
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
from vqacache.featurize.datasets.qtypes import wh_qtype
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, read_answer_list, require_train

NAME = "msvd_qa"
SPLITS = ("train", "val", "test")
MAPPING_FILE = "youtube_mapping.txt"
ANSWER_SET = "answer_set.txt"
VIDEO_DIR = "YouTubeClips"
DEFAULT_VOCAB = 1000
EXPECTED = "train_qa.json/val_qa.json/test_qa.json (MSVD-QA)"


def read_mapping(path: Path) -> dict[str, str]:
    """``youtube_mapping.txt`` as ``{"vid1": "-4wsuPCjDBc_5_15", ...}``."""
    mapping: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{NAME}: cannot read {path} ({err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UsageError(f"{NAME}: {path}:{n}: expected '<clip name> vid<N>', got {line!r}")
        mapping[parts[1]] = parts[0]
    return mapping


def read_qa_json(
    path: Path,
    split: str,
    *,
    dataset: str = NAME,
    video_prefix: str = "vid",
    color_qtype: bool = False,
) -> list[QuestionRecord]:
    """Parse one ``*_qa.json`` of the xudejing releases (MSVD-QA, MSRVTT-QA) into records.

    A list of ``{"answer", "id", "question", "video_id", ...}``; the video id becomes
    ``f"{video_prefix}{video_id}"`` (``vid1`` for MSVD, ``video6513`` for MSR-VTT).
    """
    records = []
    for i, item in enumerate(read_json(dataset, path, list)):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise UsageError(f"{dataset}: {where} is not a JSON object")
        question = field(dataset, where, item, "question")
        records.append(
            QuestionRecord(
                qid=str(field(dataset, where, item, "id", (int, str))),
                video_id=f"{video_prefix}{field(dataset, where, item, 'video_id', (int, str))}",
                question=question,
                candidates=(),
                answer=field(dataset, where, item, "answer"),
                qtype=wh_qtype(question, color=color_qtype),
                split=split,
            )
        )
    unique_qids(dataset, path, records)
    return records


@register_dataset(NAME)
class MsvdQA:
    """MSVD-QA over the original JSON files; splits are the files present."""

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
        self._files = split_files(
            NAME, self.data_root, {s: [f"{s}_qa.json"] for s in SPLITS}, EXPECTED
        )
        mapping = self.data_root / MAPPING_FILE
        self._map = read_mapping(mapping) if mapping.is_file() else {}
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, (VIDEO_DIR,)))
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
            self._questions[split] = read_qa_json(
                self._files[split], split, color_qtype=self.color_qtype
            )
        return list(self._questions[split])

    def video_path(self, video_id: str) -> Path:
        """``YouTubeClips/<mapped name>.avi`` if present, else ``YouTubeClips/<vidN>.avi``."""
        stems = [self._map[video_id], video_id] if video_id in self._map else [video_id]
        return self._finder.find([f"{s}.avi" for s in stems])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """``answer_set.txt`` if shipped (and no ``vocab_size``), else the top train answers."""
        shipped = self.data_root / ANSWER_SET
        if self.vocab_size is None and shipped.is_file():
            return read_answer_list(NAME, shipped)
        top = self.vocab_size or DEFAULT_VOCAB
        require_train(NAME, self.splits(), f"top-{top} train answers")
        return frequent_answers((str(q.answer) for q in self.questions("train")), top=top)
