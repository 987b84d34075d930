"""``vqa-cache plot``: the plotted values are the stored ones.

The figure's artists are read back: each candidate's line holds exactly the stored teacher
probabilities at the stored teacher times; the causal markers are the teacher frames whose
probability of the correct answer exceeds the run's threshold (recomputed here with a loop);
each thumbnail is the decoded frame nearest its time (the synthetic video draws its frame index).

Mutations tried (each makes a test here fail):
1. candidate c's line drawn from column c + 1 -> test_plot_values_are_the_stored_ones;
2. causal threshold a fixed 0.5 instead of the run's -> same test (run threshold 0.2);
3. thumbnail times not made relative to the first frame -> test_thumbnails_are_the_nearest_frames.
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_videos import read_index, write_video  # noqa: E402

from vqacache.cli.cache import app  # noqa: E402
from vqacache.cli.plot import render, timeline  # noqa: E402
from vqacache.heads.synthetic import make_temporal_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    return make_temporal_store(root / "t.zarr", splits={"train": 2}, n_frames=12, dim=8, n_patches=2)


def _artist(fig, gid):
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


def test_plot_values_are_the_stored_ones(store, tmp_path):
    qid = store.questions("train")[0]
    q = store.read_question(qid)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "sparc", "args": {"threshold": 0.2}}))
    t = timeline(store, q.video_id, qid, run_dir=run)
    fig = render(t, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for c in range(q.imageqa.shape[1]):
        (line,) = _artist(fig, f"candidate-{c}")
        assert np.array_equal(line.get_xdata(), q.imageqa_pts) and np.array_equal(line.get_ydata(), q.imageqa[:, c])
        assert line.get_linewidth() == (2.5 if c == q.answer else 1.0)
    expected = [float(q.imageqa_pts[k]) for k in range(len(q.imageqa_pts)) if q.imageqa[k, q.answer] > 0.2]
    (causal,) = _artist(fig, "causal")
    assert list(causal.get_xdata()) == expected and 0 < len(expected) < len(q.imageqa_pts)
    (ticks,) = _artist(fig, "store-frames")
    assert len(ticks.get_segments()) == len(store.read_video(q.video_id).pts)


def test_thumbnails_are_the_nearest_frames(store, tmp_path):
    video_id = store.complete_videos()[0]
    pts = store.read_video(video_id).pts
    written = write_video(tmp_path / "v.mp4", 30, rate=Fraction(15, 2), start_ticks=5)  # starts at 0.67 s
    t = timeline(store, video_id, video_file=written.path if hasattr(written, "path") else tmp_path / "v.mp4",
                 n_thumbnails=4)
    targets = np.linspace(pts[0], pts[-1], 4)
    assert [round(time, 6) for time, _ in t.thumbnails] == [round(float(np.round(x * 7.5) / 7.5), 6) for x in targets]
    assert [read_index(image) for _, image in t.thumbnails] == [int(np.round(x * 7.5)) for x in targets]
    render(t, tmp_path / "thumbs.png")


def test_cli(store, tmp_path):
    qid = store.questions("train")[0]
    video_id = store.read_question(qid).video_id
    runner = CliRunner()
    ok = runner.invoke(app, ["plot", str(store.path), "--video", video_id, "--question", qid,
                             "--out", str(tmp_path / "p.png")])
    assert ok.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000, ok.output
    for args, needle in [
        (["--video", "nope"], "--video 'nope'"),
        (["--video", video_id, "--question", "nope"], "--question 'nope'"),
        (["--video", video_id, "--run", str(tmp_path)], "--run"),
    ]:
        res = runner.invoke(app, ["plot", str(store.path), *args, "--out", str(tmp_path / "x.png")])
        assert res.exit_code == 2 and needle in res.output and res.output.count("error:") == 1, res.output
    res = runner.invoke(app, ["plot", str(store.path), "--video", video_id, "--out", str(tmp_path / "x.jpg")])
    assert res.exit_code == 2 and ".png" in res.output
