"""``vqa-cache plot``: the plotted values are the stored ones, the picks are the model's.

The figure's artists are read back: each candidate's line holds exactly the stored teacher
probabilities at the stored teacher times; each thumbnail is the decoded frame nearest its time
(the synthetic video draws its frame index). The run's picks (``heads/sampler_picks.py``) are
checked against tiny runs trained for one epoch on the synthetic store (videodistill with its
VTM head, sparc around videodistill, vlap with random tiny weights): the test builds each
question's batch by hand from the stored arrays (the frame rows by the rules written out here),
loads the checkpoint into a model it builds itself, calls it and compares the picked frames
with those returned and plotted; SpARC's causal set is recomputed with a loop over the stored
teacher probabilities.

Mutations tried (each makes a test here fail):
1. candidate c's line drawn from column c + 1 -> test_plot_values_are_the_stored_ones;
2. causal threshold a fixed 0.5 instead of the run's -> test_sparc_causal_set_and_backbone_top_k (threshold 0.2);
3. thumbnail times not made relative to the first frame -> test_thumbnails_are_the_nearest_frames;
4. ``frame_rows`` returning positions among the model's frames, not store rows -> test_videodistill_top_k;
5. the checkpoint's weights not loaded into the model -> test_videodistill_top_k, test_vlap_per_segment_choice;
6. the model left in training mode (Gumbel noise) -> the three picks tests;
7. VLAP's segment frames drawn at random as in training -> test_vlap_per_segment_choice (its
   frame_rows self-check refuses);
8. picks drawn at their row numbers instead of their times -> every picks test.
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

N_FRAMES = 12
SMALL = {"num_select": 3, "num_layers": 1, "num_heads": 2, "dim": 8}
RUNS = {
    "videodistill": {"num_frames": 8, **SMALL},  # the VTM head (its default)
    "sparc": {"backbone": "videodistill", "threshold": 0.2, **SMALL},  # num_frames 0: the teacher's 12
    "vlap": {"weights": "random", "size": "tiny", "num_frames": 6, "num_select": 2},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    return make_temporal_store(root / "t.zarr", splits={"train": 4, "val": 2}, n_frames=N_FRAMES, dim=8, n_patches=2)


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """One tiny run per method with picks, trained for one epoch."""
    import torch

    from vqacache.heads.train import TrainConfig, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    for method, args in RUNS.items():
        train(TrainConfig(method=method, store=str(store.path), out=str(root / method), epochs=1, batch_size=4,
                          lr=1e-3, args=args))
    return root


def _artist(fig, gid):
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


def test_plot_values_are_the_stored_ones(store, tmp_path):
    qid = store.questions("train")[0]
    q = store.read_question(qid)
    t = timeline(store, q.video_id, qid)
    fig = render(t, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for c in range(q.imageqa.shape[1]):
        (line,) = _artist(fig, f"candidate-{c}")
        assert np.array_equal(line.get_xdata(), q.imageqa_pts) and np.array_equal(line.get_ydata(), q.imageqa[:, c])
        assert line.get_linewidth() == (2.5 if c == q.answer else 1.0)
    (ticks,) = _artist(fig, "store-frames")
    assert len(ticks.get_segments()) == len(store.read_video(q.video_id).pts)


# -- the run's picks: the model called by hand on a batch built by hand --------------------------


def _by_hand(store, qid, rows, run, build):
    """(question, the loaded checkpoint's model, a batch of the question's stored frames ``rows``)."""
    import torch

    q = store.read_question(qid)
    v = store.read_video(q.video_id)
    ckpt = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model = build(ckpt["model_args"], ckpt["dims"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    n, C = len(rows), len(q.candidates)
    batch = {
        "cls": torch.tensor(v.cls[rows], dtype=torch.float32)[None], "patch": torch.tensor(v.patch[rows], dtype=torch.float32)[None],
        "frame_mask": torch.ones(1, n, dtype=torch.bool), "patch_mask": torch.ones(1, n, dtype=torch.bool),
        "text": torch.tensor(q.text, dtype=torch.float32)[None], "cand": torch.tensor(q.cand, dtype=torch.float32)[None],
        "cand_mask": torch.ones(1, C, dtype=torch.bool), "question": [q.question], "candidates": [list(q.candidates)],
    }
    return q, model, batch


def _plotted(store, qid, run, tmp_path):
    """(timeline, figure): the plot of the run's picks for question ``qid``."""
    q = store.read_question(qid)
    t = timeline(store, q.video_id, qid, run_dir=run)
    return t, render(t, tmp_path / f"{run.name}.png")


