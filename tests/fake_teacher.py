"""A deterministic stand-in image-QA teacher for pipeline tests: its scores are a simple
function of each frame's mean intensity and the answers' lengths, so a test can recompute
them from frames it decodes itself (which checks frame choice, alignment and order)."""

from __future__ import annotations

import numpy as np

from vqacache.featurize.imageqa import VocabScores

IMAGE_SIZE = 64


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def logits(means: np.ndarray, question: str, answers: list[str]) -> np.ndarray:
    """(F,) frame means -> (F, A) scores."""
    lengths = np.array([1 + len(a) for a in answers], dtype=np.float64)
    return means[:, None] * lengths[None, :] * 4 + (len(question) % 3) * np.cos(lengths)[None, :]


class FakeTeacher:
    name = "fake"
    image_size = IMAGE_SIZE

    def teacher_spec(self) -> dict:
        return {"architecture": "fake-mean-intensity", "image_size": IMAGE_SIZE}

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(len(frames), -1).astype(np.float64).mean(axis=1) / 255.0  # (F,)

    def rank_candidates(self, images: np.ndarray, question: str, candidates: list[str]) -> np.ndarray:
        return softmax(logits(images, question, candidates))

    def prepare_vocab(self, vocab: list[str]) -> list[str]:
        return list(vocab)

    def rank_vocab(self, images: np.ndarray, question: str, vocab: list[str], k: int) -> VocabScores:
        scores = logits(images, question, vocab)  # (F, V)
        index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return VocabScores(probs=softmax(np.take_along_axis(scores, index, axis=1)), index=index.astype(np.int64))


def build_fake_teacher(weights, *, device, compute_dtype, **options) -> FakeTeacher:  # noqa: ANN001, ANN003
    return FakeTeacher()
