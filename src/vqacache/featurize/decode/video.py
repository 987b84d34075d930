"""Decode a video at a fixed output frame rate: exact timestamps, upright frames, one resize.

A video is a file, or a folder of numbered images (TVQA, VLEP, EgoTaskQA ship frames): a
directory is handed to :mod:`vqacache.featurize.decode.frame_folder` with its source frame rate
``frames_fps`` (the folder has no timestamps), which plans and resizes exactly as below.

For each file:

1. **Probe** with PyAV: demux every packet of the video stream (no decoding) to read the
   exact integer pts and the time base, and decode only the first frame (display matrix,
   reference pixels). The pts, sorted into presentation order, give the
   :class:`~vqacache.featurize.decode.frame_plan.FramePlan` (rule ``nearest-pts-v1``).
2. **Choose a backend** for fetching the planned frames. decord (the maintained fork
   ``decord2``, which keeps the module name ``decord``; the backend is labelled ``"decord"``
   and the store's environment records the ``decord2`` version) is used only when it is
   judged reliable for the file (:func:`_decord_problem`): no display rotation/flip to
   apply, not an AVI with B-frames (there decord's timestamps are garbage and its random
   access returns wrong frames), an 8-bit pixel format, decord counts the same frames as
   the demuxer, its timestamps agree with the demuxed pts, and its first frame is
   pixel-identical to PyAV's. Otherwise PyAV decodes sequentially (decode all, keep the
   planned frames). The backend and the reason for a fallback are recorded in
   :class:`VideoInfo`.
3. **Orient and resize** in one backend-independent place: the display matrix is applied
   (``np.rot90``/flips, PyAV path only; decord is not used for files that need it), then the
   short side is resized to ``short_side`` with torch's uint8 bilinear + antialias kernel
   (:func:`resize_short_side`). Same decoded frames in, same pixels out, whatever the backend.

Failures raise :class:`DecodeError` with a fixed ``reason``. A truncated file is never
silently shortened (the project never loses or substitutes data without saying so), so a
decodable prefix is *not* kept: a packet the demuxer marks corrupt, fewer frames than the
header declares, a decoder error, or a decoder that yields a different number of frames
than the demuxer listed fails the whole video with reason ``"decode-error"``. (A truncated
mp4 whose index sits at the end cannot be opened at all: ``"unreadable"``.) In the
streaming variant the error can come after some chunks were yielded: the caller must then
discard the video's chunks. Files whose header is cut inside the index may also report
``"no-video-stream"`` or ``"zero-frames"``; any reason means the video failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.decode.frame_folder import iter_decode_frame_folder
from vqacache.featurize.decode.frame_plan import FramePlan, fraction_str, parse_rate, plan_frames
from vqacache.featurize.decode.frames import (  # noqa: F401 - re-exported, the decoder's public names
    DECODE_ERROR_REASONS,
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_FPS,
    DEFAULT_SHORT_SIDE,
    ChunkBuilder,
    DecodedFrames,
    DecodeError,
    Transform,
    VideoInfo,
    one_line,
    output_size,
    resize_short_side,
)

BACKENDS = ("auto", "decord", "pyav")
"""``decord`` is the module of the ``decord2`` distribution (the maintained fork of decord)."""

DECORD_PIX_FMTS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")
"""Pixel formats whose RGB conversion was checked identical in decord (0.6, and decord2 3.4)
and PyAV 18. (10-bit formats differed: decord 0.6 converted them differently.)"""

UNREADABLE_FORMATS = ("tty",)
"""Demuxers that accept any text as "video" (ANSI art); such files are unreadable to us."""

Backend = Literal["auto", "decord", "pyav"]








# -- public API ----------------------------------------------------------------------------


def decode_at_fps(
    path: str | os.PathLike[str],
    fps: float | str | Fraction = DEFAULT_FPS,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    backend: Backend = "auto",
    frames_fps: float | str | Fraction | None = None,
) -> DecodedFrames:
    """Decode a whole video at ``fps`` (see :func:`iter_decode_at_fps`), in memory."""
    chunks = list(iter_decode_at_fps(path, fps, short_side, chunk_frames=1024, backend=backend,
                                     frames_fps=frames_fps))
    return DecodedFrames(
        frames=np.concatenate([c.frames for c in chunks]),
        pts=np.concatenate([c.pts for c in chunks]),
        src_index=np.concatenate([c.src_index for c in chunks]),
        is_repeat=np.concatenate([c.is_repeat for c in chunks]),
        info=chunks[0].info,
    )


def iter_decode_at_fps(
    path: str | os.PathLike[str],
    fps: float | str | Fraction = DEFAULT_FPS,
    short_side: int | None = DEFAULT_SHORT_SIDE,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    backend: Backend = "auto",
    frames_fps: float | str | Fraction | None = None,
) -> Iterator[DecodedFrames]:
    """Yield a video's output frames in chunks of at most ``chunk_frames`` frames.

    Concatenating the chunks gives exactly :func:`decode_at_fps`'s result. Memory holds one
    chunk plus some source frames at native size (the chunk's distinct ones on the decord
    path, at most 16 on the PyAV path), never the whole video. ``is_repeat[0]`` of a chunk
    compares with the last frame of the previous chunk. Nothing is read before the first
    ``next()``.

    Args:
        path: video file, or a folder of numbered images (see
            :mod:`~vqacache.featurize.decode.frame_folder`; ``backend`` does not apply there).
        fps: output rate as ``7.5``, ``"15/2"`` or a Fraction.
        short_side: resize so the shorter side has this many pixels (aspect kept, long side
            floored); ``None`` keeps the native size.
        chunk_frames: output frames per chunk (the last one may be shorter).
        backend: ``"auto"`` (decord when judged reliable, else PyAV), ``"pyav"``, or
            ``"decord"`` (raises :class:`UsageError` when decord is not reliable here).
        frames_fps: source frame rate of a folder of frames (``3``, ``"30000/1001"``);
            required for a folder (else ``DecodeError("unreadable")``), ignored for a file.

    Raises:
        DecodeError: the file is missing, unreadable or broken (see its ``reason``); may be
            raised after some chunks were yielded.
        UsageError: bad ``fps``, ``short_side``, ``chunk_frames``, ``backend`` or ``frames_fps``.
    """
    fps_q = parse_rate(fps)
    if short_side is not None and not _positive_int(short_side):
        raise UsageError(f"short_side must be a positive integer or None, got {short_side!r}")
    if not _positive_int(chunk_frames):
        raise UsageError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if Path(path).is_dir():
        yield from _iter_frame_folder(Path(path), fps_q, frames_fps, short_side, chunk_frames)
        return

    probe = _probe(Path(path), fps_q)
    reader, problem = None, "backend 'pyav' requested"
    if backend != "pyav":
        reader, problem = _open_decord_if_reliable(probe)
        if reader is None and backend == "decord":
            raise UsageError(f"{path}: decord is not reliable for this file: {problem}")
    out_h, out_w = output_size(probe.display_height, probe.display_width, short_side)
    plan = probe.plan
    info = VideoInfo(
        path=str(path),
        backend="pyav" if reader is None else "decord",
        fallback_reason=problem if reader is None else None,
        container=probe.container,
        codec=probe.codec,
        width=probe.width,
        height=probe.height,
        rotation=probe.orientation.rotation,
        mirrored=probe.orientation.mirrored,
        out_width=out_w,
        out_height=out_h,
        time_base=fraction_str(probe.time_base),
        native_fps=fraction_str(plan.native_fps),
        fps=fraction_str(fps_q),
        n_source_frames=plan.n_source_frames,
        n_frames=plan.n_frames,
        n_repeats=plan.n_repeats,
        duration=float(plan.duration),
    )

    def transform(rgb: np.ndarray) -> np.ndarray:  # (N, h, w, 3) -> (N, out_h, out_w, 3)
        return resize_short_side(probe.orientation.apply(rgb), short_side)

    if reader is None:
        frames_iter = _iter_pyav(probe, chunk_frames, transform)
    else:
        frames_iter = _iter_decord(reader, probe, chunk_frames, transform)
    k0 = 0
    for frames in frames_iter:  # (t, out_h, out_w, 3) for output steps k0 .. k0 + t - 1
        k1 = k0 + frames.shape[0]
        yield DecodedFrames(
            frames=frames,
            pts=plan.pts[k0:k1],
            src_index=plan.src_index[k0:k1],
            is_repeat=plan.is_repeat[k0:k1],
            info=info,
        )
        k0 = k1


def _iter_frame_folder(
    folder: Path, fps: Fraction, frames_fps: float | str | Fraction | None, short_side: int | None,
    chunk_frames: int,
) -> Iterator[DecodedFrames]:
    """A folder of frames, decoded by :mod:`vqacache.featurize.decode.frame_folder`."""
    if frames_fps is None:
        raise DecodeError("unreadable", f"{folder}: a folder of frames needs its frame rate (frames_fps)")
    yield from iter_decode_frame_folder(folder, fps, frames_fps, short_side, chunk_frames)


# -- resizing and orientation (backend independent) ----------------------------------------






@dataclass(frozen=True)
class Orientation:
    """How to turn stored frames upright, from the stream's display matrix.

    Applied as: optional transpose of (H, W), then optional flips of rows and columns.
    ``rotation``/``mirrored`` describe the same operation as ``np.rot90(x, rotation // 90)``
    followed by a left-right mirror when ``mirrored``.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0
    mirrored: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, C) -> (N, H', W', C) upright (a view when possible)."""
        if self.transpose:
            frames = frames.transpose(0, 2, 1, 3)
        if self.flip_rows:
            frames = frames[:, ::-1]
        if self.flip_cols:
            frames = frames[:, :, ::-1]
        return frames

    @classmethod
    def from_display_matrix(cls, matrix: np.ndarray | None) -> Orientation:
        """Parse FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point), or None.

        FFmpeg maps a source point (p, q) (p rightwards, q downwards) to
        ``(p', q') = (a p + c q, b p + d q)`` with ``a, b, c, d = m[0], m[1], m[3], m[4]``.
        Only multiples of 90 degrees, possibly mirrored, are supported.

        Raises:
            ValueError: an oblique rotation (not a signed permutation).
        """
        if matrix is None:
            return cls()
        a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
        if a == b == c == d == 0:  # degenerate: players ignore it, so do we
            return cls()
        big = max(abs(a), abs(b), abs(c), abs(d))  # ignore tilts under ~1 degree, as ffmpeg
        a, b, c, d = (0 if abs(v) * 64 < big else (1 if v > 0 else -1) for v in (a, b, c, d))
        if b == c == 0 and a and d:
            ops = dict(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
        elif a == d == 0 and b and c:
            ops = dict(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
        else:
            raise ValueError(f"display matrix {list(matrix)} is not a multiple of 90 degrees")
        probe = np.arange(6).reshape(1, 2, 3, 1)
        moved = cls(**ops).apply(probe)[0, :, :, 0]
        for k in range(4):
            for mirrored in (False, True):
                candidate = np.rot90(probe[0, :, :, 0], k)
                candidate = np.fliplr(candidate) if mirrored else candidate
                if candidate.shape == moved.shape and np.array_equal(candidate, moved):
                    return cls(**ops, rotation=90 * k, mirrored=mirrored)
        raise AssertionError("unreachable: the 8 dihedral operations cover every case")


# -- probing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    path: Path
    container: str
    codec: str
    pix_fmt: str
    stream_index: int
    width: int
    height: int
    time_base: Fraction
    rel_ticks: np.ndarray  # (N,) int64, sorted, relative to the first frame
    reordered: bool  # packets arrive out of pts order (B-frames)
    orientation: Orientation
    first_frame: np.ndarray  # (H', W', 3) uint8, upright, native size
    plan: FramePlan

    @property
    def display_height(self) -> int:
        return self.width if self.orientation.transpose else self.height

    @property
    def display_width(self) -> int:
        return self.height if self.orientation.transpose else self.width


def _probe(path: Path, fps: Fraction) -> _Probe:
    """Demux every packet of the video stream (reading pts only) and decode frame 0."""
    if not path.exists():
        raise DecodeError("missing", f"{path}: no such file")
    if not path.is_file():
        raise DecodeError("unreadable", f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError("unreadable", f"{path}: empty file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise DecodeError("unreadable", f"{path}: not a readable media file ({one_line(e)})")
    with container:
        fmt = container.format.name
        if fmt in UNREADABLE_FORMATS:
            raise DecodeError("unreadable", f"{path}: not a media file (detected as {fmt!r})")
        stream = _video_stream(container, path)
        ticks: list[int] = []
        n_slots = 0  # frame slots listed, with empty (AVI dropped-frame) and discarded ones
        reordered = False
        first: av.VideoFrame | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # PyAV's end-of-stream flush packet
                n_slots += 1
                if packet.size == 0 or packet.is_discard:
                    continue  # no picture / edit-list pre-roll that the decoder drops
                if packet.is_corrupt:
                    raise DecodeError("decode-error", f"{path}: corrupt packet (truncated file?)")
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise DecodeError("decode-error", f"{path}: packets without timestamps")
                reordered = reordered or (bool(ticks) and pts < ticks[-1])
                ticks.append(pts)
                if first is None:
                    first = next(iter(stream.decode(packet)), None)
            if first is None and ticks:
                first = next(iter(stream.decode(None)), None)
        except av.FFmpegError as e:
            raise DecodeError("decode-error", f"{path}: {one_line(e)}")
        if stream.frames and n_slots < stream.frames:
            raise DecodeError(
                "decode-error",
                f"{path}: the header declares {stream.frames} frames, only {n_slots} are "
                "present (truncated?)",
            )
        if not ticks:
            raise DecodeError("zero-frames", f"{path}: the video stream has no frames")
        if first is None:
            raise DecodeError("decode-error", f"{path}: no frame decodes")
        # Read everything needed from the stream and frame 0 before the container closes.
        declared = stream.average_rate or stream.guessed_rate or stream.base_rate
        time_base = stream.time_base
        codec, stream_index = stream.codec_context.name, stream.index
        pix_fmt, width, height = first.format.name, first.width, first.height
        matrix = _display_matrix(first)
        first_rgb = first.to_ndarray(format="rgb24")  # (H, W, 3)
    if time_base is None or time_base <= 0:
        raise DecodeError("unreadable", f"{path}: the video stream has no time base")
    try:
        orientation = Orientation.from_display_matrix(matrix)
    except ValueError as e:
        raise DecodeError("decode-error", f"{path}: {e}")
    sorted_ticks = np.sort(np.asarray(ticks, dtype=np.int64))
    return _Probe(
        path=path,
        container=fmt,
        codec=codec,
        pix_fmt=pix_fmt,
        stream_index=stream_index,
        width=width,
        height=height,
        time_base=Fraction(time_base),
        rel_ticks=sorted_ticks - sorted_ticks[0],
        reordered=reordered,
        orientation=orientation,
        first_frame=orientation.apply(first_rgb[None])[0],
        plan=plan_frames(ticks, time_base, fps, fallback_fps=declared),
    )


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.VideoStream:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise DecodeError("no-video-stream", f"{path}: no video stream")


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """(9,) int32 display matrix attached to a decoded frame, or None."""
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side_data), dtype="<i4")
    return None


# -- backend choice --------------------------------------------------------------------------


def _open_decord_if_reliable(probe: _Probe) -> tuple[Any, str | None]:
    """(decord VideoReader, None) when decord can be trusted here, else (None, why not)."""
    problem = _static_decord_problem(probe)
    if problem is not None:
        return None, problem
    try:
        from decord import VideoReader, cpu

        reader = VideoReader(str(probe.path), ctx=cpu(0))
        problem = _decord_problem(reader, probe)
    except Exception as e:  # decord raises its own DECORDError and plain RuntimeErrors
        return None, f"decord failed: {one_line(e)}"
    return (reader, None) if problem is None else (None, problem)


def _static_decord_problem(probe: _Probe) -> str | None:
    """Reasons known from the probe alone not to use decord."""
    if not probe.orientation.is_identity:
        return "display matrix (rotation/flip) is applied by us, not by decord"
    if probe.container == "avi" and probe.reordered:
        return "AVI with B-frames: decord's timestamps and random access are wrong there"
    if probe.pix_fmt not in DECORD_PIX_FMTS:
        return f"pixel format {probe.pix_fmt} is converted differently by decord"
    return None


def _decord_problem(reader: Any, probe: _Probe) -> str | None:
    """Compare decord's view of the file with the demuxed truth; None when they agree."""
    n = probe.plan.n_source_frames
    if len(reader) != n:
        return f"decord counts {len(reader)} frames, the demuxer {n}"
    stamps = reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)  # (N,) s
    stamps -= stamps[0]
    truth = probe.rel_ticks.astype(np.float64) * float(probe.time_base)  # (N,) s
    deltas = np.diff(truth)
    min_delta = float(deltas[deltas > 0].min()) if (deltas > 0).any() else 1.0
    tolerance = min(1e-3, min_delta / 4) + 1e-6 * np.abs(truth)  # decord stores float32
    if not np.all(np.abs(stamps - truth) <= tolerance):
        worst = float(np.abs(stamps - truth).max())
        return f"decord timestamps disagree with the demuxed pts (by up to {worst:.3g} s)"
    frame0 = reader[0].asnumpy()
    reader.seek(0)
    if frame0.shape != probe.first_frame.shape or not np.array_equal(frame0, probe.first_frame):
        return f"decord's frame 0 {frame0.shape} differs from PyAV's {probe.first_frame.shape}"
    return None


