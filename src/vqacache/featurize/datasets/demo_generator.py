"""Generate the ``demo`` dataset: short clips of coloured shapes, and questions about them.

Everything is derived from a fixed seed, so two generations write the same bytes with the
same PyAV/FFmpeg build. Three things make the encode reproducible: a single-threaded encoder
without x264's macroblock-tree rate control (see :func:`encode_clip`), RGB -> YUV
conversion in integer numpy (not swscale), and bit-exact muxing (no library version
strings). Another FFmpeg build may encode differently, but it is fed the same YUV frames.

Each clip shows 2-5 shapes (four clips each) (circle, square or triangle, each in a different named colour)
moving in straight lines and bouncing off the borders of a plain background:

* exactly one shape is visible in the first frame (shape 0, appearing at t = 0);
* the others appear one after another, at least 0.4 s apart;
* every shape but one (the *survivor*) disappears again at least 0.5 s before the end, after
  being visible for at least 0.6 s, so exactly one shape is visible in the last frame. The
  survivor is shape 0 in clips 0, 5, 10 and 15 and a later shape in the others.

Four multiple-choice questions per clip (five candidates each) depend on those moments:

=============  =====================================================  ==================
qtype          question                                               answer
=============  =====================================================  ==================
start-colour   What colour is the shape at the start of the video?    colour of shape 0
after          What appears right after the <colour> <kind>?          the next shape
count          How many shapes appear in the video?                   number of shapes
end-shape      Which shape is still there at the end of the video?    the survivor
=============  =====================================================  ==================

Clips differ in native frame rate (30, 29.97, 25, 24, 20, 15, 12, 10 and 6 fps, so a 7.5 fps
sampler has to repeat frames on the 6 fps ones), size (160x120 to 320x240) and duration
(2-4 s). The first 12 clips form the ``train`` split, the last 4 the ``val`` split.

Files written into the output folder::

    clip00.mp4 ... clip15.mp4   H.264 (libx264) if available, else MPEG-4 Part 2
    questions.json              {"format": ..., "version": 1, "questions": [...]}
    scenes.json                 the ground-truth timeline of every clip (shapes, times, motion)
    manifest.json               generator name and version, codec, sha256 of every file; last
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

GENERATOR = "vqacache.demo"
GENERATOR_VERSION = 1
"""Bump whenever the clips, questions or file layout change; stale folders are regenerated."""
SEED = 2024

MANIFEST = "manifest.json"
QUESTIONS = "questions.json"
SCENES = "scenes.json"
QUESTIONS_FORMAT = "vqacache-demo-questions"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (140, 50, 180),
    "orange": (250, 130, 20),
}
KINDS = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "light grey": (190, 190, 190),
    "dark grey": (60, 60, 60),
}
N_CANDIDATES = 5
COUNT_CANDIDATES = ("1", "2", "3", "4", "5")
QTYPES = ("start-colour", "after", "count", "end-shape")

# (fps, (width, height)) per clip; the first N_TRAIN clips are train, the rest val.
CLIP_FORMATS: tuple[tuple[Fraction, tuple[int, int]], ...] = (
    (Fraction(30), (320, 240)),
    (Fraction(25), (160, 120)),
    (Fraction(15), (240, 180)),
    (Fraction(6), (320, 240)),
    (Fraction(24), (224, 168)),
    (Fraction(30000, 1001), (320, 240)),
    (Fraction(12), (160, 120)),
    (Fraction(10), (240, 180)),
    (Fraction(30), (160, 120)),
    (Fraction(25), (320, 240)),
    (Fraction(20), (224, 168)),
    (Fraction(15), (320, 240)),
    (Fraction(30), (240, 180)),
    (Fraction(25), (224, 168)),
    (Fraction(15), (160, 120)),
    (Fraction(6), (240, 180)),
)
N_TRAIN = 12

DURATIONS = (2.0, 2.5, 3.0, 3.5, 4.0)  # seconds; the clip's is drawn from those long enough
# Timeline constraints (seconds); see the module docstring.
FIRST_GAP = 0.4  # shape 0 alone at least this long
MIN_GAP = 0.4  # between two appearances
MIN_VISIBLE = 0.6  # a shape that disappears is visible at least this long
END_MARGIN = 0.5  # every non-survivor is gone this long before the end


@dataclass(frozen=True)
class Shape:
    """One shape of a clip: what it is, when it is visible and how it moves.

    The centre at time ``t`` is ``(x0 + vx * t, y0 + vy * t)`` reflected into the frame so
    that the whole shape stays inside it (see :meth:`Clip.centre`).
    """

    kind: str
    colour: str
    appear: float
    disappear: float | None  # None: visible until the end
    x0: float
    y0: float
    vx: float  # pixels per second
    vy: float

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"

    def visible(self, t: float) -> bool:
        return self.appear <= t and (self.disappear is None or t < self.disappear)


@dataclass(frozen=True)
class Clip:
    """Ground truth of one generated clip; frame ``i`` is shown at ``i / fps`` seconds."""

    video_id: str
    split: str
    fps: Fraction
    width: int
    height: int
    n_frames: int
    background: str
    radius: int  # half the size of every shape, in pixels
    shapes: tuple[Shape, ...]  # in order of appearance

    @property
    def duration(self) -> float:
        return self.n_frames / float(self.fps)

    def frame_time(self, index: int) -> float:
        return float(index / self.fps)

    def visible(self, t: float) -> list[Shape]:
        return [s for s in self.shapes if s.visible(t)]

    def centre(self, shape: Shape, t: float) -> tuple[int, int]:
        """Pixel centre of ``shape`` at time ``t`` (column, row)."""
        x = _bounce(shape.x0 + shape.vx * t, self.radius, self.width - 1 - self.radius)
        y = _bounce(shape.y0 + shape.vy * t, self.radius, self.height - 1 - self.radius)
        return math.floor(x + 0.5), math.floor(y + 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "split": self.split,
            "fps": str(self.fps),
            "width": self.width,
            "height": self.height,
            "n_frames": self.n_frames,
            "duration": self.duration,
            "background": self.background,
            "radius": self.radius,
            "shapes": [vars(s) for s in self.shapes],
        }


def _bounce(p: float, lo: float, hi: float) -> float:
    """Reflect ``p`` into ``[lo, hi]`` as a point bouncing between two walls would be."""
    span = hi - lo
    u = (p - lo) % (2 * span)
    return lo + (2 * span - u if u > span else u)


# -- scenes ---------------------------------------------------------------------------------


def _appear_times(rng: random.Random, n: int, duration: float) -> list[float]:
    """Appearance times of shapes 1..n-1: evenly spread over the allowed window."""
    lo, hi = FIRST_GAP, duration - END_MARGIN - MIN_VISIBLE
    if n == 2:
        return [round(rng.uniform(lo, hi), 2)]
    step = (hi - lo) / (n - 2)
    return [round(lo + k * step, 2) for k in range(n - 1)]


def _max_shapes(duration: float) -> int:
    window = duration - END_MARGIN - MIN_VISIBLE - FIRST_GAP
    return min(len(COUNT_CANDIDATES), 2 + math.floor(window / MIN_GAP + 1e-9))


def make_clip(index: int) -> Clip:
    """The ground truth of clip ``index`` (0-based), derived from ``SEED`` and ``index`` only."""
    rng = random.Random(SEED * 1000 + index)
    fps, (width, height) = CLIP_FORMATS[index]
    n = 2 + index % 4  # 2, 3, 4, 5 shapes, four clips each: balanced "count" answers
    duration = rng.choice([d for d in DURATIONS if _max_shapes(d) >= n])
    n_frames = round(duration * fps)
    duration = n_frames / float(fps)  # whole frames
    assert _max_shapes(duration) >= n, f"clip {index}: {n} shapes do not fit in {duration} s"
    radius = round(min(width, height) * 0.11)
    appear = [0.0, *_appear_times(rng, n, duration)]
    survivor = 0 if index % 5 == 0 else rng.randrange(1, n)  # mostly not the first shape
    colours = rng.sample(sorted(COLOURS), n)
    shapes = []
    for i in range(n):
        disappear = None
        if i != survivor:
            disappear = round(rng.uniform(appear[i] + MIN_VISIBLE, duration - END_MARGIN), 2)
        speed = rng.uniform(0.3, 0.8) * width  # pixels per second
        angle = rng.uniform(0.0, 2.0 * math.pi)
        shapes.append(
            Shape(
                kind=rng.choice(KINDS),
                colour=colours[i],
                appear=appear[i],
                disappear=disappear,
                x0=round(rng.uniform(radius, width - 1 - radius), 1),
                y0=round(rng.uniform(radius, height - 1 - radius), 1),
                vx=round(speed * math.cos(angle), 1),
                vy=round(speed * math.sin(angle), 1),
            )
        )
    return Clip(
        video_id=f"clip{index:02d}",
        split="train" if index < N_TRAIN else "val",
        fps=fps,
        width=width,
        height=height,
        n_frames=n_frames,
        background=rng.choice(sorted(BACKGROUNDS)),
        radius=radius,
        shapes=tuple(shapes),
    )


def demo_clips() -> list[Clip]:
    """Ground truth of every demo clip, in id order."""
    return [make_clip(i) for i in range(len(CLIP_FORMATS))]


# -- questions ------------------------------------------------------------------------------


def _mc(
    rng: random.Random, answer: str, hard: list[str], pool: list[str]
) -> tuple[list[str], int]:
    """Five unique shuffled candidates: ``answer``, distractors from ``hard``, then ``pool``."""
    distractors = [c for c in dict.fromkeys(hard) if c != answer]
    rng.shuffle(distractors)
    rest = [c for c in pool if c != answer and c not in distractors]
    distractors += rng.sample(rest, max(0, N_CANDIDATES - 1 - len(distractors)))
    candidates = [answer, *distractors[: N_CANDIDATES - 1]]
    rng.shuffle(candidates)
    return candidates, candidates.index(answer)


def clip_questions(clip: Clip) -> list[dict[str, Any]]:
    """The four questions about ``clip`` (see the module docstring), as JSON-ready dicts."""
    rng = random.Random(f"{SEED}-{clip.video_id}-questions")
    labels = [s.label for s in clip.shapes]
    all_labels = [f"{c} {k}" for c in sorted(COLOURS) for k in KINDS]
    first = clip.visible(0.0)
    last = clip.visible(clip.frame_time(clip.n_frames - 1))
    assert len(first) == 1 and len(last) == 1, f"{clip.video_id}: scene constraints broken"
    anchor = rng.randrange(len(clip.shapes) - 1)
    after = clip.shapes[anchor + 1]

    qs: list[tuple[str, str, list[str], int]] = []
    cands, ans = _mc(rng, first[0].colour, [], sorted(COLOURS))
    qs.append(("start-colour", "What colour is the shape at the start of the video?", cands, ans))
    hard = [lab for lab in labels if lab != clip.shapes[anchor].label]
    cands, ans = _mc(rng, after.label, hard, all_labels)
    qs.append(("after", f"What appears right after the {clip.shapes[anchor].label}?", cands, ans))
    cands, ans = list(COUNT_CANDIDATES), COUNT_CANDIDATES.index(str(len(clip.shapes)))
    qs.append(("count", "How many shapes appear in the video?", cands, ans))
    cands, ans = _mc(rng, last[0].label, labels, all_labels)
    qs.append(("end-shape", "Which shape is still there at the end of the video?", cands, ans))

    return [
        {
            "qid": f"{clip.video_id}_{qtype}",
            "video_id": clip.video_id,
            "split": clip.split,
            "qtype": qtype,
            "question": question,
            "candidates": candidates,
            "answer": answer,
        }
        for qtype, question, candidates, answer in qs
    ]


# -- rendering and encoding -----------------------------------------------------------------


@functools.cache
def _mask(kind: str, radius: int) -> np.ndarray:
    """Boolean mask of a shape, ``(2r+1, 2r+1)``, centred (cached; do not modify)."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    if kind == "circle":
        return x * x + y * y <= radius * radius
    if kind == "square":
        return np.ones_like(x, dtype=bool)
    if kind == "triangle":  # apex up, base at the bottom row
        return np.abs(x) <= (y + radius) / 2
    raise ValueError(f"unknown shape kind {kind!r}")


