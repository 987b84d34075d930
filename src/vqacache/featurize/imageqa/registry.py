"""Name -> image-QA teacher builder. Builders are imported only when a teacher is built
(transformers and the model code load then, not when the CLI starts)."""

from __future__ import annotations

import importlib
from typing import Any

from vqacache.cache_spec.errors import UnknownName
from vqacache.featurize.device import resolve_compute_dtype, resolve_device
from vqacache.featurize.imageqa.teacher import ImageQATeacher

TEACHERS: dict[str, str] = {
    "blip": "vqacache.featurize.imageqa.blip:build_blip_teacher",
    "albef": "vqacache.featurize.imageqa.albef:build_albef_teacher",
}
"""``name -> "module:function"``; the function takes ``(weights, *, device, compute_dtype)``."""


def list_teachers() -> list[str]:
    return sorted(TEACHERS)


def teacher_scores(name: str) -> tuple[str, ...]:
    """The answer scores teacher ``name`` accepts (its module's ``SCORES``; ``()`` if it has
    no choice), so a bad ``--imageqa-score`` fails before any work."""
    if name not in TEACHERS:
        raise UnknownName(f"unknown image-QA teacher {name!r}; available: {', '.join(list_teachers())}")
    module = importlib.import_module(TEACHERS[name].partition(":")[0])
    return tuple(getattr(module, "SCORES", ()))


def get_teacher(name: str, weights: str | None = None, *, device: str = "cpu", compute_dtype: str = "float32",
                **options: Any) -> ImageQATeacher:
    """Build teacher ``name`` with ``weights`` (None: its default checkpoint; a hub name, a
    local file or directory, or ``random[:SEED]``), on ``device`` (``auto`` allowed, as for
    encoders), with the builder's ``options`` (``tokenizer``, ``k_test``, ...)."""
    if name not in TEACHERS:
        raise UnknownName(f"unknown image-QA teacher {name!r}; available: {', '.join(list_teachers())}")
    device = resolve_device(device)
    compute_dtype = resolve_compute_dtype(compute_dtype, device)
    module, _, function = TEACHERS[name].partition(":")
    build = getattr(importlib.import_module(module), function)
    return build(weights, device=device, compute_dtype=compute_dtype, **options)
