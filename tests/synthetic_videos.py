"""Write small test videos with PyAV whose frame index is readable back from the pixels.

Each frame shows a 4x4 grid of black/white cells: six fixed marker cells (they fail to match
under any rotation, flip or transpose of the picture) and ten cells giving the source frame
index in binary (0..1023). Cells are big enough to survive lossy compression, chroma
subsampling and resizing, so ``read_index(decoded_frame)`` recovers which source frame a
decoder returned, and returns -1 for a frame that is not upright.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4
MARKERS = {(0, 0): 1, (0, 1): 1, (1, 0): 0, (0, 3): 0, (3, 0): 0, (3, 3): 0}
"""Fixed cells (row, col) -> 1 white / 0 black; no dihedral transform maps them to themselves."""
DATA_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in MARKERS]
MAX_INDEX = 2 ** len(DATA_CELLS) - 1


def draw_index(index: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 picture of the code for ``index`` (upright)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be in 0..{MAX_INDEX}, got {index}")
    cells = np.zeros((GRID, GRID), dtype=np.uint8)
    for (r, c), bit in MARKERS.items():
        cells[r, c] = bit
    for i, (r, c) in enumerate(DATA_CELLS):
        cells[r, c] = (index >> i) & 1
    rows = (np.arange(height) * GRID) // height  # (H,) cell row of each pixel row
    cols = (np.arange(width) * GRID) // width  # (W,)
    picture = cells[rows][:, cols] * np.uint8(255)  # (H, W)
    return np.repeat(picture[:, :, None], 3, axis=2)


def read_index(image: np.ndarray) -> int:
    """Index coded in an (H, W, 3) picture, or -1 when the markers do not match (not upright)."""
    h, w = image.shape[:2]
    gray = image.astype(np.float64).mean(axis=2)  # (H, W)

    def bit(r: int, c: int) -> int:
        top, bottom = (4 * r + 1) * h // (4 * GRID), (4 * r + 3) * h // (4 * GRID)
        left, right = (4 * c + 1) * w // (4 * GRID), (4 * c + 3) * w // (4 * GRID)
        return int(gray[top:bottom, left:right].mean() > 127.5)  # centre half of the cell

    if any(bit(r, c) != v for (r, c), v in MARKERS.items()):
        return -1
    return sum(bit(r, c) << i for i, (r, c) in enumerate(DATA_CELLS))


def read_indices(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (T,) int64 coded indices (-1 where not upright)."""
    return np.array([read_index(f) for f in frames], dtype=np.int64)


@dataclass(frozen=True)
class WrittenVideo:
    """A synthetic video and what was written into it."""

    path: Path
    pts_ticks: tuple[int, ...]
    """Timestamps given to the encoder, one per frame in frame-index order."""
    time_base: Fraction
    width: int
    """Displayed (upright) width."""
    height: int


def write_video(
    path: Path,
    n_frames: int,
    *,
    codec: str = "libx264",
    width: int = 96,
    height: int = 64,
    rate: Fraction | int = 25,
    pts_ticks: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    start_ticks: int = 0,
    max_b_frames: int | None = None,
    gop_size: int | None = 12,
    rotation: int = 0,
    hflip: bool = False,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> WrittenVideo:
    """Write ``n_frames`` coded frames (frame i shows index i) and return what was written.

    ``width``/``height`` are the *displayed* size. With ``rotation`` (degrees
    counter-clockwise, a multiple of 90) and ``hflip`` a display matrix is written and the
    stored pictures are the inverse-transformed ones, so a player that honours the matrix
    shows the code upright. ``pts_ticks`` (in ``time_base``, default ``1/rate``) gives
    explicit, possibly irregular, timestamps; default ``start_ticks + i``.
    """
    rate = Fraction(rate)
    time_base = Fraction(time_base) if time_base is not None else 1 / rate
    ticks = list(pts_ticks) if pts_ticks is not None else [start_ticks + i for i in range(n_frames)]
    if len(ticks) != n_frames:
        raise ValueError("need one timestamp per frame")
    k = (rotation // 90) % 4
    stored_w, stored_h = (height, width) if k % 2 else (width, height)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        stream.codec_context.time_base = time_base
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i, tick in enumerate(ticks):
            upright = draw_index(i, height, width)
            stored = np.rot90(np.fliplr(upright) if hflip else upright, -k)  # display^-1
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
            frame.pts, frame.time_base = tick, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return WrittenVideo(
        path=Path(path),
        pts_ticks=tuple(ticks),
        time_base=time_base,
        width=width,
        height=height,
    )


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """A WAV file with one silent audio stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        container.mux(stream.encode(_silence(int(8000 * seconds))))
        container.mux(stream.encode(None))
    return Path(path)


def write_no_frames(path: Path) -> Path:
    """A Matroska file (name it .mkv) with a frameless video stream beside a short audio one.

    (The MP4 muxer drops an empty track, and a file without any packet is not written.)
    """
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        container.mux(audio.encode(_silence(800)))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return Path(path)


def _silence(samples: int) -> av.AudioFrame:
    """Mono 8 kHz s16 silence starting at pts 0."""
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, 0
    return frame
