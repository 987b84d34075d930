"""Stage one end to end: vqa-featurize on demo / folder / nextqa, reruns, failures, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import open_store
from vqacache.cli.cache import app as cache_app
from vqacache.cli.featurize import app as featurize_app
from vqacache.featurize.datasets import get_dataset
from vqacache.featurize.decode import decode_at_fps
from vqacache.featurize.encoders import get_encoder
from vqacache.featurize.decode.repeats import RepeatExpander

runner = CliRunner()


def featurize(*args: str):
    """In-process runs (--workers 0); test_pipeline_dask.py covers the Dask paths."""
    return runner.invoke(featurize_app, [*args, "--workers", "0"], catch_exceptions=False)


def only_store(cache_root):
    stores = sorted(cache_root.glob("*/*.zarr"))
    assert len(stores) == 1, stores
    return open_store(stores[0])


@pytest.fixture(scope="module")
def demo_val(tmp_path_factory, demo_root, tiny_clip):
    """The demo's val split featurized once with the tiny encoder."""
    cache = tmp_path_factory.mktemp("cache")
    result = featurize("--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip,
                       "--weights", "random", "--cache-root", str(cache), "--split", "val")
    assert result.exit_code == 0, result.output
    return cache, result.output


def test_demo_store_matches_direct_decode_and_encode(demo_val, demo_root, tiny_clip):
    cache, output = demo_val
    store = only_store(cache)
    dataset = get_dataset("demo", demo_root)
    videos = dataset.videos("val")
    assert store.complete_videos() == sorted(v.video_id for v in videos)
    assert store.failures() == {}
    assert store.questions() == sorted(q.qid for q in dataset.questions("val"))
    assert "0 failed" in output.splitlines()[-1]
    encoder = get_encoder(tiny_clip, "random")
    assert store.spec == encoder.feature_spec(store.spec.sampling)
    for video in videos:  # independent reference: whole-video decode, one forward, no expansion trick
        ref = decode_at_fps(video.path)
        want = encoder.encode_frames(ref.frames)
        got = store.read_video(video.video_id)
        np.testing.assert_array_equal(got.pts, ref.pts)
        np.testing.assert_array_equal(got.src_index, ref.src_index)
        np.testing.assert_array_equal(got.is_repeat, ref.is_repeat)
        for name in ("cls", "cls_hidden", "patch"):
            np.testing.assert_allclose(got[name].astype(np.float32), want[name].numpy(), rtol=2e-3, atol=2e-3)
        assert got.attrs["source"]["backend"] in ("decord", "pyav")
        assert store.verify_video(video.video_id)


def test_demo_slow_clip_repeats_frames_encoded_once(demo_val):
    store = only_store(demo_val[0])
    repeated = [v for v in store.complete_videos() if store.read_video(v).is_repeat.any()]
    if not repeated:
        pytest.skip("no val clip of the demo is slower than 7.5 fps")
    v = store.read_video(repeated[0])
    k = np.flatnonzero(v.is_repeat)
    np.testing.assert_array_equal(v.cls[k], v.cls[k - 1])
    np.testing.assert_array_equal(v.src_index[k], v.src_index[k - 1])


def test_demo_questions_have_text_features(demo_val, demo_root, tiny_clip):
    store = only_store(demo_val[0])
    encoder = get_encoder(tiny_clip, "random")
    q = store.read_question(store.questions("val")[0])
    ref = encoder.encode_text([q.question, *q.candidates])
    np.testing.assert_allclose(q.text.astype(np.float32), ref["emb"][0].numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(q.cand.astype(np.float32), ref["emb"][1:].numpy(), atol=2e-3, rtol=2e-3)
    assert q.text_tokens.shape == (int(ref["length"][0]), encoder.dims["text_tokens"][0])
    assert [len(t) for t in q.cand_tokens] == ref["length"][1:].tolist()
    assert isinstance(q.answer, int) and 0 <= q.answer < len(q.candidates)


def test_rerun_skips_complete_videos(demo_val, demo_root, tiny_clip):
    cache, _ = demo_val
    def data_files():  # everything but the run logs, which each run adds
        return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and "/runs/" not in str(p)}

    before = data_files()
    result = featurize("--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip,
                       "--weights", "random", "--cache-root", str(cache), "--split", "val")
    assert result.exit_code == 0
    assert result.output.splitlines()[-1].startswith("0 videos done, 4 skipped, 0 failed")
    assert data_files() == before
    assert len(only_store(cache).run_logs()) == 2


def test_other_settings_get_another_store(demo_val, demo_root, tiny_clip):
    cache, _ = demo_val
    result = featurize("--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip,
                       "--weights", "random:1", "--cache-root", str(cache), "--split", "val", "--no-patches")
    assert result.exit_code == 0
    stores = sorted(cache.glob("demo/*.zarr"))
    assert len(stores) == 2
    new = [open_store(p) for p in stores if not open_store(p).spec.outputs.patches][0]
    assert new.spec.weights.identity == "random:1" and new.read_video(new.complete_videos()[0]).patch is None