# -- backends --------------------------------------------------------------------------------


def _iter_decord(
    reader: Any, probe: _Probe, chunk_frames: int, transform: Transform
) -> Iterator[np.ndarray]:
    """Yield (t, H, W, 3) chunks of planned frames, fetched with decord's get_batch."""
    src = probe.plan.src_index
    for k0 in range(0, src.shape[0], chunk_frames):
        wanted = src[k0 : k0 + chunk_frames]  # (t,) non-decreasing
        unique, inverse = np.unique(wanted, return_inverse=True)
        try:
            batch = reader.get_batch(unique.tolist()).asnumpy()  # (u, H, W, 3)
        except Exception as e:
            raise DecodeError("decode-error", f"{probe.path}: decord: {one_line(e)}")
        if batch.shape[1:] != probe.first_frame.shape:
            raise DecodeError("decode-error", f"{probe.path}: decord frame shape {batch.shape}")
        yield transform(batch)[inverse]


def _iter_pyav(probe: _Probe, chunk_frames: int, transform: Transform) -> Iterator[np.ndarray]:
    """Decode every frame sequentially, yield (t, H, W, 3) chunks of the planned ones."""
    src = probe.plan.src_index  # (T,) non-decreasing
    n_out = src.shape[0]
    chunk = ChunkBuilder(transform)
    k = 0
    n_decoded = 0
    with _open(probe.path) as container:
        stream = next(s for s in container.streams if s.index == probe.stream_index)
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                j, n_decoded = n_decoded, n_decoded + 1
                if k >= n_out or src[k] != j:
                    continue
                image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                while k < n_out and src[k] == j:  # j shown at steps k .. end - 1
                    end = k + 1
                    while end < n_out and src[end] == j and chunk.size + end - k < chunk_frames:
                        end += 1
                    chunk.add(image, end - k)
                    k = end
                    if chunk.size == chunk_frames:
                        yield chunk.take()
        except av.FFmpegError as e:
            raise DecodeError("decode-error", f"{probe.path}: frame {n_decoded}: {one_line(e)}")
    if n_decoded != probe.plan.n_source_frames:
        raise DecodeError(
            "decode-error",
            f"{probe.path}: decoded {n_decoded} frames, the container has "
            f"{probe.plan.n_source_frames} (truncated or corrupt)",
        )
    if chunk.size:
        yield chunk.take()




def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.FFmpegError as e:  # it opened a moment ago: changed under us
        raise DecodeError("unreadable", f"{path}: {one_line(e)}")


# -- small helpers ---------------------------------------------------------------------------


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


