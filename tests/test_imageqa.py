"""Stage one's image-QA pass: teacher probabilities per question and frame, in the bundles.

Uses a deterministic fake teacher (tests/fake_teacher.py) whose scores the tests recompute
from frames they decode themselves; the real teachers' ranking is tested in their own files.
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_teacher import IMAGE_SIZE, FakeTeacher, logits, softmax

from vqacache.cache_spec import SpecMismatch, UnknownName, UsageError, open_store
from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.featurize.decode import decode_at_fps
from vqacache.featurize.imageqa.task import ImageQAResult, _VideoPlan
from vqacache.featurize.pipeline import FeaturizeConfig, featurize


def config(cache, demo_root, tiny_clip, **kw) -> FeaturizeConfig:
    base = dict(dataset="demo", data_root=demo_root, encoder=tiny_clip, weights="random", cache_root=cache,
                splits=("val",), batch_size=8, workers=0)
    base.update(kw)
    return FeaturizeConfig(**base)


def test_teacher_probabilities_per_question_and_frame(tmp_path, demo_root, tiny_clip, fake_teacher):
    result = featurize(config(tmp_path, demo_root, tiny_clip, imageqa=fake_teacher, imageqa_frames=5))
    assert result.exit_code == 0 and result.imageqa_done == 4 and not result.imageqa_failures
    store = open_store(result.store_path)
    spec = store.teacher_spec()
    assert spec.teacher == "fake" and spec.frames == 5 and spec.decode_short_side == IMAGE_SIZE and spec.k is None
    from vqacache.featurize.datasets import get_dataset

    paths = {v.video_id: v.path for v in get_dataset("demo", demo_root).videos("val")}
    checked = 0
    for qid in store.questions("val"):
        q = store.read_question(qid)
        pts = store.read_video(q.video_id).pts
        idx = frame_indices(pts, 5, q.start, q.end)
        decoded = decode_at_fps(paths[q.video_id], short_side=IMAGE_SIZE)
        means = decoded.frames[idx].reshape(len(idx), -1).astype(np.float64).mean(axis=1) / 255.0
        expected = softmax(logits(means, q.question, list(q.candidates)))  # independent recomputation
        assert q.imageqa.shape == (len(idx), len(q.candidates))
        np.testing.assert_allclose(q.imageqa, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(q.imageqa_pts, pts[idx])
        assert q.imageqa_fingerprint == spec.fingerprint()
        checked += 1
    assert checked == 16  # every val question (4 videos x 4)
    # a rerun finds everything done; the frame features' fingerprint never changed
    again = featurize(config(tmp_path, demo_root, tiny_clip, imageqa=fake_teacher, imageqa_frames=5))
    assert again.imageqa_done == 0 and again.skipped == 4 and again.fingerprint == result.fingerprint
    # another teacher setting in the same store is refused, never mixed: one line, exit 2
    from typer.testing import CliRunner

    from vqacache.cli.featurize import app

    cli = CliRunner().invoke(app, ["--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip,
                                   "--weights", "random", "--cache-root", str(tmp_path), "--split", "val",
                                   "--batch-size", "8", "--workers", "0", "--imageqa", fake_teacher,
                                   "--imageqa-frames", "3"])
    assert cli.exit_code == 2 and "another teacher spec (frames: 5 -> 3)" in cli.output, cli.output
    assert "Traceback" not in cli.output
    from vqacache.cli.cache import app as cache_app

    info = CliRunner().invoke(cache_app, ["info", str(result.store_path)])
    assert info.exit_code == 0 and f"image-QA teacher fake, fingerprint {spec.fingerprint()[:12]}" in info.output
    with pytest.raises(SpecMismatch, match="another teacher spec"):
        featurize(config(tmp_path, demo_root, tiny_clip, imageqa=fake_teacher, imageqa_frames=3))


def test_unknown_teacher_fails_before_any_work(tmp_path, demo_root, tiny_clip):
    with pytest.raises(UnknownName, match="unknown image-QA teacher 'blipp'; available: albef, blip"):
        featurize(config(tmp_path, demo_root, tiny_clip, imageqa="blipp"))
    with pytest.raises(UsageError, match="--imageqa-score 'albef': teacher blip takes loglik, blip"):
        featurize(config(tmp_path, demo_root, tiny_clip, imageqa="blip", imageqa_score="albef"))
    assert not list(tmp_path.iterdir())


def test_open_ended_plan_keeps_the_top_k_of_the_vocabulary():
    vocab = ["a", "bb", "ccc", "dddd", "ee", "f"]
    rows = [_record("q0", "what?", ()), _record("q1", "which one?", ("x", "yy"))]  # open-ended + MC in one bundle
    pts = np.arange(10) / 7.5
    plan = _VideoPlan(rows, [np.array([0, 4, 9]), np.array([2, 3])], pts)
    frames = {i: np.full((4, 4, 3), 20 * i, np.uint8) for i in range(10)}
    arrays = plan.score(FakeTeacher(), frames, vocab, 3, ImageQAResult())
    assert arrays["imageqa"].shape == (2, 3, 3) and arrays["imageqa_index"].shape == (2, 3, 3)
    means = np.array([20 * i / 255.0 for i in (0, 4, 9)])
    scores = logits(means, "what?", vocab)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(arrays["imageqa_index"][0], top)
    np.testing.assert_allclose(arrays["imageqa"][0], softmax(np.take_along_axis(scores, top, 1)), rtol=1e-6)
    # the MC row: its 2 candidates, 2 frames; padding is 0 / -1 / NaN pts
    np.testing.assert_allclose(arrays["imageqa"][1, :2, :2], softmax(logits(np.array([40, 60]) / 255.0, "which one?", ["x", "yy"])), rtol=1e-6)
    assert (arrays["imageqa"][1, 2] == 0).all() and (arrays["imageqa"][1, :, 2] == 0).all()
    assert (arrays["imageqa_index"][1] == -1).all() and np.isnan(arrays["imageqa_pts"][1, 2])
    np.testing.assert_array_equal(arrays["imageqa_pts"][0], pts[[0, 4, 9]])


def _record(qid, question, candidates):
    from vqacache.featurize.datasets import QuestionRecord

    return QuestionRecord(qid=qid, video_id="v", question=question, candidates=candidates, answer=None, qtype=None, split="val")


def test_the_blip_teacher_through_the_pipeline(tmp_path, demo_root, tiny_clip):
    """The real BLIP teacher (a tiny random model saved as a checkpoint folder) in stage one:
    its probabilities equal the teacher called directly on the frames the store's rule picks."""
    from tiny_blip import write_tiny_blip_vqa

    from vqacache.featurize.datasets import get_dataset
    from vqacache.featurize.imageqa import get_teacher

    weights = write_tiny_blip_vqa(tmp_path / "blip", image_size=64)
    result = featurize(config(tmp_path / "cache", demo_root, tiny_clip, imageqa="blip", imageqa_weights=str(weights),
                              imageqa_frames=3))
    assert result.exit_code == 0 and result.imageqa_done == 4, result.imageqa_failures
    store = open_store(result.store_path)
    spec = store.teacher_spec()
    assert spec.teacher == "blip" and spec.decode_short_side == 64 and spec.model  # the model's own description
    teacher = get_teacher("blip", str(weights))
    video = next(v for v in get_dataset("demo", demo_root).videos("val"))
    decoded = decode_at_fps(video.path, short_side=64)
    for qid in [q for q in store.questions("val") if store.read_question(q).video_id == video.video_id]:
        q = store.read_question(qid)
        idx = frame_indices(store.read_video(video.video_id).pts, 3, q.start, q.end)
        direct = teacher.rank_candidates(teacher.encode_images(decoded.frames[idx]), q.question, list(q.candidates))
        np.testing.assert_allclose(q.imageqa, direct, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.imageqa.sum(axis=1), 1.0, rtol=1e-5)
