"""Which source frames to keep: the ``nearest-pts-v1`` sampling rule, pure and exact.

The rule works on the frames' presentation timestamps, never on a container's declared
average rate (real files get that wrong). With the integer timestamps sorted into
presentation order and taken relative to the first frame, ``r_i = pts_i - pts_0``, and the
duration ``D = r_last + 1/native_fps``:

* output times are ``t_k = k / fps`` for every integer ``k >= 0`` with ``t_k < D``;
* output frame ``k`` is the source frame whose ``r_i`` is nearest to ``t_k``; a tie goes to
  the earlier frame (and among frames sharing one timestamp, to the first of them).

Videos slower than ``fps`` therefore repeat frames; faster ones skip frames. Everything is
computed with integers and :class:`fractions.Fraction` from the stream's integer timestamps
and time base, so a grid point landing exactly on ``D`` (which real files do) is excluded
exactly, and ties are real ties rather than float noise.

``native_fps`` is derived from the timestamps themselves: ``1 / (median frame-to-frame
delta)``, where the median is the *lower* median of the strictly positive deltas in ticks.
The lower median is always an observed delta, so ``D`` stays an exact number of ticks; the
median ignores the odd long gap of a variable-frame-rate or glitchy file, and zero deltas
(duplicate timestamps) carry no rate information. Only when there is no positive delta (a
single frame, or all frames sharing one timestamp) does the declared rate of the stream
(``fallback_fps``) stand in; without one, the video lasts exactly one output step.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from vqacache.cache_spec.errors import UsageError


def parse_rate(value: float | str | Fraction, what: str = "fps", example: str = "7.5 or 15/2") -> Fraction:
    """A frame rate given as ``7.5``, ``"15/2"``, ``"30000/1001"`` or a Fraction -> a positive
    Fraction; anything else (a boolean, zero, text) is a one-line :class:`UsageError` naming
    ``what``, e.g. ``frames_fps must be a positive number such as 3 or 30000/1001, got 'x'``."""
    try:
        rate = value if isinstance(value, Fraction) else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        rate = None
    if isinstance(value, bool) or rate is None or rate <= 0:
        raise UsageError(f"{what} must be a positive number such as {example}, got {value!r}")
    return rate


def fraction_str(q: Fraction) -> str:
    """A rate or time base as recorded: the exact fraction ``"15/2"``, ``"30000/1001"``, ``"3/1"``."""
    return f"{q.numerator}/{q.denominator}"


@dataclass(frozen=True)
class FramePlan:
    """The frames to emit for one video, in output order (``T`` output frames).

    ``src_index`` indexes the source frames in presentation order (0 is the earliest
    frame), which is the order decoders emit frames in and decord indexes them by.
    """

    src_index: np.ndarray
    """(T,) int64: presentation-order index of the source frame shown at output step k."""
    pts: np.ndarray
    """(T,) float64: that source frame's pts in seconds, relative to the first frame."""
    is_repeat: np.ndarray
    """(T,) bool: True where ``src_index[k] == src_index[k - 1]`` (always False at k = 0)."""
    duration: Fraction
    """D in seconds: last frame's relative pts plus one native frame duration."""
    native_fps: Fraction
    """Frame rate derived from the timestamps (see the module docstring)."""
    n_source_frames: int
    """Number of source frames (timestamps) the plan was built from."""

    @property
    def n_frames(self) -> int:
        """T, the number of output frames."""
        return int(self.src_index.shape[0])

    @property
    def n_repeats(self) -> int:
        """Number of output frames that repeat the previous output frame."""
        return int(self.is_repeat.sum())


def native_frame_ticks(sorted_ticks: Sequence[int]) -> int | None:
    """Lower median of the strictly positive deltas of sorted timestamps, or None if none."""
    deltas = [b - a for a, b in zip(sorted_ticks[:-1], sorted_ticks[1:]) if b > a]
    return statistics.median_low(deltas) if deltas else None


def plan_frames(
    pts_ticks: Sequence[int],
    time_base: Fraction,
    fps: Fraction,
    fallback_fps: Fraction | None = None,
) -> FramePlan:
    """Apply the ``nearest-pts-v1`` rule to one video's frame timestamps.

    Args:
        pts_ticks: (N,) integer presentation timestamps of every frame, in any order
            (decode order is fine); they are sorted here. Duplicates are allowed.
        time_base: seconds per tick (e.g. ``Fraction(1, 30000)``), positive.
        fps: output frame rate, positive.
        fallback_fps: declared stream rate, used only when the timestamps give no positive
            frame-to-frame delta (a single frame). ``None`` or non-positive means unknown:
            the video then lasts ``1 / fps`` (one output frame).

    Returns:
        The :class:`FramePlan`; ``T >= 1`` whenever ``N >= 1``.

    Raises:
        ValueError: no timestamps, a non-integer timestamp, or a non-positive ``time_base``
            or ``fps``.
    """
    time_base, fps = Fraction(time_base), Fraction(fps)
    if time_base <= 0 or fps <= 0:
        raise ValueError(f"time_base and fps must be positive, got {time_base} and {fps}")
    if len(pts_ticks) == 0:
        raise ValueError("cannot plan frames for a video without frames")
    ticks = sorted(_as_int(t) for t in pts_ticks)
    rel = [t - ticks[0] for t in ticks]  # (N,) ints, non-decreasing, rel[0] == 0

    frame_ticks = native_frame_ticks(ticks)
    if frame_ticks is not None:
        frame_duration = Fraction(frame_ticks)  # in ticks
    elif fallback_fps is not None and fallback_fps > 0:
        frame_duration = 1 / (Fraction(fallback_fps) * time_base)
    else:
        frame_duration = 1 / (fps * time_base)
    native_fps = 1 / (frame_duration * time_base)
    duration_ticks = rel[-1] + frame_duration

    step = 1 / (fps * time_base)  # ticks per output frame, exact
    n_out = _ceil(duration_ticks / step)  # number of k >= 0 with k * step < D
    # Compare in integers: scale ticks by step's denominator so t_k = k * numerator.
    scaled = [r * step.denominator for r in rel]
    src = np.empty(n_out, dtype=np.int64)
    for k in range(n_out):
        src[k] = _nearest(scaled, k * step.numerator)

    rel_arr = np.asarray(rel, dtype=np.int64)
    pts = rel_arr[src].astype(np.float64) * float(time_base)
    is_repeat = np.zeros(n_out, dtype=bool)
    is_repeat[1:] = src[1:] == src[:-1]
    return FramePlan(
        src_index=src,
        pts=pts,
        is_repeat=is_repeat,
        duration=duration_ticks * time_base,
        native_fps=native_fps,
        n_source_frames=len(ticks),
    )


def _nearest(rel: list[int], target: int) -> int:
    """Index of the first element of sorted ``rel`` nearest to ``target``; ties -> earlier."""
    j = bisect.bisect_left(rel, target)  # first index with rel[j] >= target
    if j == len(rel):
        return bisect.bisect_left(rel, rel[-1])
    if j == 0:
        return 0
    before, after = rel[j - 1], rel[j]
    if target - before <= after - target:
        return bisect.bisect_left(rel, before)  # first frame carrying that timestamp
    return j


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def _as_int(value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"timestamps must be integers (ticks of the time base), got {value!r}")
    return int(value)
