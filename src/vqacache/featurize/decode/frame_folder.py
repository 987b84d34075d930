"""Decode a folder of numbered images (a video shipped as frames) at a fixed output frame rate.

TVQA and VLEP ship 3 fps JPEG frames (``00001.jpg``), EgoTaskQA's LEMMA ``img_00001.jpg``.
A frame folder is a directory whose image files (``.jpg``, ``.jpeg``, ``.png``, any case)
carry their frame number as the last run of digits in the file name's stem; other files are
ignored. The folder holds no timestamps, so the caller gives the source rate ``frames_fps``:
frame ``i`` (0-based, sorted by number) has the pts ``(number_i - number_0) / frames_fps``
seconds. Those integer ticks (time base ``1 / frames_fps``) go through the same
:func:`~vqacache.featurize.decode.frame_plan.plan_frames` as a video's, so ``pts``, ``src_index``,
``is_repeat`` and the duration are exactly those of a video file with these timestamps, and
the frames go through the same :func:`~vqacache.featurize.decode.resize_short_side`.

Images are read with PIL (``convert("RGB")``; an EXIF orientation is not applied: frames
extracted from a video carry none). Only the planned frames are read, each once even when
it is shown at several output steps; a frame the plan skips is never opened.

Nothing is lost or substituted silently: a gap or a repeated number in the numbering, an
image that does not decode, or frames of different sizes fail the video with reason
``"decode-error"`` (possibly after some chunks were yielded: discard them, as for a video
file); a folder without image files is ``"zero-frames"``, an absent one ``"missing"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from vqacache.featurize.decode.frames import (
    ChunkBuilder,
    DecodedFrames,
    DecodeError,
    VideoInfo,
    one_line,
    output_size,
    resize_short_side,
)
from vqacache.featurize.decode.frame_plan import FramePlan, fraction_str, parse_rate, plan_frames

CODECS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
"""Image extensions read (lower-cased) -> the codec recorded in :class:`VideoInfo`."""
CONTAINER = "frame-folder"
BACKEND = "frames"
_LAST_NUMBER = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class FrameFiles:
    """A frame folder's images in frame order (N files, numbered without gap)."""

    folder: Path
    paths: tuple[Path, ...]
    """(N,) image files sorted by frame number."""
    numbers: tuple[int, ...]
    """(N,) their frame numbers, consecutive integers."""

    @property
    def codec(self) -> str:
        """"jpeg", "png", or e.g. "jpeg+png" for a folder mixing both."""
        return "+".join(sorted({CODECS[p.suffix.lower()] for p in self.paths}))