def test_vqa_cache_ls_and_info(demo_val):
    cache, _ = demo_val
    out = runner.invoke(cache_app, ["ls", "--cache-root", str(cache)])
    assert out.exit_code == 0 and "demo" in out.output and "open_clip-vqacache-tiny" in out.output
    store = sorted(cache.glob("demo/*.zarr"))[0]
    out = runner.invoke(cache_app, ["info", str(store)])
    assert out.exit_code == 0 and '"fps": "15/2"' in out.output and "complete" in out.output


def _broken_files(folder):
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    (folder / "noise.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def test_folder_with_broken_videos_records_failures(tmp_path, shared_videos, tiny_clip):
    data = tmp_path / "videos"
    (data / "real").mkdir(parents=True)
    good = shared_videos / "lowfps_6fps_340x256.mp4"
    shutil.copy(good, data / "real" / "slow.mp4")
    blob = good.read_bytes()
    (data / "truncated.mp4").write_bytes(blob[: len(blob) // 3])
    _broken_files(data)
    cache = tmp_path / "cache"
    args = ("--dataset", "folder", "--data-root", str(data), "--encoder", tiny_clip, "--weights", "random",
            "--cache-root", str(cache), "--no-patches")
    result = featurize(*args)
    assert result.exit_code == 3, result.output
    store = only_store(cache)
    assert store.complete_videos() == ["real/slow"]
    failures = store.failures()
    assert set(failures) == {"empty", "notes", "noise", "truncated"}
    assert failures["empty"].startswith("unreadable") and failures["notes"].startswith("unreadable")
    assert failures["truncated"].split(":")[0] in ("decode-error", "unreadable")
    v = store.read_video("real/slow")
    assert v.is_repeat.any() and v.attrs["source"]["native_fps"] in ("6", "6/1")
    # rerun: failed videos are not retried unless asked
    again = featurize(*args)
    assert again.exit_code == 0 and "0 videos done, 5 skipped" in again.output
    retry = featurize(*args, "--retry-failed")
    assert retry.exit_code == 3 and "0 videos done, 1 skipped, 4 failed" in retry.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'; available: activitynet_qa, agqa, clevrer, demo"),
        (["--dataset", "demo", "--encoder", "clip-b99"], "clip-b16"),
        (["--dataset", "folder", "--data-root", "/does/not/exist"], "--data-root"),
        (["--dataset", "demo", "--fps", "fast"], "fps"),
        (["--dataset", "demo", "--dtype", "int8"], "--dtype"),
        (["--dataset", "demo", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--dataset", "demo", "--compute-dtype", "fp8"], "--compute-dtype must be auto or one of"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path, demo_root, args, message):
    full = ["--encoder", "clip-b16", "--weights", "random", "--cache-root", str(tmp_path), "--data-root", str(demo_root),
            "--workers", "0", *args]
    result = runner.invoke(featurize_app, full)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 2


def test_nextqa_without_videos_is_one_clear_error(tmp_path, shared_annotations):
    result = runner.invoke(featurize_app, ["--dataset", "nextqa", "--data-root", str(shared_annotations / "nextqa"),
                                           "--encoder", "clip-b16", "--weights", "random", "--cache-root", str(tmp_path),
                                           "--split", "val"])
    assert result.exit_code == 2 and "570" in result.output and "Traceback" not in result.output


def test_offline_pretrained_weights_error_names_weights_flag(tmp_path, demo_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = runner.invoke(featurize_app, ["--dataset", "demo", "--data-root", str(demo_root), "--encoder", "clip-b16",
                                           "--cache-root", str(tmp_path / "c"), "--workers", "0"])
    assert result.exit_code == 2 and "--weights" in result.output
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.zarr"))


def test_repeat_expander_across_chunks():
    unique_a = {"x": torch.tensor([[1.0], [2.0]])}
    unique_b = {"x": torch.tensor([[3.0]])}
    ex = RepeatExpander()
    a = ex.expand(unique_a, np.array([False, True, False, True]))
    b = ex.expand(unique_b, np.array([True, True, False]))
    c = ex.expand({}, np.array([True]))
    assert a["x"].flatten().tolist() == [1, 1, 2, 2]
    assert b["x"].flatten().tolist() == [2, 2, 3]
    assert c["x"].flatten().tolist() == [3]
    with pytest.raises(ValueError):
        RepeatExpander().expand(unique_a, np.array([True, False]))


def test_info_shows_long_spec_strings_by_their_start_and_length():
    """``vqa-cache info`` prints vitg's base64 gamma/beta (about 7,500 characters each) as a start
    and a length; short values and the structure are untouched."""
    from vqacache.cli.cache import _elide_long

    long = "A" * 7508
    shown = _elide_long({"extra": {"token_norm": {"gamma": long, "eps": 1e-6, "kind": "affine-free"}},
                         "list": [long, "x"]})
    assert shown == {"extra": {"token_norm": {"gamma": "A" * 24 + "... (7508 characters)", "eps": 1e-6,
                                              "kind": "affine-free"}},
                     "list": ["A" * 24 + "... (7508 characters)", "x"]}
