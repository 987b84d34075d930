"""``vqa-cache plot``: a PNG timeline of one video (what :func:`timeline` gathers, :func:`render` draws).

Rows, top to bottom (each only when its data is at hand):

1. thumbnails of the video file (``--video-file``) at evenly spread times over the store's
   frames, each the decoded frame nearest its time;
2. the image-QA teacher's per-frame probability of each candidate for the question (one line
   per candidate, the correct one thick), with the question's segment shaded;
3. the store's frames as ticks on the time axis, and, given a training run (``--run``) and a
   question, the frames its model picks for that question, one marker row per kind of pick:
   VideoDistill's top-K, VLAP's per-segment choice, SpARC's causal set (and its backbone's
   top-K). Runs do not record picks: they are recomputed from the run's checkpoint by
   :func:`vqacache.heads.sampler_picks.sampler_picks` (the model in eval mode on the
   question's batch from this store).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqacache.cache_spec.errors import NotComplete, UsageError
from vqacache.cache_spec.store import FeatureStore
from vqacache.heads.sampler_picks import FramePick, run_checkpoint, sampler_picks

PICK_STYLES = (("o", "tab:red"), ("v", "tab:blue"), ("s", "tab:green"), ("D", "tab:purple"))
"""(marker, colour) of each kind of pick, in the order the run's method gives them."""


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
    picks: list[FramePick] = field(default_factory=list)  # the run's picks (rows, times) for the question
    model_pts: np.ndarray | None = None  # (n,) times of the frames the run's model reads for the question
    thumbnails: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (time, (H, W, 3) uint8)
    notes: list[str] = field(default_factory=list)


def timeline(store: FeatureStore, video_id: str, qid: str | None = None, run_dir: Path | None = None,
             video_file: Path | None = None, n_thumbnails: int = 8) -> Timeline:
    """Gather the data of one video's timeline (see the module docstring). Flags are checked
    before the video file is decoded."""
    if not store.is_complete(video_id):
        raise NotComplete(f"--video {video_id!r} is not complete in {store.path}")
    config = _run_config(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_checkpoint(run_dir)  # one line naming --run when it has none, before any work
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
    if config is not None and run_dir is not None:
        if t.qid is None:
            t.notes.append("the run's picks are per question: give --question")
        else:
            picks = sampler_picks(store, t.qid, run_dir, config)
            t.picks = picks.picks
            if len(picks.frame_rows):
                t.model_pts = t.pts[picks.frame_rows]
            t.notes += picks.notes + [f"{p.label}: frames {', '.join(map(str, p.rows.tolist()))}" for p in picks.picks]
    if video_file is not None:
        t.thumbnails = thumbnails(Path(video_file), t.pts, n_thumbnails)
    return t


def _run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--run {run_dir}: no readable config.json ({exc.__class__.__name__})") from None


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
    frames_height = 0.6 + 0.3 * len(t.picks)
    height = 2.2 * (rows - 1) + 1.2 * frames_height + 0.6 + 0.13 * len(t.notes)  # inches
    fig = plt.figure(figsize=(12, height))
    grid = fig.add_gridspec(rows, max(n_thumbs, 1), height_ratios=([1.0] if n_thumbs else []) + [2.0, frames_height],
                            bottom=(0.55 + 0.13 * len(t.notes)) / height, top=1 - 0.45 / height,
                            right=0.75 if t.picks or t.model_pts is not None else 0.97, left=0.06)
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
    else:  # say so where the lines would be, not only in the notes
        probs.text(0.5, 0.5, "no image-QA teacher probabilities in this store (vqa-featurize --imageqa)",
                   transform=probs.transAxes, ha="center", va="center", color="0.4", fontsize=9)
    probs.set_ylabel("p(candidate)")
    start, end = t.segment
    if start is not None or end is not None:
        lo = float(t.pts[0]) if start is None else start
        hi = float(t.pts[-1]) if end is None else end
        for ax in (probs, frames):
            ax.axvspan(lo, hi, color="0.9", zorder=0)
    frames.vlines(t.pts, 0, 1, color="0.6", lw=0.5, gid="store-frames")
    if t.model_pts is not None:
        frames.plot(t.model_pts, np.full(len(t.model_pts), 0.04), "|", color="0.3", ms=8, ls="none",
                    label="frames the model reads", gid="model-frames")
    for i, pick in enumerate(t.picks):  # one row of markers per kind, top to bottom
        marker, colour = PICK_STYLES[i % len(PICK_STYLES)]
        y = 1 - (i + 1) / (len(t.picks) + 1)
        frames.plot(pick.pts, np.full(len(pick.pts), y), marker, color=colour, ms=7, ls="none", label=textwrap.fill(pick.label, 36),
                    gid=f"pick-{i}")
        times, counts = np.unique(np.asarray(pick.pts, np.float64), return_counts=True)
        for time, count in zip(times[counts > 1], counts[counts > 1]):  # a frame several of the K rows chose
            frames.annotate(f"x{count}", (time, y), xytext=(5, 4), textcoords="offset points", fontsize=7, color=colour)
    if t.picks or t.model_pts is not None:
        frames.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
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
