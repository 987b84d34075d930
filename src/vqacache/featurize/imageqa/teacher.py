"""What an image-QA teacher (SpARC's per-frame answer distribution) must provide.

A teacher scores, for one question and each of F frames of its video, a probability
distribution over the question's answers, ranked the way BLIP and ALBEF rank answers: the
log-likelihood of each answer's tokens under the answer decoder, given the frame and the
question, then a softmax over the answers.

* Multiple choice: the answers are the question's candidates; the result is (F, C).
* Open-ended: the answers are the dataset's answer vocabulary (V of them, thousands). Scoring
  all V per frame is too slow, so, as ALBEF's ``rank_answer`` with ``k_test``: one decoder
  step from the start token gives every answer's first-token probability at once, the top
  ``k`` answers by that probability are scored in full, and the softmax runs over those k.
  The result is probabilities (F, k) and the answers' vocabulary indices (F, k); answers
  outside the top k have probability 0 in this approximation, which the spec records.

A video's frames are encoded once (:meth:`ImageQATeacher.encode_images`) and reused for
every question about it. A teacher may also rank all the questions that share those frames in
one batched call (``rank_many``, optional): :func:`rank_questions` uses it when present and
falls back to one call per question otherwise; both give the same numbers up to float
rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class VocabScores:
    """Top-k answers of the vocabulary per frame: ``probs`` (F, k) float32 (rows sum to 1)
    and ``index`` (F, k) int64 into the vocabulary, best first."""

    probs: np.ndarray
    index: np.ndarray


@dataclass(frozen=True)
class TeacherQuestion:
    """One question to rank: multiple choice when ``candidates`` is non-empty, else open-ended
    (ranked over the answer vocabulary)."""

    question: str
    candidates: tuple[str, ...] = ()


Ranking = np.ndarray | VocabScores
"""A question's result: (F, C) probabilities (multiple choice) or :class:`VocabScores`."""


@runtime_checkable
class ImageQATeacher(Protocol):
    name: str
    """Registry name, e.g. ``blip`` or ``albef``."""

    def teacher_spec(self) -> dict[str, Any]:
        """JSON-able description of everything that changes the scores: architecture and
        config, weights (tag + sha256, or ``random:<seed>``), image preprocessing (size,
        interpolation, mean/std), compute dtype, tokenizer, and the ranking method."""
        ...

    def encode_images(self, frames: np.ndarray) -> Any:
        """uint8 RGB (F, H, W, 3) -> the visual context of these frames (opaque; on the
        teacher's device), computed once per video and passed to the ranking methods."""
        ...

    def rank_candidates(self, images: Any, question: str, candidates: list[str]) -> np.ndarray:
        """(F, C) float32: softmax over the C candidates of their summed answer-token
        log-probabilities, per frame."""
        ...

    def prepare_vocab(self, vocab: list[str]) -> Any:
        """The answer vocabulary tokenized once (opaque), for :meth:`rank_vocab`."""
        ...

    def rank_vocab(self, images: Any, question: str, vocab: Any, k: int) -> VocabScores:
        """Top-k of the vocabulary by first-token probability, rescored in full (see module)."""
        ...


def no_frames(questions: Sequence[TeacherQuestion], k: int) -> list[Ranking]:
    """What ranking ``questions`` on zero frames gives: (0, C) probabilities per multiple-choice
    question, empty :class:`VocabScores` (0, ``k``) per open-ended one (``k``: the answers
    kept, min(k_test, V))."""
    return [
        np.zeros((0, len(q.candidates)), np.float32) if q.candidates
        else VocabScores(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
        for q in questions
    ]


def rank_questions(
    teacher: ImageQATeacher, images: Any, questions: Sequence[TeacherQuestion], vocab: Any, k: int
) -> list[Ranking]:
    """Rank ``questions`` (all about the frames ``images``) in order: one batched
    ``teacher.rank_many(images, questions, vocab, k)`` call if the teacher has it, else
    :meth:`~ImageQATeacher.rank_candidates` / :meth:`~ImageQATeacher.rank_vocab` per question."""
    questions = list(questions)
    if not questions:
        return []
    batched = getattr(teacher, "rank_many", None)
    if callable(batched):
        return list(batched(images, questions, vocab, k))
    return [
        teacher.rank_candidates(images, q.question, list(q.candidates))
        if q.candidates
        else teacher.rank_vocab(images, q.question, vocab, k)
        for q in questions
    ]


def input_size(teacher: ImageQATeacher) -> int:
    """The side of the teacher's input images: its ``image_size``, else its transform's
    ``size``, else 384 (BLIP's and ALBEF's VQA resolution)."""
    size = getattr(teacher, "image_size", None) or getattr(getattr(teacher, "transform", None), "size", None)
    return int(size or 384)
