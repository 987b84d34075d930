"""Which of a video's stored frames a question uses: one rule, shared by both stages.

Stage two reads N dense frames per question with it; stage one picks the image-QA teacher's
F frames per question with it (``uniform-in-segment-v1`` in the teacher spec), so a
teacher frame and a training frame at the same position are the same stored frame.
"""

from __future__ import annotations

import numpy as np


def uniform_positions(n_valid: int, k: int) -> np.ndarray:
    """K positions spread uniformly over ``range(n_valid)``, both ends included:
    ``round(linspace(0, n_valid - 1, k))`` (repeats only when k > n_valid)."""
    if n_valid <= 0:
        raise ValueError("no frames to choose from")
    return np.linspace(0, n_valid - 1, k).round().astype(np.int64)


def frame_indices(pts: np.ndarray, num_frames: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Indices (n,), n <= num_frames, increasing, of the frames a question uses.

    All frames, or those with ``start <= pts <= end`` for a segment (the nearest frame to
    the segment's middle when none is inside); uniformly thinned to ``num_frames``.
    """
    candidates = np.arange(len(pts))
    if start is not None or end is not None:
        lo = -np.inf if start is None else float(start)
        hi = np.inf if end is None else float(end)
        inside = candidates[(pts >= lo) & (pts <= hi)]
        if len(inside) == 0:
            mid = (lo + hi) / 2 if np.isfinite(lo) and np.isfinite(hi) else (lo if np.isfinite(lo) else hi)
            inside = np.array([int(np.abs(pts - mid).argmin())])
        candidates = inside
    if len(candidates) <= num_frames:
        return candidates
    return candidates[uniform_positions(len(candidates), num_frames)]
