"""Image-QA teacher probabilities in a store: their own spec, added to question bundles."""

from __future__ import annotations

import numpy as np
import pytest
from spec_factory import make_spec
from test_store import E, W

from vqacache.cache_spec import NotComplete, SpecMismatch, StoreError, TeacherSpec, open_store, verify_store, vocab_sha256


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "s.zarr", "a", spec=make_spec(), dataset="demo")
    rng = np.random.default_rng(0)
    entries = [
        {"qid": "v_0", "question": "what colour?", "candidates": ["red", "blue", "green"], "answer": 2, "qtype": "c"},
        {"qid": "v_1", "question": "how many?", "candidates": ["one", "two"], "answer": 0, "qtype": "n"},
    ]
    arrays = {"text": rng.standard_normal((2, E)), "text_tokens": rng.standard_normal((2, 5, W)),
              "text_len": np.array([5, 3]), "cand": rng.standard_normal((2, 3, E)),
              "cand_tokens": rng.standard_normal((2, 3, 4, W)), "cand_len": np.array([[3, 4, 2], [3, 3, 0]])}
    store.write_questions("val", "v", entries, arrays)
    return store


def teacher(**kw) -> TeacherSpec:
    base = dict(teacher="blip", model={"arch": "tiny", "weights": "random:0"}, frames=4)
    base.update(kw)
    return TeacherSpec(**base)


def test_teacher_arrays_round_trip_and_keep_the_text(store):
    before = store.read_question("v_1")
    fp = store.set_teacher_spec(teacher())
    assert store.teacher_spec() == teacher() and fp == teacher().fingerprint()
    fingerprint_of_frames = store.fingerprint
    probs = np.zeros((2, 4, 3), np.float32)
    probs[0] = np.random.default_rng(1).dirichlet(np.ones(3), 4)
    probs[1, :3, :2] = np.random.default_rng(2).dirichlet(np.ones(2), 3)  # 3 frames, 2 candidates
    pts = np.array([[0.1, 0.5, 0.9, 1.3], [0.2, 0.6, 1.0, np.nan]])
    assert not store.has_imageqa("val", "v", fp)
    store.write_imageqa("val", "v", fp, {"imageqa": probs, "imageqa_pts": pts})
    assert store.has_imageqa("val", "v", fp) and not store.has_imageqa("val", "v", "0" * 64)
    q0, q1 = store.read_question("v_0"), store.read_question("v_1")
    np.testing.assert_array_equal(q0.imageqa, probs[0])  # float32 kept, not the spec's float16
    assert q0.imageqa.dtype == np.float32 and q0.imageqa_pts.dtype == np.float64
    np.testing.assert_array_equal(q1.imageqa, probs[1, :3, :2])
    np.testing.assert_array_equal(q1.imageqa_pts, pts[1, :3])
    assert q1.imageqa_index is None and q1.imageqa_fingerprint == fp
    np.testing.assert_array_equal(q1.text, before.text)  # the text features are untouched
    assert [t.tolist() for t in q1.cand_tokens] == [t.tolist() for t in before.cand_tokens]
    assert open_store(store.path).fingerprint == fingerprint_of_frames  # frames' fingerprint unchanged
    report = verify_store(open_store(store.path))
    assert report.ok_questions == 1 and not report.corrupt  # the bundle's checksum covers the new arrays


def test_open_ended_scores_keep_their_vocabulary_indices(store):
    vocab = [str(i) for i in range(10)]
    spec = teacher(vocab_size=10, vocab_sha256=vocab_sha256(vocab), k=3)
    with pytest.raises(ValueError, match="vocabulary must be given"):
        store.set_teacher_spec(spec, vocab[::-1])  # order matters: indices are stored
    fp = store.set_teacher_spec(spec, vocab)
    assert store.teacher_vocab() == vocab
    index = np.tile(np.array([[7, 2, 0]]), (2, 4, 1)).astype(np.int64)
    probs = np.tile(np.array([[0.7, 0.2, 0.1]], np.float32), (2, 4, 1))
    store.write_imageqa("val", "v", fp, {"imageqa": probs, "imageqa_pts": np.zeros((2, 4)), "imageqa_index": index})
    q = store.read_question("v_0")
    assert q.imageqa.shape == (4, 3) and q.imageqa_index.tolist() == [[7, 2, 0]] * 4


def test_one_teacher_per_store(store):
    store.set_teacher_spec(teacher())
    assert store.set_teacher_spec(teacher()) == teacher().fingerprint()  # the same again is fine
    with pytest.raises(SpecMismatch, match=r"another teacher spec \(frames: 4 -> 16\).*another --cache-root"):
        store.set_teacher_spec(teacher(frames=16))


def test_writes_need_the_recorded_spec_an_existing_bundle_and_matching_rows(store):
    fp = teacher().fingerprint()
    arrays = {"imageqa": np.zeros((2, 4, 3), np.float32), "imageqa_pts": np.zeros((2, 4))}
    with pytest.raises(StoreError, match="record the teacher spec first"):
        store.write_imageqa("val", "v", fp, arrays)
    store.set_teacher_spec(teacher())
    with pytest.raises(NotComplete, match="no complete question bundle"):
        store.write_imageqa("val", "nope", fp, arrays)
    with pytest.raises(ValueError, match="3 rows for 2 questions"):
        store.write_imageqa("val", "v", fp, {"imageqa": np.zeros((3, 4, 3), np.float32)})


@pytest.mark.parametrize(("kw", "message"), [
    ({"frames": 0}, "positive integer"),
    ({"frame_policy": "random"}, "unknown frame policy"),
    ({"k": 128}, "needs all of vocab_size, vocab_sha256 and k"),
])
def test_invalid_teacher_specs(kw, message):
    from vqacache.cache_spec import SpecError

    with pytest.raises(SpecError, match=message):
        teacher(**kw)