def render_frame(clip: Clip, index: int) -> np.ndarray:
    """RGB frame ``index`` of ``clip``, ``(H, W, 3)`` uint8; later shapes are drawn on top."""
    t = clip.frame_time(index)
    frame = np.empty((clip.height, clip.width, 3), dtype=np.uint8)
    frame[:] = BACKGROUNDS[clip.background]
    r = clip.radius
    for shape in clip.visible(t):
        cx, cy = clip.centre(shape, t)
        window = frame[cy - r : cy + r + 1, cx - r : cx + r + 1]  # (2r+1, 2r+1, 3)
        window[_mask(shape.kind, r)] = COLOURS[shape.colour]
    return frame


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range conversion, ``(H, W, 3)`` uint8 -> ``(H * 3 // 2, W)`` planar.

    Done in integer numpy rather than by FFmpeg's swscale (whose SIMD paths are not
    bit-exact across CPUs), so the encoder's input is defined by this code alone. Chroma
    is computed from the mean colour of each 2x2 block.
    """
    h, w, _ = rgb.shape
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))  # (H, W) each
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    r4, g4, b4 = (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2] for p in (r, g, b))
    u = ((-38 * r4 - 74 * g4 + 112 * b4 + 512) >> 10) + 128  # (H/2, W/2), r4 = 4 x mean
    v = ((112 * r4 - 94 * g4 - 18 * b4 + 512) >> 10) + 128
    planes = [y.reshape(-1), u.reshape(-1), v.reshape(-1)]
    return np.concatenate(planes).astype(np.uint8).reshape(h * 3 // 2, w)


def pick_codec() -> str:
    """``"libx264"`` when the bundled FFmpeg has it, else ``"mpeg4"``."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_clip(clip: Clip, path: Path, codec: str) -> None:
    """Write ``clip`` to ``path`` (MP4) deterministically: one thread, bit-exact muxing."""
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=clip.fps)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.thread_count = 1
        stream.codec_context.gop_size = max(1, round(2 * clip.fps))  # a keyframe every ~2 s
        if codec == "libx264":
            # mbtree off: with it, x264 (core 165) wrote a different bitstream for the same
            # frames in about 1 of 150 encodes (same decoded frames); without it, in none of
            # 1,280. One thread: multi-threaded x264 is not deterministic.
            x264 = {"preset": "veryfast", "crf": "18", "threads": "1", "x264-params": "mbtree=0"}
            stream.options = x264
        else:
            stream.bit_rate = 2_000_000
        for i in range(clip.n_frames):
            yuv = rgb_to_yuv420p(render_frame(clip, i))  # (H * 3/2, W)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i  # in the codec time base, 1 / fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# -- the whole folder -----------------------------------------------------------------------


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate_demo(root: Path, *, codec: str | None = None) -> None:
    """Write the demo clips, ``questions.json``, ``scenes.json`` and (last) ``manifest.json``.

    ``root`` is created if needed; existing files of the same names are overwritten.
    ``codec`` (``"libx264"`` or ``"mpeg4"``) defaults to :func:`pick_codec`.
    """
    codec = codec or pick_codec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clips = demo_clips()
    names = []
    for clip in clips:
        encode_clip(clip, root / f"{clip.video_id}.mp4", codec)
        names.append(f"{clip.video_id}.mp4")
    questions = [q for clip in clips for q in clip_questions(clip)]
    payload = {"format": QUESTIONS_FORMAT, "version": 1, "questions": questions}
    _write_json(root / QUESTIONS, payload)
    _write_json(root / SCENES, {"clips": [clip.to_dict() for clip in clips]})
    names += [QUESTIONS, SCENES]
    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": SEED,
        "codec": codec,
        "av_version": av.__version__,
        "files": {name: _sha256(root / name) for name in names},
    }
    _write_json(root / MANIFEST, manifest)
