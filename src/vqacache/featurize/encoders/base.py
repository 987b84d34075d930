"""The encoder interface the featurize pipeline calls. Structural: implement it, don't inherit.

Shapes, per call: ``N`` frames, ``E`` joint embedding size, ``W`` image tower width, ``P``
patch tokens after pooling, ``n`` texts, ``L`` longest tokenized text in the batch, ``W_text``
text tower width. Every returned tensor is float32 (``length``: int64) on the CPU, computed
without autograd and in eval mode. Callers batch: one call is one forward pass
(:attr:`Encoder.batch_size_hint` frames is a sensible size).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from vqacache.cache_spec.spec import FeatureSpec, SamplingSpec


@runtime_checkable
class Encoder(Protocol):
    """A frozen image(+text) encoder with a fully described output."""

    @property
    def name(self) -> str:
        """Registry name, filesystem-safe (``clip-b16``, ``open_clip-ViT-L-14``)."""
        ...

    @property
    def dims(self) -> dict[str, tuple[int, ...]]:
        """Per-item shapes: ``cls`` (E,), ``cls_hidden`` (W,), ``patch`` (P, W) when patches
        are on, ``text`` (E,), ``text_tokens`` (W_text,) (one token; L varies per batch).
        Vision-only encoders have no ``text``/``text_tokens``."""
        ...

    @property
    def has_text(self) -> bool:
        """Whether :meth:`encode_text` works: True for CLIP-style encoders, False for
        vision-only towers (BLIP-2's ViT-g, BLIP's ViT), whose questions need another encoder."""
        ...

    @property
    def batch_size_hint(self) -> int:
        """A sensible number of frames per :meth:`encode_frames` call on this device."""
        ...

    def feature_spec(self, sampling: SamplingSpec, dtype: str = "float16") -> FeatureSpec:
        """Everything that changes the numbers, given the frame sampling and storage dtype."""
        ...

    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 RGB (N, H, W, 3), as decoded, any size -> ``cls`` (N, E), ``cls_hidden``
        (N, W) and, when patches are on, ``patch`` (N, P, W)."""
        ...

    def encode_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """n strings -> ``emb`` (n, E), ``tokens`` (n, L, W_text) with L the longest tokenized
        length in the batch (SOT and EOT included), ``length`` (n,) int64.
        Raises ``NotImplementedError`` when :attr:`has_text` is False."""
        ...