def list_frames(folder: str | os.PathLike[str]) -> FrameFiles:
    """The numbered images of ``folder``, checked for a gap-free, duplicate-free numbering.

    Raises:
        DecodeError: ``"missing"`` (no such folder), ``"unreadable"`` (not a folder),
            ``"zero-frames"`` (no image file), ``"decode-error"`` (an image without a
            number, a number twice, or a gap).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DecodeError("missing", f"{folder}: no such folder of frames")
    if not folder.is_dir():
        raise DecodeError("unreadable", f"{folder}: not a folder of frames")
    numbered = sorted((_frame_number(folder, p), p) for p in _images(folder))
    if not numbered:
        raise DecodeError("zero-frames", f"{folder}: no image files (.jpg, .jpeg, .png)")
    for (a, path_a), (b, path_b) in zip(numbered[:-1], numbered[1:]):
        if a == b:
            raise DecodeError("decode-error", f"{folder}: frame {a} twice ({path_a.name}, {path_b.name})")
        if b != a + 1:
            raise DecodeError("decode-error", f"{folder}: frame {a + 1} missing (numbering jumps from {a} to {b})")
    return FrameFiles(folder, tuple(p for _, p in numbered), tuple(n for n, _ in numbered))


def plan_frame_folder(numbers: tuple[int, ...], frames_fps: Fraction, fps: Fraction) -> FramePlan:
    """The ``nearest-pts-v1`` plan of frames numbered ``numbers`` shown at ``frames_fps``:
    ticks ``number - numbers[0]`` of the time base ``1 / frames_fps``."""
    ticks = [n - numbers[0] for n in numbers]  # (N,) ints
    return plan_frames(ticks, 1 / frames_fps, fps, fallback_fps=frames_fps)


def iter_decode_frame_folder(
    folder: str | os.PathLike[str],
    fps: Fraction,
    frames_fps: float | str | Fraction,
    short_side: int | None,
    chunk_frames: int,
) -> Iterator[DecodedFrames]:
    """Yield a frame folder's output frames in chunks of at most ``chunk_frames`` frames.

    The contract of :func:`~vqacache.featurize.decode.video.iter_decode_at_fps` (which calls this
    for a directory; ``fps``, ``short_side`` and ``chunk_frames`` are checked there):
    concatenated chunks give the whole video, nothing is read before the first ``next()``,
    memory holds one chunk plus at most 16 native-size images.

    Args:
        folder: the frame folder.
        fps: output rate.
        frames_fps: the source frame rate, e.g. ``3`` or ``"30000/1001"``.
        short_side: resize so the shorter side has this many pixels; None keeps the size.
        chunk_frames: output frames per chunk.

    Raises:
        DecodeError: see the module docstring; may come after some chunks were yielded.
        UsageError: a ``frames_fps`` that is not a positive number.
    """
    rate = parse_rate(frames_fps, "frames_fps", "3 or 30000/1001")
    files = list_frames(folder)
    plan = plan_frame_folder(files.numbers, rate, fps)
    first = _read(files.paths[0])  # (h, w, 3); src_index[0] is always frame 0
    info = _info(files, first.shape, rate, fps, plan, short_side)
    frames = _iter_planned(files, plan.src_index, first, chunk_frames, short_side)
    k0 = 0
    for chunk in frames:  # (t, out_h, out_w, 3) for output steps k0 .. k0 + t - 1
        k1 = k0 + chunk.shape[0]
        yield DecodedFrames(
            frames=chunk,
            pts=plan.pts[k0:k1],
            src_index=plan.src_index[k0:k1],
            is_repeat=plan.is_repeat[k0:k1],
            info=info,
        )
        k0 = k1


# -- helpers -----------------------------------------------------------------------------------


def _images(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if os.path.splitext(entry.name)[1].lower() in CODECS and entry.is_file():
                yield Path(entry.path)


def _frame_number(folder: Path, path: Path) -> int:
    match = _LAST_NUMBER.search(path.stem)
    if match is None:
        raise DecodeError("decode-error", f"{folder}: {path.name} has no frame number")
    return int(match.group(1))


def _read(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image; a broken or truncated file is a DecodeError."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:  # PIL's failures
        raise DecodeError("decode-error", f"{path}: {one_line(e)}")


def _iter_planned(
    files: FrameFiles, src: np.ndarray, first: np.ndarray, chunk_frames: int, short_side: int | None
) -> Iterator[np.ndarray]:
    """Yield (t, H', W', 3) chunks of the planned frames ``src`` (T,), each image read once."""
    chunk = ChunkBuilder(lambda rgb: resize_short_side(rgb, short_side))
    shown, image = 0, first  # the last image read and its index
    for k0 in range(0, src.shape[0], chunk_frames):
        wanted, counts = np.unique(src[k0 : k0 + chunk_frames], return_counts=True)  # src is sorted
        for j, count in zip(wanted.tolist(), counts.tolist()):
            if j != shown:
                shown, image = j, _read(files.paths[j])
                if image.shape != first.shape:
                    raise DecodeError(
                        "decode-error",
                        f"{files.paths[j]}: {image.shape[1]}x{image.shape[0]} pixels, frame "
                        f"{files.numbers[0]} has {first.shape[1]}x{first.shape[0]}",
                    )
            chunk.add(image, count)
        yield chunk.take()


def _info(files: FrameFiles, shape: tuple[int, ...], rate: Fraction, fps: Fraction, plan: FramePlan,
          short_side: int | None) -> VideoInfo:
    height, width = shape[0], shape[1]
    out_h, out_w = output_size(height, width, short_side)
    return VideoInfo(
        path=str(files.folder),
        backend=BACKEND,
        fallback_reason=None,
        container=CONTAINER,
        codec=files.codec,
        width=width,
        height=height,
        rotation=0,
        mirrored=False,
        out_width=out_w,
        out_height=out_h,
        time_base=fraction_str(1 / rate),
        native_fps=fraction_str(plan.native_fps),
        fps=fraction_str(fps),
        n_source_frames=plan.n_source_frames,
        n_frames=plan.n_frames,
        n_repeats=plan.n_repeats,
        duration=float(plan.duration),
    )