def test_videodistill_top_k(store, runs, tmp_path):
    import torch

    from vqacache.heads.methods.videodistill import VideoDistillModel

    rows = np.round(np.linspace(0, N_FRAMES - 1, 8)).astype(int)  # 8 of the 12 frames, ends included
    for qid in store.questions("val"):
        q, model, batch = _by_hand(store, qid, rows, runs / "videodistill", VideoDistillModel)
        with torch.no_grad():
            out = model(batch)
        scores = out["logits"][0]
        expected = rows[out["index_per_candidate"][0, int(scores.argmax())].numpy()]  # the best candidate's top-K
        t, fig = _plotted(store, qid, runs / "videodistill", tmp_path)
        (pick,) = t.picks
        assert pick.rows.tolist() == expected.tolist() and "top-K" in pick.label
        (marks,) = _artist(fig, "pick-0")
        pts = store.read_video(q.video_id).pts
        assert np.array_equal(marks.get_xdata(), pts[expected])
        (read,) = _artist(fig, "model-frames")
        assert np.array_equal(read.get_xdata(), pts[rows])


def test_sparc_causal_set_and_backbone_top_k(store, runs, tmp_path):
    import torch

    from vqacache.heads.methods.videodistill import VideoDistillModel

    rows = np.arange(N_FRAMES)  # SpARC's frames are the teacher's: all 12
    sizes = []
    for qid in store.questions("val"):
        q, model, batch = _by_hand(store, qid, rows, runs / "sparc", VideoDistillModel)
        causal = [k for k in range(N_FRAMES) if q.imageqa[k, q.answer] > 0.2] or list(range(N_FRAMES))
        sizes.append(len(causal))
        with torch.no_grad():
            out = model(batch)
        top_k = out["index"][0].tolist()  # SpARC builds videodistill with the cosine head: one pass
        t, fig = _plotted(store, qid, runs / "sparc", tmp_path)
        assert [p.rows.tolist() for p in t.picks] == [causal, top_k]
        assert t.picks[0].label.startswith("SpARC causal set") and "backbone" in t.picks[1].label
        pts = store.read_video(q.video_id).pts
        for i, want in enumerate((causal, top_k)):
            (marks,) = _artist(fig, f"pick-{i}")
            assert np.array_equal(marks.get_xdata(), pts[want])
    assert any(0 < n < N_FRAMES for n in sizes)  # the threshold matters for some question


def test_vlap_per_segment_choice(store, runs, tmp_path):
    import torch

    from vqacache.heads.methods.vlap import TAU_END, VlapModel

    T = 6
    rows = np.array([int((t + 0.5) * N_FRAMES / T) for t in range(T)])  # each part's midpoint
    for qid in store.questions("val"):
        q, model, batch = _by_hand(store, qid, rows, runs / "vlap", VlapModel)
        with torch.no_grad():
            index = model(batch, TAU_END, with_teacher=False)["index"][0].numpy()  # (K,) among the T
        assert [int(i) // (T // 2) for i in index] == [0, 1]  # one per segment
        t, fig = _plotted(store, qid, runs / "vlap", tmp_path)
        (pick,) = t.picks
        assert pick.rows.tolist() == rows[index].tolist() and "segment" in pick.label
        (marks,) = _artist(fig, "pick-0")
        assert np.array_equal(marks.get_xdata(), store.read_video(q.video_id).pts[rows[index]])


def test_run_without_checkpoint_or_sampler(store, runs, tmp_path):
    from vqacache.cache_spec.errors import UsageError

    qid = store.questions("val")[0]
    video_id = store.read_question(qid).video_id
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"method": "sparc"}))
    with pytest.raises(UsageError, match="--run .*no checkpoints"):
        timeline(store, video_id, qid, run_dir=bare)
    t = timeline(store, video_id, None, run_dir=runs / "vlap")
    assert t.picks == [] and any("--question" in n for n in t.notes)
    other = make_temporal_store(tmp_path / "o.zarr", splits={"val": 1}, n_frames=N_FRAMES, dim=8, n_patches=2, seed=5)
    res = CliRunner().invoke(app, ["plot", str(other.path), "--video", "val00000", "--question", "val00000_0",
                                   "--run", str(runs / "sparc"), "--out", str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "the checkpoint expects" in res.output and res.output.count("error:") == 1, res.output


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
