"""The description of an image-QA teacher's per-frame answer probabilities in a store.

A store's frame features have one :class:`~vqacache.cache_spec.spec.FeatureSpec`; the
teacher probabilities added to its question bundles (SpARC's teacher) have their own
:class:`TeacherSpec` and fingerprint, recorded once per store (group ``imageqa/``) and in
every bundle that holds them. They are kept apart because adding a teacher must not change
the frame features' fingerprint (that would orphan every cached frame), and one store holds
at most one teacher's probabilities: a second, different teacher is refused, never mixed.

Fields: ``teacher`` (registry name), ``model`` (the teacher's own description: architecture,
weights, image preprocessing, compute dtype, tokenizer, ranking method), ``frames`` (F per
question) and ``frame_policy``, ``decode_short_side`` (the decoded frames it saw). Multiple
choice questions are scored over their candidates. When the dataset has open-ended questions,
they are scored over its answer vocabulary: ``vocab_size``, ``vocab_sha256`` and ``k`` (answers
scored in full; the rest get probability 0, ALBEF's ``k_test`` approximation) are set, and
the vocabulary itself is kept beside the spec (``imageqa/`` attrs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vqacache.cache_spec.errors import SpecError

TEACHER_FORMAT_VERSION = 1
FRAME_POLICIES = ("uniform-in-segment-v1",)
"""``uniform-in-segment-v1``: :func:`vqacache.cache_spec.frame_selection.frame_indices` with F
over the stored frames (7.5 fps): those whose pts lie in the question's segment (the whole
video without one; the frame nearest the segment's middle when none does), thinned to F at
``round(linspace(0, n - 1, F))``; fewer than F when there are fewer (never repeated)."""


@dataclass(frozen=True)
class TeacherSpec:
    teacher: str
    model: dict[str, Any]
    frames: int
    frame_policy: str = "uniform-in-segment-v1"
    decode_short_side: int | None = None
    vocab_size: int | None = None
    vocab_sha256: str | None = None
    k: int | None = None
    format_version: int = TEACHER_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.teacher or not isinstance(self.model, dict):
            raise SpecError("a teacher spec needs a teacher name and a model description")
        if not isinstance(self.frames, int) or self.frames < 1:
            raise SpecError(f"teacher frames must be a positive integer, got {self.frames!r}")
        if self.frame_policy not in FRAME_POLICIES:
            raise SpecError(f"unknown frame policy {self.frame_policy!r}; known: {', '.join(FRAME_POLICIES)}")
        vocab = (self.vocab_size, self.vocab_sha256, self.k)
        if any(v is not None for v in vocab) and not all(vocab):
            raise SpecError("an open-ended teacher spec needs all of vocab_size, vocab_sha256 and k")
        if self.format_version != TEACHER_FORMAT_VERSION:
            raise SpecError(f"teacher spec format {self.format_version}; this vqacache reads {TEACHER_FORMAT_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TeacherSpec:
        if not isinstance(d, dict):
            raise SpecError(f"teacher spec must be an object, got {type(d).__name__}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise SpecError(f"invalid teacher spec: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> TeacherSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SpecError(f"teacher spec is not valid JSON: {exc}") from None

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode("ascii")).hexdigest()


def vocab_sha256(vocab: list[str]) -> str:
    """sha256 of the answer vocabulary in order (JSON list): indices are stored, so order counts."""
    return hashlib.sha256(json.dumps(list(vocab), ensure_ascii=True).encode("ascii")).hexdigest()
