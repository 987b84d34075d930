"""HDF5 export and import (issue 17), checked with plain h5py code that mirrors the loaders.

The loader mirrors read files the way doc-doc/NExT-QA ``dataloader/sample_loader.py``
(``str(vid)`` -> ``feat[row]``), thaolmk54/hcrn-videoqa ``DataLoader.py`` (``str(id)`` -> row of
``resnet_features``) and sail-sg/VGT ``data/vqa_loader.py`` (string ids decoded as UTF-8 ->
``resnet_features[row]``) do. Slot indices are recomputed independently: a clamped window
``clip(c - F//2 + j, 0, T - 1)`` for videos long enough that HCRN's padding equals a clamp,
and a hand example for a short one.

Mutations tried (each makes a test here fail):
1. clip centres taken as ``linspace(...)[0:clips]`` (keeping the 0) -> test_slot_rule_*;
2. the end padding repeats frame ``T - 2`` instead of ``T - 1`` -> test_slot_rule_independent;
3. hcrn ids written as strings -> test_round_trip[hcrn] (the mirror's ``str(id)`` keys become ``b'..'``);
4. the zero-row test ``not vectors.all()`` instead of ``not vectors.any()`` (a row with some zeros,
   as post-ReLU features have, taken for a failure) -> test_imported_hcrn_trains_uniform;
5. import always stores float16 -> test_round_trip (re-export not byte-identical);
6. the external-link check removed -> test_hostile_hdf5_refused_in_one_line_writing_nothing (imports
   the other file's data); 7. the external-storage check removed -> same test (reads secret.bin);
8. the virtual-dataset check removed -> same test; 9. the never-written-chunks check removed ->
   same test (1000 ZeroFeatures failures written); 10. the ids dtype check removed -> same test
   (float ids imported as '1.5'); 11. the NaN/inf check removed -> test_nan_inf_and_zero_rows_are_failures.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import StoreError, open_store, verify_store  # noqa: E402
from vqacache.cache_spec.hdf5 import export_store, import_file, slot_frames  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402

LENGTHS = {"nextqa": (16, 1), "hcrn": (8, 16), "vgt": (8, 4)}
FEATURES = {"nextqa": "feat", "hcrn": "resnet_features", "vgt": "resnet_features"}


def _clamped(n_frames: int, clips: int, per_clip: int) -> np.ndarray:
    out = np.zeros((clips, per_clip), np.int64)
    for k in range(clips):
        c = int(n_frames * (k + 1) / (clips + 1))  # linspace(0, T, clips + 2)[k + 1], truncated
        for j in range(per_clip):
            out[k, j] = c if per_clip == 1 else min(max(c - per_clip // 2 + j, 0), n_frames - 1)
    return out


def test_slot_rule_hand_example_short_video():
    # T = 5: every HCRN window is [0, 4) padded to 16 in front with frame 0; frame 4 is never used
    expected = [0] * 13 + [1, 2, 3]
    assert slot_frames(5, 8, 16).tolist() == [expected] * 8
    assert slot_frames(5, 16, 1).ravel().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # int(5 k / 17)


@pytest.mark.parametrize("n_frames", [40, 200, 1001])
@pytest.mark.parametrize("lay", sorted(LENGTHS))
def test_slot_rule_independent(lay, n_frames):
    clips, per_clip = LENGTHS[lay]
    assert np.array_equal(slot_frames(n_frames, clips, per_clip), _clamped(n_frames, clips, per_clip))


def _feature_store(path: Path, ids: dict[str, int], failed: tuple[str, ...] = (), seed: int = 0):
    store = open_store(path, "a", spec=make_spec(patches=False, seed=seed), dataset="toy")
    rng = np.random.default_rng(seed)
    for vid, n in ids.items():
        with store.write_video(vid) as w:
            w.append(cls=rng.standard_normal((n, 8)), cls_hidden=rng.standard_normal((n, 8)),
                     pts=np.arange(n) / 7.5 + 0.01, src_index=np.arange(n), is_repeat=np.zeros(n, bool))
    for vid in failed:
        store.record_failure(vid, "DecodeError", "unreadable")
    return store


def _mirror(lay: str, path: Path) -> dict[str, np.ndarray]:
    """What each released loader builds from the file: {video id string: slot features}."""
    with h5py.File(path, "r") as fp:
        if lay == "nextqa":
            return {str(vid): feat for vid, feat in zip(fp["ids"], fp["feat"])}
        if lay == "hcrn":
            index = {str(i): n for n, i in enumerate(fp["ids"])}
            feats = fp["resnet_features"][:]
            return {k: feats[n] for k, n in index.items()}
        return {vid.decode("utf-8"): feat for vid, feat in zip(fp["ids"], fp["resnet_features"])}


@pytest.mark.parametrize("lay", sorted(LENGTHS))
def test_round_trip(tmp_path, lay):
    ids = {"7": 5, "12": 40, "3": 200} if lay != "vgt" else {"sub/clip a": 5, "b": 40, "é": 200}
    bad = "99" if lay != "vgt" else "zz"
    store = _feature_store(tmp_path / "s.zarr", ids, failed=(bad,))
    first = tmp_path / "first.h5"
    report = export_store(store, lay, first)
    assert report.videos == 3 and report.failed == [bad]
    clips, per_clip = LENGTHS[lay]
    grid = (clips,) if per_clip == 1 else (clips, per_clip)

    got = _mirror(lay, first)
    assert set(got) == set(ids) | {bad}
    with h5py.File(first, "r") as fp:
        assert fp["ids"].dtype == (np.int64 if lay != "vgt" else object)
        if lay != "vgt":
            assert [str(v) for v in fp["ids"][:]] == sorted([*ids, bad], key=int)
        assert fp[FEATURES[lay]].dtype == np.float32 and fp["pts"].dtype == np.float64
        rows = {(str(v) if lay != "vgt" else v.decode()): n for n, v in enumerate(fp["ids"][:])}
        pts = fp["pts"][:]
        assert json.loads(fp.attrs["vqacache_spec"]) == store.spec.to_dict()
        assert fp.attrs["vqacache_fingerprint"] == store.fingerprint and fp.attrs["vqacache_layout"] == lay
    for vid, n in ids.items():
        index = _clamped(n, clips, per_clip) if n > 20 else slot_frames(n, clips, per_clip)
        cls = store.read_video(vid).cls.astype(np.float32)
        assert got[vid].shape == (*grid, 8)
        assert np.array_equal(got[vid].reshape(clips * per_clip, 8), cls[index.ravel()])
        assert np.array_equal(pts[rows[vid]].ravel(), np.arange(n)[index.ravel()] / 7.5 + 0.01)
    assert not got[bad].any() and np.isnan(pts[rows[bad]]).all()

    imported, rep = import_file(first, lay, "toy", tmp_path / "cache")
    assert rep.failed == [bad] and sorted(imported.complete_videos()) == sorted(ids)
    assert imported.spec.weights.source == "imported"
    assert imported.spec.weights.identity == "sha256:" + hashlib.sha256(first.read_bytes()).hexdigest()
    assert imported.imported["layout"] == lay and imported.spec.sampling.policy == "clip-grid-v1"
    assert "ZeroFeatures" in imported.failures()[bad]
    with pytest.raises(StoreError, match="read-only"):
        open_store(imported.path, "a")
    again = tmp_path / "again.h5"
    export_store(imported, lay, again)
    assert again.read_bytes() == first.read_bytes()
    assert import_file(first, lay, "toy", tmp_path / "cache")[1].already


def _text_store(path: Path, splits: dict[str, list[str]]):
    """A featurized store of dataset ``toy`` holding only question bundles (the text role)."""
    store = open_store(path, "a", spec=make_spec(patches=False, seed=5), dataset="toy")
    rng = np.random.default_rng(5)
    for split, vids in splits.items():
        for vid in vids:
            entries = [{"qid": f"{vid}_0", "question": "what?", "candidates": ["a", "b", "c", "d"],
                        "answer": int(rng.integers(4)), "qtype": "x", "start": None, "end": None}]
            store.write_questions(split, vid, entries, {
                "text": rng.standard_normal((1, 8)), "text_tokens": np.zeros((1, 1, 8)), "text_len": np.ones(1, np.int64),
                "cand": rng.standard_normal((1, 4, 8)), "cand_tokens": np.zeros((1, 4, 1, 8)),
                "cand_len": np.ones((1, 4), np.int64),
            })
    return store


def test_imported_hcrn_trains_uniform(tmp_path):
    """A released-style HCRN file (no pts, no vqacache attributes, one all-zero row) imports as a
    store stage two trains ``uniform`` from; the zero row's video is listed as failed."""
    from vqacache.heads.train import TrainConfig, train

    splits = {"train": [str(v) for v in range(101, 107)], "val": ["107", "108"]}
    text = _text_store(tmp_path / "text.zarr", splits)
    ids = [int(v) for vids in splits.values() for v in vids]
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((len(ids), 8, 16, 8)).astype(np.float32)
    feats[2] = 0.0  # the extraction script's row for a video it could not read
    feats[4, ..., ::2] = 0.0  # post-ReLU features hold zeros: a video, not a failure
    released = tmp_path / "toy_appearance_feat.h5"
    with h5py.File(released, "w") as fd:
        fd.create_dataset("resnet_features", data=feats)
        fd.create_dataset("ids", data=np.array(ids, dtype=np.int64))
    store, report = import_file(released, "hcrn", "toy", tmp_path / "cache")
    assert report.failed == ["103"] and store.imported["pts"] == "slot-index"
    assert [p.id for p in verify_store(store).failed] == ["103"]
    assert store.spec.architecture == "unknown" and store.spec.dtype == "float32"
    assert np.array_equal(store.read_video("101").cls, feats[0].reshape(128, 8))
    metrics = train(TrainConfig(method="uniform", store=str(store.path), out=str(tmp_path / "run"), epochs=1,
                                batch_size=2, lr=1e-3, stores={"text": str(text.path)},
                                args={"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}))
    assert np.isfinite(metrics["train_loss"])
    out = CliRunner().invoke(app, ["info", str(store.path)])
    assert out.exit_code == 0 and "103: ZeroFeatures" in out.output


def test_cli_errors_are_one_line(tmp_path):
    store = _feature_store(tmp_path / "s.zarr", {"x1": 20})
    runner = CliRunner()
    for args, needle in [
        (["export", str(store.path), "--layout", "bogus", "--out", str(tmp_path / "a.h5")], "valid: hcrn, nextqa, vgt"),
        (["export", str(store.path), "--layout", "hcrn", "--out", str(tmp_path / "a.h5")], "integer video ids"),
        (["export", str(store.path), "--layout", "vgt", "--out", str(tmp_path / "a.h5"), "--split", "nope"], "--split nope"),
        (["import", str(tmp_path / "none.h5"), "--layout", "vgt", "--dataset", "toy", "--cache-root", str(tmp_path)],
         "does not exist"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and needle in res.output and res.output.count("error:") == 1, res.output
    assert runner.invoke(app, ["export", str(store.path), "--layout", "vgt", "--out", str(tmp_path / "v.h5")]).exit_code == 0
    res = runner.invoke(app, ["export", str(store.path), "--layout", "vgt", "--out", str(tmp_path / "v.h5")])
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(app, ["import", str(tmp_path / "v.h5"), "--layout", "hcrn", "--dataset", "toy",
                              "--cache-root", str(tmp_path / "c")])
    assert res.exit_code == 2 and "(N, 8, 16, D)" in res.output


def test_hostile_files_are_one_line_and_write_nothing(tmp_path):
    """A file that is not HDF5, and ids that would leave the store, are refused before anything
    is written under the cache root (h5py reads arrays and attributes only: nothing is run)."""
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    escape = tmp_path / "escape.h5"
    with h5py.File(escape, "w") as fd:
        fd.create_dataset("ids", data=np.array([b"ok", b"../../escape"], dtype=h5py.string_dtype("utf-8")))
        fd.create_dataset("resnet_features", data=np.ones((2, 8, 4, 3), np.float32))
    twice = tmp_path / "twice.h5"
    with h5py.File(twice, "w") as fd:
        fd.create_dataset("ids", data=np.array([5, 5], dtype=np.int64))
        fd.create_dataset("feat", data=np.ones((2, 16, 3), np.float32))
    runner = CliRunner()
    for path, lay, needle in [(text, "vgt", "not a readable HDF5 file"), (escape, "vgt", "'..' path component"),
                              (twice, "nextqa", "appears twice")]:
        res = runner.invoke(app, ["import", str(path), "--layout", lay, "--dataset", "toy", "--cache-root",
                                  str(tmp_path / "cache")])
        assert res.exit_code == 2 and needle in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "cache").exists()


# -- hostile files (docs/safety.md, rows 9a-9f) -------------------------------------------------


def _nextqa_file(path, feat=None, ids=None, **extra):
    """A NExT-QA-layout file (``ids``, ``feat`` (N, 16, D)) with ``extra`` datasets or links."""
    with h5py.File(path, "w") as fd:
        fd["ids"] = np.array([1, 2], np.int64) if ids is None else ids
        if feat is not None:
            fd["feat"] = feat
        for name, value in extra.items():
            fd[name] = value
    return path


def _hostile(tmp_path):
    """(name, file, what the one line must say) for each refused file."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(2 * 16 * 4, dtype=np.float32).tobytes())  # a file outside the one given
    other = _nextqa_file(tmp_path / "other.h5", np.ones((2, 16, 4), np.float32))
    cases = []

    def add(name, needle, build):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as fd:
            build(fd)
        cases.append((name, path, needle))

    def ids(fd, n=2):
        fd["ids"] = np.arange(1, n + 1, dtype=np.int64)

    add("huge-rows", "at most 10000000 rows", lambda fd: (ids(fd), fd.create_dataset(
        "feat", shape=(10**9, 16, 4), chunks=(1, 16, 4), dtype=np.float32)))
    add("huge-width", "width 1 to 65536", lambda fd: (ids(fd), fd.create_dataset(
        "feat", shape=(2, 16, 10**7), chunks=(1, 1, 1024), dtype=np.float32)))
    add("never-written", "stores 0 of its 1000 chunks", lambda fd: (ids(fd, 1000), fd.create_dataset(
        "feat", shape=(1000, 16, 4), chunks=(1, 16, 4), dtype=np.float32)))
    add("never-written-contiguous", "stores 0 of its 512 bytes", lambda fd: (ids(fd), fd.create_dataset(
        "feat", shape=(2, 16, 4), dtype=np.float32)))
    add("int-features", "needs floats", lambda fd: (ids(fd), fd.create_dataset("feat", data=np.ones((2, 16, 4), np.int32))))
    add("complex-features", "needs floats", lambda fd: (ids(fd), fd.create_dataset(
        "feat", data=np.ones((2, 16, 4), np.complex64))))
    add("vlen-features", "needs floats", lambda fd: (ids(fd), fd.create_dataset(
        "feat", shape=(2, 16, 4), dtype=h5py.vlen_dtype(np.float32))))
    add("float-ids", "ids are one-dimensional integers or strings", lambda fd: (
        fd.create_dataset("ids", data=np.array([1.5, 2.5])), fd.create_dataset("feat", data=np.ones((2, 16, 4), np.float32))))
    add("vlen-ids", "ids are one-dimensional integers or strings", lambda fd: (
        fd.create_dataset("ids", data=np.array([np.array([1, 2]), np.array([3])], dtype=object),
                          dtype=h5py.vlen_dtype(np.int64)),
        fd.create_dataset("feat", data=np.ones((2, 16, 4), np.float32))))
    add("string-pts", "slot times are numbers", lambda fd: (
        ids(fd), fd.create_dataset("feat", data=np.ones((2, 16, 4), np.float32)),
        fd.create_dataset("pts", data=np.full((2, 16), b"x"))))
    add("external-link", "external link to", lambda fd: (ids(fd), fd.__setitem__("feat", h5py.ExternalLink(str(other), "/feat"))))
    add("external-raw", "keeps its data in external files", lambda fd: (ids(fd), fd.create_dataset(
        "feat", shape=(2, 16, 4), dtype=np.float32, external=[(str(secret), 0, h5py.h5f.UNLIMITED)])))

    def virtual(fd):
        ids(fd)
        layout = h5py.VirtualLayout(shape=(2, 16, 4), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "feat", shape=(2, 16, 4))
        fd.create_virtual_dataset("feat", layout)

    add("virtual", "virtual dataset", virtual)
    return cases


def test_hostile_hdf5_refused_in_one_line_writing_nothing(tmp_path):
    """Huge declared shapes, never-written data, wrong and variable-length dtypes, external links,
    external raw storage and virtual datasets: each one line, exit 2, nothing under the cache root."""
    runner = CliRunner()
    for name, path, needle in _hostile(tmp_path):
        res = runner.invoke(app, ["import", str(path), "--layout", "nextqa", "--dataset", "toy", "--cache-root",
                                  str(tmp_path / "cache")])
        assert res.exit_code == 2 and needle in res.output and res.output.count("\n") == 1, (name, res.output)
        assert not (tmp_path / "cache").exists(), name


def test_nan_inf_and_zero_rows_are_failures(tmp_path):
    """Rows holding NaN or inf are recorded as ``NonFinite``, all-zero rows as ``ZeroFeatures``;
    only the finite row becomes a video, with exactly its numbers."""
    rng = np.random.default_rng(0)
    feat = rng.standard_normal((4, 16, 4)).astype(np.float32)
    feat[1, 3, 2] = np.nan
    feat[2, 0, 0] = np.inf
    feat[3] = 0
    path = _nextqa_file(tmp_path / "nan.h5", feat, ids=np.array([10, 11, 12, 13], np.int64))
    res = CliRunner().invoke(app, ["import", str(path), "--layout", "nextqa", "--dataset", "toy", "--cache-root",
                                   str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    (store_dir,) = (tmp_path / "cache" / "toy").iterdir()
    store = open_store(store_dir)
    assert store.complete_videos() == ["10"]
    assert {v: f["error"] if isinstance(f, dict) else f for v, f in store.failures().items()}.keys() == {"11", "12", "13"}
    kinds = {v: str(store.failures()[v]) for v in ("11", "12", "13")}
    assert "NonFinite" in kinds["11"] and "NonFinite" in kinds["12"] and "ZeroFeatures" in kinds["13"], kinds
    assert np.array_equal(store.read_video("10").cls, feat[0])
