"""Typed records shared by every dataset adapter, and the adapter interface itself.

An adapter turns a benchmark's annotation files into two flat lists: the videos to featurize
(:class:`VideoRecord`) and the questions asked about them (:class:`QuestionRecord`). Every
benchmark maps onto these same two records, so the featurizer and the heads never see a
benchmark-specific format.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class VideoRecord:
    """One video to featurize: a file, or a folder of numbered frames.

    ``video_id`` is the key in the feature store. It may contain ``/`` (the ``folder``
    dataset uses the relative path without extension); ``path`` is absolute. For a folder
    of frames (TVQA, VLEP, EgoTaskQA), ``path`` is the folder and ``frame_rate`` the rate
    its frames were taken at (frames per second); it is None for a video file.
    """

    video_id: str
    path: Path
    frame_rate: Fraction | None = None

    def exists(self) -> bool:
        """The file is there (a video), or the folder is (frames)."""
        return self.path.is_dir() if self.frame_rate is not None else self.path.is_file()


@dataclass(frozen=True)
class QuestionRecord:
    """One question about one video (or a segment of it).

    ``qid`` is unique within the dataset and is the key used in prediction files (NExT-QA:
    ``f"{video}_{qid}"``). For multiple choice, ``candidates`` holds the options and
    ``answer`` is an index into them; for open-ended questions ``candidates`` is ``()`` and
    ``answer`` is the answer text. ``answer`` is ``None`` for unlabelled (test) questions.
    ``start``/``end`` (seconds) restrict the question to a segment; ``None`` = whole video.
    """

    qid: str
    video_id: str
    question: str
    candidates: tuple[str, ...]
    answer: int | str | None
    qtype: str | None
    split: str
    start: float | None = None
    end: float | None = None


@runtime_checkable
class VideoQADataset(Protocol):
    """What the pipeline needs from a dataset adapter.

    ``videos()`` never raises for absent files; call
    :func:`vqacache.featurize.datasets.check_videos` to turn absent files into one error.

    Optional member ``answer_vocab() -> list[str]``: the benchmark's answer vocabulary for
    open-ended questions, built from the training answers as the benchmark's convention
    says (each adapter documents its convention); multiple-choice adapters return ``[]``.
    It is not part of the structural check, so adapters without it still satisfy this
    protocol; read it through :func:`answer_vocab_of`, which gives ``[]`` for them.
    """

    name: str
    data_root: Path

    def splits(self) -> tuple[str, ...]:
        """Splits whose annotation files exist on disk, in canonical order."""
        ...

    def questions(self, split: str) -> list[QuestionRecord]:
        """Questions of ``split`` in file order; unknown split -> ``UsageError``."""
        ...

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        """Unique videos of ``split`` (``None`` = all splits), sorted by ``video_id``."""
        ...

    def missing_videos(self, split: str | None = None) -> list[str]:
        """Ids (sorted) of the videos of ``split`` that do not exist (:meth:`VideoRecord.exists`)."""
        ...


def answer_vocab_of(dataset: VideoQADataset) -> list[str]:
    """``dataset.answer_vocab()`` if the adapter has it (open-ended benchmarks), else ``[]``."""
    method = getattr(dataset, "answer_vocab", None)
    return list(method()) if callable(method) else []
