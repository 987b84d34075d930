"""Which frames carry patch tokens when a store keeps them on a coarser grid (``--patch-fps F``).

The rule ``nearest-pts-subgrid-v1``, shared by the writer (stage one), ``verify`` and stage two:
with the video's stored frame times ``pts`` (T,) (non-decreasing, seconds from the first
source frame), the sub-grid frames are, for each ``t_j = j / F`` (``j = 0, 1, ...`` while
``t_j <= pts[-1]``), the stored frame whose pts is nearest to ``t_j`` (ties to the earlier
frame; repeated frames share a pts, so the first of them), deduplicated, in order. Distances
within :data:`TIE_S` of each other count as ties, so float rounding of pts that are exact
rationals cannot flip a choice.

A store with a sub-grid stores ``patch`` (M, P, W) and ``patch_pts`` (M,) float64 (the chosen
frames' own pts, strictly increasing, a subset of ``pts``); CLS arrays stay on every frame.
Stage two maps patch rows to frame rows with :func:`patch_frame_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

TIE_S = 1e-9
"""Seconds within which two distances to ``t_j`` (or ``t_j`` and the last pts) count as equal."""


def subgrid_rows(pts: np.ndarray, patch_fps: Fraction | str | float) -> np.ndarray:
    """Rows (M,) int64, increasing, of the frames of ``pts`` (T,) that carry patch tokens
    at ``patch_fps``: the rule in the module docstring, computed on a whole video."""
    selector = SubgridSelector(patch_fps)
    rows = selector.push(np.asarray(pts, dtype=np.float64))
    return np.asarray(rows, dtype=np.int64)


class SubgridSelector:
    """The rule, applied while frames stream in (a writer sees a video block by block).

    :meth:`push` takes the next block's pts and returns the global rows decided so far. Row
    ``i`` can only be decided once a frame at or past ``t_j`` arrived, so a row may be returned
    one block after its own (the caller keeps the last frame it has not been told about:
    :attr:`undecided_from` says from which row on nothing is decided yet). Frames past the
    last ``t_j <= pts[-1]`` are never chosen, so nothing is left to decide at the end.
    """

    def __init__(self, patch_fps: Fraction | str | float) -> None:
        self.fps = Fraction(str(patch_fps)) if not isinstance(patch_fps, Fraction) else patch_fps
        if self.fps <= 0:
            raise ValueError(f"patch_fps must be positive, got {patch_fps!r}")
        self.j = 0
        self.seen = 0  # frames pushed so far
        self.prev: tuple[int, float] | None = None  # first row of the latest pts value, and that pts
        self.last_chosen = -1

    @property
    def undecided_from(self) -> int:
        """Rows from here on may still be chosen; rows before it never will be (unless returned)."""
        return self.seen if self.prev is None else min(self.prev[0], self.seen)

    def _t(self) -> float:
        return float(Fraction(self.j) / self.fps)

    def push(self, pts: np.ndarray) -> list[int]:
        chosen: list[int] = []
        for offset, p in enumerate(np.asarray(pts, dtype=np.float64).tolist()):
            row = self.seen + offset
            if self.prev is not None and p < self.prev[1]:
                raise ValueError(f"pts must not decrease (row {row}: {p} after {self.prev[1]})")
            while p >= self._t() - TIE_S:  # this frame is at or past t_j: t_j is decided
                t = self._t()
                pick = row
                if self.prev is not None and self.prev[0] != row and (t - self.prev[1]) <= (p - t) + TIE_S:
                    pick = self.prev[0]  # the earlier frame is nearer, or as near
                if pick != self.last_chosen:
                    chosen.append(pick)
                    self.last_chosen = pick
                self.j += 1
            if self.prev is None or p > self.prev[1]:
                self.prev = (row, p)
        self.seen += len(pts)
        return chosen


def patch_frame_rows(arrays: Mapping[str, Any]) -> np.ndarray:
    """Rows (M,) int64 of a video's frame list (``pts``) that have patch tokens, in patch-row
    order: ``patch[i]`` belongs to frame ``rows[i]``. All rows (``arange(T)``) when the video has
    no ``patch_pts`` (no sub-grid). ``arrays``: ``store.video_arrays(vid)``, a
    :class:`~vqacache.cache_spec.store.VideoFeatures`, or any mapping with ``pts`` (and
    ``patch_pts``). Raises ``ValueError`` when a patch time is not one of the frame times."""
    pts = np.asarray(arrays["pts"][:], dtype=np.float64)
    patch_pts = _get(arrays, "patch_pts")
    if patch_pts is None:
        return np.arange(len(pts), dtype=np.int64)
    patch_pts = np.asarray(patch_pts[:], dtype=np.float64)
    rows = np.searchsorted(pts, patch_pts, side="left")  # first frame of that pts (repeats share one)
    if (rows >= len(pts)).any() or not np.array_equal(pts[rows], patch_pts):
        raise ValueError("patch_pts holds times that are not frame times of this video")
    return rows.astype(np.int64)


def _get(arrays: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(arrays, Mapping):
        return arrays.get(name)
    return getattr(arrays, name, None)
