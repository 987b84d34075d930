"""The ``egotaskqa`` dataset: EgoTaskQA (Buzz-Beater/EgoTaskQA), open-ended, on LEMMA videos.

No EgoTaskQA file is public outside Google Drive; this adapter follows the schema of the
benchmark's own code (``baselines/preprocess``, ``baselines/dataset``), as FORMATS.md
records it. Expected layout under ``--data-root``::

    direct/{train,val,test}_qas.json     the "direct" split (default ``split_type``)
    indirect/{train,val,test}_qas.json   the "indirect" split (``split_type="indirect"``)
    {train,val,test}_qas.json            accepted directly in the data root as well
    videos/<LEMMA video>/fpv<1|2>.mp4    one video per recording and first-person view
                                         (or under the ``video_root`` option), or else
    frames/<LEMMA video>/fpv<1|2>/img_%05d.jpg   LEMMA's frames (or under ``frames_root``)

Each file is a JSON list of ``{"question", "answer", "interval", "type", "category",
"semantic", "structural", "reference", "program", "video_id", "question_id",
"reasoning_type"}``. ``interval`` is ``"<LEMMA video>|P<n>|<start>|<end>"``: view ``P1`` /
``P2`` is the ``fpv1`` / ``fpv2`` camera and ``[start, end)`` are 0-based frame indices
(frame k is the file ``img_<k+1:05d>.jpg``).

Records: open-ended, ``qid = str(question_id)`` (the id ``qas2tagged_qas.py`` assigns; the
item's index in the file when absent), ``video_id = f"{video}/fpv{n}"``: features are per
recording and view, the question's interval is its segment, ``start = start_frame /
frame_rate`` and ``end = end_frame / frame_rate`` seconds (option ``frame_rate``, ``25`` or
``30000/1001``; default 25). LEMMA is distributed as JPEG frames, read directly as a folder
of frames (see :mod:`vqacache.featurize.decode.frame_folder`) at the same ``frame_rate``: file
``img_<n>.jpg`` is at ``(n - first) / frame_rate`` s, ``first`` being the folder's lowest
number. LEMMA numbers from ``img_00001.jpg``, so interval frame k (file ``k + 1``) is at
k / R s, the interval's own time: the two agree for every folder that starts at
``img_00001.jpg`` (one that starts later is shifted by as many frames). A video file
``fpv<n>.mp4`` is preferred when present: pack it with ``ffmpeg -framerate R -i
img_%05d.jpg`` (R = ``frame_rate``) so that frame k shows at k / R s there too.

``qtype`` is ``reasoning_type``, the ``$``-joined tags ``type + category + [semantic,
structural, reference]`` (rebuilt from those fields when absent); the official metric is
accuracy per tag (``ReasongingTypeAccCalculator``) and overall, so split it on ``$``.

Answer vocabulary (``preprocess_vocab.py``): ``<UNK0>``, ``<UNK1>``, then the 4,000 most
frequent train answers lower-cased (ties: first appearance; a lower-cased repeat is kept
once). Val / test answers outside it count as ``<UNK1>``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import field, read_json, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import (
    FrameFolderFinder,
    VideoFinder,
    frames_dir,
    video_dirs,
    video_or_frames,
)
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.decode.frame_plan import parse_rate
from vqacache.featurize.datasets.vocab import frequent_answers, require_train

NAME = "egotaskqa"
SPLITS = ("train", "val", "test")
SPLIT_TYPES = ("direct", "indirect")
UNKNOWN = ("<UNK0>", "<UNK1>")
VOCAB_TOP = 4000
DEFAULT_FRAME_RATE = Fraction(25)
EXPECTED = "direct/ or indirect/ with {train,val,test}_qas.json (EgoTaskQA)"


def parse_interval(where: str, interval: str) -> tuple[str, int, int, int]:
    """``"<video>|P<n>|<start>|<end>"`` -> ``(video, view n, start frame, end frame)``."""
    parts = interval.split("|")
    try:
        video, view, start, end = parts
        n, first, last = int(view.removeprefix("P")), int(start), int(end)
    except ValueError:
        raise UsageError(
            f"{NAME}: {where}: interval {interval!r} is not '<video>|P<n>|<start>|<end>'"
        ) from None
    if not video or n < 1 or first < 0 or last < first:
        raise UsageError(f"{NAME}: {where}: interval {interval!r} has a bad view or frame range")
    return video, n, first, last


def reasoning_type(where: str, item: dict[str, Any]) -> str:
    """The item's ``reasoning_type``, or its ``$``-join rebuilt as ``split.py`` does."""
    if isinstance(item.get("reasoning_type"), str):
        return item["reasoning_type"]
    tags = list(field(NAME, where, item, "type", list)) + list(
        field(NAME, where, item, "category", list)
    )
    tags += [field(NAME, where, item, k) for k in ("semantic", "structural", "reference")]
    return "$".join(str(t) for t in tags)


