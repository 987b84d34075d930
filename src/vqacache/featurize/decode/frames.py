"""What a decoder yields and the pieces every decoder shares (files, folders of frames, the
decode pool): the output types, :class:`DecodeError`, the defaults, and the one resize.

Its own module so that :mod:`~vqacache.featurize.decode.video` and
:mod:`~vqacache.featurize.decode.frame_folder` both import it and not each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqacache.cache_spec.errors import VqaCacheError

DEFAULT_FPS = Fraction(15, 2)
"""Default output frame rate, 7.5 fps."""
DEFAULT_SHORT_SIDE = 256
"""Default short side of the decoded frames, in pixels."""
DEFAULT_CHUNK_FRAMES = 64
"""Default number of output frames per chunk of :func:`iter_decode_at_fps`."""

DECODE_ERROR_REASONS = (
    "missing", "unreadable", "no-video-stream", "zero-frames", "decode-error", "timeout", "crashed"
)
"""Why a video failed. The last two come only from :class:`~vqacache.featurize.decode.pool.DecodePool`."""


Transform = Callable[[np.ndarray], np.ndarray]
"""(N, h, w, 3) uint8 native frames -> (N, H, W, 3) uint8 upright, resized frames."""


class DecodeError(VqaCacheError, RuntimeError):
    """A video cannot be decoded; ``reason`` is one of :data:`DECODE_ERROR_REASONS`.

    ``missing``: no such file. ``unreadable``: not a media container (empty, text, random
    bytes, corrupt header, truncated before its index). ``no-video-stream``: e.g. audio
    only. ``zero-frames``: a video stream without frames. ``decode-error``: the file
    breaks midway (truncated, corrupt packets, decoder errors, frames missing).
    ``timeout`` and ``crashed`` are raised by :class:`~vqacache.featurize.decode.pool.DecodePool`
    only: the child process decoding the video sent nothing for ``timeout_s`` and was killed,
    or it died (segfault, ``os._exit``, OOM kill).
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in DECODE_ERROR_REASONS:
            raise ValueError(f"unknown decode error reason {reason!r}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # keep (reason, message) across pickling
        return (type(self), (self.reason, str(self)))


@dataclass(frozen=True)
class VideoInfo:
    """What was decoded and how; identical on every chunk of one video."""

    path: str
    backend: str
    """"decord" (the decord2 package) or "pyav"; "frames" for a folder of frames."""
    fallback_reason: str | None
    """Why decord was not used (None when it was, and for a folder of frames)."""
    container: str
    """Demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", ...), or "frame-folder"."""
    codec: str
    """Video codec, or the images' format ("jpeg", "png") for a folder of frames."""
    width: int
    """Native (stored) frame width, before rotation."""
    height: int
    rotation: int
    """Display rotation applied, degrees counter-clockwise (0, 90, 180 or 270)."""
    mirrored: bool
    """A horizontal mirror was applied after the rotation (display matrix with a flip)."""
    out_width: int
    out_height: int
    time_base: str
    native_fps: str
    """Frame rate derived from the timestamps, exact fraction such as "30000/1001"."""
    fps: str
    """Output frame rate, exact fraction such as "15/2"."""
    n_source_frames: int
    n_frames: int
    """T, the number of output frames of the whole video."""
    n_repeats: int
    duration: float
    """D in seconds (last pts + one native frame duration)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DecodedFrames:
    """Output frames of one video (or one chunk of it); T is the frame count here."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB, upright, short side resized."""
    pts: np.ndarray
    """(T,) float64 seconds: the shown source frame's pts relative to the first frame."""
    src_index: np.ndarray
    """(T,) int64 presentation-order index of the shown source frame."""
    is_repeat: np.ndarray
    """(T,) bool: same source frame as the previous output frame of the video (for a chunk's
    first frame, the previous chunk's last)."""
    info: VideoInfo


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(out_h, out_w): short side to ``short_side``, long side floored (as torchvision)."""
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, short_side * width // height
    return short_side * height // width, short_side


def resize_short_side(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resize (N, H, W, 3) uint8 frames so the short side is ``short_side``.

    Bilinear with antialias (``align_corners=False``) by torch's uint8 kernel, the one
    torchvision uses for uint8 tensors: fixed-point weights, rounded to uint8 inside the
    kernel, about 15x faster than a float32 round trip (which differs from it by at most
    1 on some pixels). Each frame is resized independently of the others in the batch.
    Returns the input unchanged when the size already matches or ``short_side`` is None.
    """
    n, h, w, _ = frames.shape
    out_h, out_w = output_size(h, w, short_side)
    if (out_h, out_w) == (h, w) or n == 0:
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
    return y.permute(0, 2, 3, 1).contiguous().numpy()  # (N, out_h, out_w, 3) uint8


class ChunkBuilder:
    """Output frames of one chunk: native frames are transformed in batches of ``batch``.

    Batching (rather than one resize per frame) keeps torch's threads from fighting the
    decoder's threads frame after frame; the cap bounds the native-size frames held.
    """

    def __init__(self, transform: Transform, batch: int = 16) -> None:
        self.transform, self.batch = transform, batch
        self.size = 0  # output frames added since the last take()
        self._raw: list[np.ndarray] = []  # (H, W, 3) native, distinct, not yet transformed
        self._counts: list[int] = []  # output steps showing each of them
        self._done: list[np.ndarray] = []  # (t, H', W', 3) transformed

    def add(self, image: np.ndarray, count: int) -> None:
        self._raw.append(image)
        self._counts.append(count)
        self.size += count
        if len(self._raw) == self.batch:
            self._flush()

    def take(self) -> np.ndarray:
        """(size, H', W', 3) output frames added so far; resets the builder."""
        self._flush()
        out = self._done[0] if len(self._done) == 1 else np.concatenate(self._done)
        self._done, self.size = [], 0
        return out

    def _flush(self) -> None:
        if self._raw:
            self._done.append(np.repeat(self.transform(np.stack(self._raw)), self._counts, 0))
            self._raw, self._counts = [], []


def one_line(e: BaseException) -> str:
    """An exception as one line, ``"Type: message"`` (decode errors name their cause this way)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
