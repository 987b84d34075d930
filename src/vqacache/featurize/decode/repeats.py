"""Repeated frames are encoded once and expanded back to every output frame."""

from __future__ import annotations

import numpy as np
import torch


class RepeatExpander:
    """Expands features of unique frames back to every output frame, across chunks.

    A video slower than the sampling fps repeats source frames; each is encoded once.
    ``is_repeat[k]`` says output frame k shows the same source frame as frame k-1, which
    for the first frame of a chunk is the last frame of the previous chunk.
    """

    def __init__(self) -> None:
        self._last: dict[str, torch.Tensor] | None = None

    def expand(self, unique: dict[str, torch.Tensor], is_repeat: np.ndarray) -> dict[str, torch.Tensor]:
        """``unique``: name -> (U, ...) for the U non-repeated frames; returns name -> (T, ...)."""
        is_repeat = np.asarray(is_repeat, dtype=bool)
        if not unique and self._last is not None:  # a chunk made only of repeats
            unique = {name: last[None][:0] for name, last in self._last.items()}
        if self._last is None and is_repeat[0]:
            raise ValueError("the first frame of a video cannot be a repeat")
        # 1-based row of each output frame's unique frame in this chunk; 0 = previous chunk's last
        rows = torch.from_numpy(np.cumsum(~is_repeat))
        out = {}
        for name, values in unique.items():
            head = self._last[name][None] if self._last is not None else values[:1]  # row 0
            out[name] = torch.cat([head, values])[rows]
        self._last = {name: values[-1] for name, values in out.items()}
        return out