def read_egotaskqa(path: Path, split: str, frame_rate: Fraction) -> list[QuestionRecord]:
    """Parse one ``<split>_qas.json`` into records, in file order."""
    records = []
    for i, item in enumerate(read_json(NAME, path, list)):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise UsageError(f"{NAME}: {where} is not a JSON object")
        video, view, first, last = parse_interval(where, field(NAME, where, item, "interval"))
        qid = item.get("question_id", i)
        records.append(
            QuestionRecord(
                qid=str(qid),
                video_id=f"{video}/fpv{view}",
                question=field(NAME, where, item, "question"),
                candidates=(),
                answer=item.get("answer"),
                qtype=reasoning_type(where, item),
                split=split,
                start=float(first / frame_rate),
                end=float(last / frame_rate),
            )
        )
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class EgoTaskQA:
    """EgoTaskQA over ``<split_type>/<split>_qas.json``; splits are the files present."""

    name = NAME

    def __init__(
        self,
        data_root: Path | None,
        *,
        split_type: str = "direct",
        video_root: Path | None = None,
        frames_root: Path | None = None,
        frame_rate: Fraction | float = DEFAULT_FRAME_RATE,
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        if split_type not in SPLIT_TYPES:
            raise UsageError(
                f"{NAME}: unknown split_type {split_type!r}; available: direct, indirect"
            )
        self.split_type = split_type
        self.frame_rate = parse_rate(frame_rate, f"{NAME}: frame_rate", "25 or 30000/1001")
        folder = self.data_root / split_type
        folders = [folder] if folder.is_dir() else [self.data_root]
        self._files = {
            s: p for s in SPLITS for f in folders if (p := f / f"{s}_qas.json").is_file()
        }
        if not self._files:
            raise UsageError(f"{NAME}: --data-root {self.data_root} holds none of {EXPECTED}")
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        self._frames = FrameFolderFinder(frames_dir(self.data_root, frames_root, "frames"), self.frame_rate)
        self.frames_root = self._frames.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_egotaskqa(self._files[split], split, self.frame_rate)
        return list(self._questions[split])

    def video_record(self, video_id: str) -> VideoRecord:
        """``videos/<LEMMA video>/fpv<n>.mp4`` for ``video_id = "<LEMMA video>/fpv<n>"``, else
        the frame folder ``frames/<LEMMA video>/fpv<n>/``."""
        return video_or_frames(video_id, self._finder, [f"{video_id}.mp4"], self._frames, [video_id])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_record)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """``<UNK0>``, ``<UNK1>``, then the top-4000 train answers, lower-cased."""
        require_train(NAME, self.splits(), "<UNK0>, <UNK1> and the top-4000 train answers")
        top = frequent_answers(
            (str(q.answer) for q in self.questions("train") if q.answer is not None), top=VOCAB_TOP
        )
        return list(dict.fromkeys([*UNKNOWN, *(a.lower() for a in top)]))
