"""``vqa-cache plot``: a PNG timeline of one video (what :func:`timeline` gathers, :func:`render` draws).

Rows, top to bottom (each only when its data is at hand):

1. thumbnails of the video file (``--video-file``) at evenly spread times over the store's
   frames, each the decoded frame nearest its time;
2. the image-QA teacher's per-frame probability of each candidate for the question (one line
   per candidate, the correct one thick), with the question's segment shaded;
3. the store's frames as ticks on the time axis, and, given a SpARC training run (``--run``), its
   causal set: the teacher frames whose probability of the correct answer exceeds the run's
   threshold (``causal_set``, computed from the stored probabilities as the run does).

Training runs do not record which frames a sampler picked (VideoDistill's top-K, VLAP's
per-segment choice), so those are not drawn; the PNG says so when a run of such a method is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqacache.cache_spec.errors import NotComplete, UsageError
from vqacache.cache_spec.store import FeatureStore

SAMPLER_METHODS = ("videodistill", "vlap", "siasamrea", "mcg")
"""Methods whose frame picks are made inside the model and not recorded by a run."""


@dataclass
class Timeline:
    """What one timeline shows; arrays are what the store holds (float64 for plotting)."""

    video_id: str
    pts: np.ndarray  # (T,) the store's frame times
    qid: str | None = None
    question: str = ""
    candidates: list[str] = field(default_factory=list)
    answer: int | None = None
    segment: tuple[float | None, float | None] = (None, None)
    teacher_pts: np.ndarray | None = None  # (F,)
    teacher: np.ndarray | None = None  # (F, C)
    causal_pts: np.ndarray | None = None  # (k,) SpARC's causal frames' times
    thumbnails: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (time, (H, W, 3) uint8)
    notes: list[str] = field(default_factory=list)


def timeline(store: FeatureStore, video_id: str, qid: str | None = None, run_dir: Path | None = None,
             video_file: Path | None = None, n_thumbnails: int = 8) -> Timeline:
    """Gather the data of one video's timeline (see the module docstring). Flags are checked
    before the video file is decoded."""
    if not store.is_complete(video_id):
        raise NotComplete(f"--video {video_id!r} is not complete in {store.path}")
    config = _run_config(run_dir) if run_dir is not None else None
    if video_file is not None and not Path(video_file).is_file():
        raise UsageError(f"--video-file {video_file} does not exist")
    t = Timeline(video_id, np.asarray(store.video_arrays(video_id)["pts"][:], dtype=np.float64))
    if qid is not None:
        if qid not in store.questions():
            raise UsageError(f"--question {qid!r} is not in {store.path}")
        q = store.read_question(qid)
        if q.video_id != video_id:
            raise UsageError(f"--question {qid!r} is about video {q.video_id!r}, not {video_id!r}")
        t.qid, t.question, t.candidates = qid, q.question, list(q.candidates)
        t.answer = q.answer if isinstance(q.answer, int) and not isinstance(q.answer, bool) else None
        t.segment = (q.start, q.end)
        if q.imageqa is not None and q.imageqa_index is None:  # multiple choice: one column per candidate
            t.teacher, t.teacher_pts = np.asarray(q.imageqa, np.float64), np.asarray(q.imageqa_pts, np.float64)
        elif q.imageqa is None:
            t.notes.append("no image-QA teacher probabilities in this store")
    if config is not None:
        _run_frames(t, config)
    if video_file is not None:
        t.thumbnails = thumbnails(Path(video_file), t.pts, n_thumbnails)
    return t


def _run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--run {run_dir}: no readable config.json ({exc.__class__.__name__})") from None


def _run_frames(t: Timeline, config: dict) -> None:
    method = str(config.get("method"))
    if method == "sparc":
        if t.teacher is None or t.answer is None:
            t.notes.append("SpARC's causal set needs --question with teacher probabilities and a labelled answer")
            return
        import torch

        from vqacache.heads.methods.sparc import causal_set

        threshold = float((config.get("args") or {}).get("threshold", 0.5))
        teacher = torch.from_numpy(t.teacher)[None]  # (1, F, C)
        valid = torch.ones(1, len(t.teacher_pts), dtype=torch.bool)
        keep = causal_set(teacher, torch.tensor([t.answer]), valid, threshold)[0].numpy()  # (F,)
        t.causal_pts = t.teacher_pts[keep]
        t.notes.append(f"SpARC causal set: p(answer) > {threshold:g} ({int(keep.sum())} of {len(keep)} frames)")
    elif method in SAMPLER_METHODS or (config.get("args") or {}).get("backbone") in SAMPLER_METHODS:
        t.notes.append(f"run {method}: the frames its sampler picked are not recorded by training runs")


def thumbnails(video_file: Path, pts: np.ndarray, n: int) -> list[tuple[float, np.ndarray]]:
    """``n`` (time, RGB image) pairs: the decoded frames nearest ``n`` times evenly spread over
    ``pts`` (times relative to the first frame, as the store's)."""
    import av

    if len(pts) == 0:
        return []
    targets = np.linspace(float(pts[0]), float(pts[-1]), n)
    best: list[tuple[float, float, np.ndarray | None]] = [(np.inf, 0.0, None) for _ in targets]  # (gap, time, image)
    first = None
    with av.open(str(video_file)) as container:
        for frame in container.decode(video=0):
            if frame.time is None:
                continue
            first = frame.time if first is None else first
            time = frame.time - first
            gaps = np.abs(targets - time)
            closer = [i for i, g in enumerate(gaps) if g < best[i][0]]
            if closer:
                image = frame.to_ndarray(format="rgb24")
                for i in closer:
                    best[i] = (float(gaps[i]), float(time), image)
    return [(time, image) for _, time, image in best if image is not None]


def render(t: Timeline, out: Path):
    """Draw ``t`` and save it as a PNG at ``out``; returns the matplotlib figure (closed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_thumbs = len(t.thumbnails)
    rows = (1 if n_thumbs else 0) + 2
    fig = plt.figure(figsize=(12, 2.2 * rows + 0.6 * len(t.notes) / 2))
    grid = fig.add_gridspec(rows, max(n_thumbs, 1), height_ratios=([1.0] if n_thumbs else []) + [2.0, 0.6])
    for i, (time, image) in enumerate(t.thumbnails):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image)
        ax.set_title(f"{time:.2f} s", fontsize=8)
        ax.axis("off")
    top = 1 if n_thumbs else 0
    probs = fig.add_subplot(grid[top, :])
    frames = fig.add_subplot(grid[top + 1, :], sharex=probs)
    probs.set_gid("teacher")
    frames.set_gid("frames")
    if t.teacher is not None:
        for c in range(t.teacher.shape[1]):
            label = t.candidates[c] if c < len(t.candidates) else f"candidate {c}"
            correct = t.answer == c
            probs.plot(t.teacher_pts, t.teacher[:, c], marker=".", lw=2.5 if correct else 1.0,
                       label=("✓ " if correct else "") + label[:40], gid=f"candidate-{c}")
        probs.set_ylim(-0.02, 1.02)
        probs.legend(fontsize=7, loc="upper right")
    probs.set_ylabel("p(candidate)")
    start, end = t.segment
    if start is not None or end is not None:
        lo = float(t.pts[0]) if start is None else start
        hi = float(t.pts[-1]) if end is None else end
        for ax in (probs, frames):
            ax.axvspan(lo, hi, color="0.9", zorder=0)
    frames.vlines(t.pts, 0, 1, color="0.6", lw=0.5, gid="store-frames")
    if t.causal_pts is not None and len(t.causal_pts):
        frames.plot(t.causal_pts, np.full(len(t.causal_pts), 0.5), "o", color="tab:red", label="SpARC causal set",
                    gid="causal")
        frames.legend(fontsize=7, loc="upper right")
    frames.set_yticks([])
    frames.set_xlabel("time (s)")
    title = f"video {t.video_id}: {len(t.pts)} frames"
    if t.qid is not None:
        title += f"; question {t.qid}: {t.question[:80]}"
    fig.suptitle(title, fontsize=10)
    if t.notes:
        fig.text(0.01, 0.005, "\n".join(t.notes), fontsize=7, va="bottom")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return fig
