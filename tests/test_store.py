"""The store: round trips, completion markers, spec refusal, ids, failures, questions."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest
import zarr

from spec_factory import make_spec
from vqacache.cache_spec import (
    InvalidVideoId,
    NotComplete,
    SpecMismatch,
    StoreError,
    id_to_key,
    key_to_id,
    open_store,
    store_path,
)
from vqacache.cache_spec import layout

E, W, P = 8, 12, 4


def fake_video(n: int, seed: int = 0, patches: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = np.arange(n) * 4
    out = {
        "cls": rng.standard_normal((n, E), dtype=np.float32),
        "cls_hidden": rng.standard_normal((n, W), dtype=np.float32),
        "pts": src / 30.0,
        "src_index": src,
        "is_repeat": np.zeros(n, bool),
    }
    if patches:
        out["patch"] = rng.standard_normal((n, P, W), dtype=np.float32)
    return out


def write(store, vid, video, block=7):
    with store.write_video(vid, {"source": "test"}) as w:
        for s in range(0, len(video["cls"]), block):
            w.append(**{k: v[s : s + block] for k, v in video.items()})


@pytest.fixture
def store(tmp_path):
    spec = make_spec()
    return open_store(store_path(tmp_path, "demo", spec.encoder, spec.fingerprint()), "a", spec=spec, dataset="demo")


def test_store_path_convention(tmp_path):
    spec = make_spec()
    path = store_path(tmp_path, "nextqa", "open_clip:ViT-L-14", spec.fingerprint())
    assert path == tmp_path / "nextqa" / f"open_clip-ViT-L-14-{spec.fingerprint()[:12]}.zarr"


@pytest.mark.parametrize("n", [1, 7, 64, 65, 200])  # around the patch shard (64 frames)
def test_round_trip_streamed_blocks(store, n):
    video = fake_video(n)
    write(store, "v1", video)
    got = store.read_video("v1")
    np.testing.assert_array_equal(got.cls, video["cls"].astype(np.float16))
    np.testing.assert_array_equal(got.patch, video["patch"].astype(np.float16))
    np.testing.assert_array_equal(got.cls_hidden, video["cls_hidden"].astype(np.float16))
    np.testing.assert_array_equal(got.pts, video["pts"])
    np.testing.assert_array_equal(got.src_index, video["src_index"])
    assert got.cls.dtype == np.float16 and got.pts.dtype == np.float64 and got.src_index.dtype == np.int64
    assert got.attrs["n_frames"] == n and got.attrs["source"] == "test" and got["cls"] is got.cls
    assert store.verify_video("v1")


def test_partial_frame_reads(store):
    video = fake_video(100)
    write(store, "v", video)
    some = store.read_video("v", frames=np.array([3, 50, 99]))
    np.testing.assert_array_equal(some.patch, video["patch"][[3, 50, 99]].astype(np.float16))
    window = store.read_video("v", frames=slice(10, 20))
    np.testing.assert_array_equal(window.cls, video["cls"][10:20].astype(np.float16))
    lazy = store.video_arrays("v")["patch"]
    assert lazy.shape == (100, P, W) and lazy.shards == (64, P, W) and lazy.chunks == (8, P, W)


def test_no_patches_spec_refuses_patch_blocks(tmp_path):
    spec = make_spec(patches=False)
    store = open_store(tmp_path / "s.zarr", "a", spec=spec, dataset="demo")
    with pytest.raises(ValueError, match="unexpected \\['patch'\\]"):
        write(store, "v", fake_video(5, patches=True))
    write(store, "v", fake_video(5, patches=False))
    assert store.read_video("v").patch is None


def test_incomplete_video_is_invisible_and_rewritten(store):
    video = fake_video(10)
    with pytest.raises(RuntimeError):
        with store.write_video("crash") as w:
            w.append(**{k: v[:5] for k, v in video.items()})
            raise RuntimeError("decoder died")
    assert store.complete_videos() == [] and store.incomplete_videos() == []  # partial group removed
    # a writer killed before its marker (simulated): data present, marker absent
    group = store.root[layout.VIDEOS].create_group("killed", attributes={"video_id": "killed", "complete": False})
    group.create_array("cls", data=np.ones((3, E), np.float16))
    assert store.complete_videos() == [] and store.incomplete_videos() == ["killed"]
    with pytest.raises(NotComplete, match="not complete"):
        store.read_video("killed")
    write(store, "killed", video)  # rerun replaces the partial group
    assert store.complete_videos() == ["killed"]
    np.testing.assert_array_equal(store.read_video("killed").cls, video["cls"].astype(np.float16))


def test_completing_twice_is_refused(store):
    write(store, "v", fake_video(3))
    with pytest.raises(StoreError, match="already complete"):
        write(store, "v", fake_video(3))


def test_nan_features_are_refused(store):
    video = fake_video(4)
    video["cls"][2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write(store, "v", video)
    assert not store.is_complete("v")


def test_other_spec_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    open_store(path, "a", spec=make_spec(), dataset="demo")
    with pytest.raises(SpecMismatch, match="weights.identity"):
        open_store(path, "a", spec=make_spec(seed=1), dataset="demo")
    with pytest.raises(SpecMismatch):
        open_store(path, "r", spec=make_spec(dtype="float32"))
    assert open_store(path, "r").spec == make_spec()


def test_read_only_and_missing_stores(tmp_path, store):
    with pytest.raises(StoreError, match="no vqacache store"):
        open_store(tmp_path / "nothing.zarr")
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(StoreError, match="not a vqacache store"):
        open_store(tmp_path / "plain.zarr")
    ro = open_store(store.path, "r")
    with pytest.raises(StoreError, match="read-only"):
        write(ro, "v", fake_video(2))


def test_hand_edited_spec_is_detected(store):
    meta = dict(store.root.attrs)["vqacache"]
    meta["spec"]["dtype"] = "float32"
    store.root.attrs["vqacache"] = meta
    with pytest.raises(StoreError, match="hashes to"):
        open_store(store.path)


@pytest.mark.parametrize("bad", ["", "../escape", "a/../../b", "/abs", "a//b", "a\\b", "x\x00y", ".", "a/./b", "x" * 5000])
def test_bad_video_ids_are_refused(store, bad):
    with pytest.raises(InvalidVideoId):
        write(store, bad, fake_video(2))
    assert list(store.path.parent.iterdir()) == [store.path]  # nothing written outside


@pytest.mark.parametrize("vid", ["4010069381", "sub/dir/clip", "with space", "ünï", "a%2Fb", "..x", "a.b-c_d~e"])
def test_ids_round_trip_through_keys(store, vid):
    key = id_to_key(vid)
    assert "/" not in key and key not in (".", "..") and key_to_id(key) == vid
    write(store, vid, fake_video(2))
    assert store.complete_videos() == [vid]


def test_failures_are_recorded_and_cleared_on_success(store):
    store.record_failure("bad", "unreadable", "not a video file")
    store.record_failure("bad", "decode-error", "truncated")
    assert store.failures() == {"bad": "decode-error: truncated"}
    write(store, "bad", fake_video(2))
    assert store.failures() == {}


def test_checksum_detects_corruption(store):
    write(store, "v", fake_video(20))
    arr = store.video_arrays("v")["cls"]
    arr[3] = np.zeros(E, np.float16)
    assert not store.verify_video("v")


def test_questions_round_trip(store):
    rng = np.random.default_rng(1)
    entries = [
        {"qid": "v_0", "question": "what colour?", "candidates": ["red", "blue", "green"], "answer": 2, "qtype": "start-colour", "start": None, "end": None},
        {"qid": "v_1", "question": "how many?", "candidates": ["one", "two"], "answer": np.int64(0), "qtype": "count", "start": 1.5, "end": 3.0},
    ]
    text_len = np.array([5, 3])
    cand_len = np.array([[3, 4, 2], [3, 3, 0]])
    arrays = {
        "text": rng.standard_normal((2, E)),
        "text_tokens": rng.standard_normal((2, 5, W)),
        "text_len": text_len,
        "cand": rng.standard_normal((2, 3, E)),
        "cand_tokens": rng.standard_normal((2, 3, 4, W)),
        "cand_len": cand_len,
    }
    store.write_questions("val", "v", entries, arrays)
    assert store.questions() == ["v_0", "v_1"] and store.questions("val") == ["v_0", "v_1"] and store.questions("train") == []
    q = store.read_question("v_1")
    assert q.video_id == "v" and q.split == "val" and q.candidates == ("one", "two") and q.answer == 0 and q.start == 1.5
    np.testing.assert_array_equal(q.text, arrays["text"][1].astype(np.float16))
    assert q.text_tokens.shape == (3, W) and q.cand.shape == (2, E) and [t.shape for t in q.cand_tokens] == [(3, W), (3, W)]
    np.testing.assert_array_equal(q.cand_tokens[0], arrays["cand_tokens"][1, 0, :3].astype(np.float16))
    assert store.has_question_bundle("val", "v")
    with pytest.raises(NotComplete):
        store.read_question("nope")
    # open-ended: no candidate arrays
    store.write_questions("val", "w", [{"qid": "w_0", "question": "what?", "candidates": [], "answer": "dog", "qtype": None}],
                          {"text": arrays["text"][:1], "text_tokens": arrays["text_tokens"][:1], "text_len": text_len[:1]})
    oe = store.read_question("w_0")
    assert oe.cand is None and oe.answer == "dog"


def test_plain_zarr_reads_the_store(store):
    video = fake_video(9)
    write(store, "sub/clip", video)
    root = zarr.open_group(store.path, mode="r")
    meta = root.attrs["vqacache"]
    assert meta["fingerprint"] == store.fingerprint and meta["spec"]["encoder"] == "clip-b16"
    group = root["videos/sub%2Fclip"]
    assert group.attrs["complete"] is True and group.attrs["video_id"] == "sub/clip"
    np.testing.assert_array_equal(group["cls"][:], video["cls"].astype(np.float16))
    assert json.loads((store.path / "videos" / "sub%2Fclip" / "zarr.json").read_text())["attributes"]["complete"] is True


def _create(path, q):
    try:
        s = open_store(path, "a", spec=make_spec(), dataset="demo")
        q.put(s.fingerprint)
    except Exception as exc:  # pragma: no cover - reported through the queue
        q.put(repr(exc))


def test_concurrent_creation_gives_one_store(tmp_path):
    path = tmp_path / "race.zarr"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(path, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = {q.get(timeout=5) for _ in procs}
    assert results == {make_spec().fingerprint()}
    assert [p.name for p in tmp_path.iterdir()] == ["race.zarr"]  # no temporary leftovers
