"""Hostile inputs, tried through the commands a user runs (docs/safety.md has the table).

Each test builds one bad input under ``tmp_path`` and runs ``vqa-featurize`` (``--workers 0``,
the tiny encoder, ``--weights random``), ``vqa-cache info|verify``, ``vqa-train-head --resume``
or ``vqa-eval`` in-process, then checks what the user sees: the exit code, the one line printed
(never a traceback), that nothing was written outside the cache root, and that the store stays
readable with ``verify`` reflecting what is on disk.

One featurize run over a folder dataset (a real video, a video whose id is a 657-byte path of
Chinese characters, and four broken files) is shared by the whole module; tests that damage a
store damage a copy of it.

Eight tests here were first written ``xfail(strict=True)`` against bugs they exposed, then the
code was fixed (docs/safety.md, "Fixed on the way"); each failed on the code without its fix:
the safe-load message (1b), ``unique_qids`` naming both records (4a), the dtype check in
verify (6b), the guarded id in verify (8c), the ownership check in ``_video_group`` (9b),
``Problem.location`` in ``delete_corrupt`` (9c, 9d), the symlink branch of ``delete_group`` (10).
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import open_store
from vqacache.cli.cache import app as cache_app
from vqacache.cli.eval import app as eval_app
from vqacache.cli.featurize import app as featurize_app
from vqacache.cli.train_head import app as train_app

runner = CliRunner()

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
GOOD = "lowfps_6fps_340x256.mp4"  # 9.6 s at 6 fps: 72 frames at 7.5 fps
# A folder dataset's ids are relative paths: three folders of 28 x 2 CJK characters and a file
# name of 50 (each 3 UTF-8 bytes; every component stays under Linux's 255-byte name limit).
LONG_DIRS = ["视频" * 28] * 3
LONG_FILE = "长" * 50
LONG_ID = "/".join([*LONG_DIRS, LONG_FILE])
BROKEN = {"truncated", "empty", "text", "noise"}
SMALL_CLI = ["--num-frames", "8", "--num-select", "2", "--num-layers", "1", "--num-heads", "2", "--dim", "16"]


# -- helpers ---------------------------------------------------------------------------------


def _need_videos() -> Path:
    if not (VIDEOS / GOOD).exists():
        pytest.skip(f"needs the shared real data at {VIDEOS} (../shared beside the project root)")
    return VIDEOS


def no_traceback(result) -> None:
    """The command ended by itself (exit code), not by an exception escaping to the user."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError("command raised:\n" + "".join(traceback.format_exception(exc)))
    assert "Traceback" not in result.output, result.output


def lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def one_line_error(result, code: int = 2) -> str:
    """Exit ``code`` with exactly one printed line, ``error: ...``; returns that line."""
    no_traceback(result)
    assert result.exit_code == code, result.output
    printed = lines(result)
    assert len(printed) == 1 and printed[0].startswith("error:"), result.output
    return printed[0]


def snapshot(root: Path, *, outside_of: Path | None = None) -> dict[str, int]:
    """{relative path: size} of every file and folder under ``root``, minus ``outside_of``'s tree."""
    found = {}
    for path in root.rglob("*"):
        if outside_of is not None and (path == outside_of or outside_of in path.parents):
            continue
        found[str(path.relative_to(root))] = path.stat().st_size if path.is_file() else -1
    return found


def featurize(data: Path, cache: Path, *extra: str, dataset: str = "folder", encoder: str, weights: str = "random"):
    return runner.invoke(featurize_app, ["--dataset", dataset, "--data-root", str(data), "--encoder", encoder,
                                         "--weights", weights, "--cache-root", str(cache), "--workers", "0",
                                         "--no-patches", *extra])


def cache_cmd(*args):
    return runner.invoke(cache_app, [str(a) for a in args])


def summary(result) -> str:
    """verify's last line."""
    return lines(result)[-1]


def jsonl_rows(*rows: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def question(qid, video, **more) -> dict:
    return {"qid": qid, "video": video, "question": "what moves?", "candidates": ["a", "b"], "answer": 0, **more}


class Touch:
    """Unpickling this calls ``pathlib.Path(marker).touch()``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class System:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- the shared featurize run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, tiny_clip):
    """A folder dataset with one good video, the same video under a 657-byte unicode id, and a
    truncated (first half), an empty, a text and a noise ``.mp4``, featurized once."""
    videos = _need_videos()
    base = tmp_path_factory.mktemp("hostile")
    data = base / "data"
    data.mkdir()
    blob = (videos / GOOD).read_bytes()
    (data / "good.mp4").write_bytes(blob)
    (data / "truncated.mp4").write_bytes(blob[: len(blob) // 2])
    (data / "empty.mp4").write_bytes(b"")
    (data / "text.mp4").write_text("this is a text file, not a video\n")
    (data / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    deep = data.joinpath(*LONG_DIRS)
    deep.mkdir(parents=True)
    (deep / f"{LONG_FILE}.mp4").write_bytes(blob)
    cache = base / "cache"
    before = snapshot(base)
    result = featurize(data, cache, encoder=tiny_clip)
    after = snapshot(base, outside_of=cache)
    stores = sorted(cache.glob("*/*.zarr"))
    assert len(stores) == 1, result.output
    return {"base": base, "data": data, "cache": cache, "store": stores[0], "result": result,
            "outside_before": before, "outside_after": after, "encoder": tiny_clip}


def copy_store(run: dict, tmp_path: Path) -> tuple[Path, Path]:
    """(cache root, store) : a private copy of the shared store, laid out as featurize lays it out."""
    cache = tmp_path / "cache"
    store = cache / run["store"].parent.name / run["store"].name
    shutil.copytree(run["store"], store)
    return cache, store


# -- 1. crafted checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_store(tmp_path_factory):
    from vqacache.heads.synthetic import make_temporal_store

    root = tmp_path_factory.mktemp("heads")
    return make_temporal_store(root / "t.zarr", splits={"train": 4, "val": 2}, n_frames=10, dim=16, n_patches=2).path


@pytest.mark.parametrize("payload", [Touch, System])
def test_crafted_checkpoint_given_to_resume_runs_nothing(tmp_path, head_store, payload):
    marker = tmp_path / "PWNED"
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    # a plain pickle (not torch's zip format) whose unpickling would create the marker
    (out / "checkpoints" / "last.pt").write_bytes(pickle.dumps({"format": 2, "model": payload(marker)}))
    before = snapshot(tmp_path)
    result = runner.invoke(train_app, ["--method", "uniform", "--store", str(head_store), "--out", str(out),
                                       "--epochs", "1", "--resume", *SMALL_CLI])
    line = one_line_error(result)
    assert "is not a vqacache head checkpoint that loads safely" in line and "last.pt" in line
    assert not marker.exists()
    assert snapshot(tmp_path) == before  # nothing written: no metrics, no new checkpoint


def test_crafted_weights_file_given_to_featurize_runs_nothing(tmp_path, tiny_clip):
    """``--weights FILE`` is the other checkpoint a user hands over: open_clip loads it with
    ``weights_only=True``."""
    _need_videos()
    marker = tmp_path / "PWNED"
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(VIDEOS / GOOD, data / "good.mp4")
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Touch(marker)}, evil)
    result = featurize(data, tmp_path / "cache", encoder=tiny_clip, weights=str(evil))
    line = one_line_error(result)
    assert f"--weights {evil.resolve()} is not an open_clip" in line
    assert not marker.exists()
    assert not list((tmp_path / "cache").rglob("videos/*/zarr.json"))


def test_crafted_weights_file_error_says_what_was_refused(tmp_path, tiny_clip):
    _need_videos()
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(VIDEOS / GOOD, data / "good.mp4")
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Touch(tmp_path / "PWNED")}, evil)
    line = one_line_error(featurize(data, tmp_path / "cache", encoder=tiny_clip, weights=str(evil)))
    assert "\x1b[" not in line and "can still be loaded" not in line, line
    assert "pathlib" in line or "Unsupported global" in line, line


def test_crafted_pickle_given_to_vqa_eval_runs_nothing(tmp_path):
    """``vqa-eval`` loads no checkpoint: it reads a JSON predictions file, so a pickle is a
    parse error and is never unpickled."""
    marker = tmp_path / "PWNED"
    (tmp_path / "val.csv").write_text("video,qid,type,answer\nv1,0,CW,1\n")
    evil = tmp_path / "predictions.json"
    evil.write_bytes(pickle.dumps({"v1_0": System(marker)}))
    result = runner.invoke(eval_app, ["--annotations", str(tmp_path), "--predictions", str(evil)])
    line = one_line_error(result)
    assert str(evil) in line
    assert not marker.exists()


# -- 2. a 657-byte unicode id ----------------------------------------------------------------


def test_long_unicode_id_round_trips_with_a_short_key(folder_run):
    assert len(LONG_ID.encode("utf-8")) == 657
    store = open_store(folder_run["store"])
    assert LONG_ID in store.complete_videos()
    video = store.read_video(LONG_ID)
    assert video.attrs["video_id"] == LONG_ID and video.cls.shape[0] == store.read_video("good").cls.shape[0]
    keys = [p.name for p in (folder_run["store"] / "videos").iterdir() if p.is_dir()]
    assert sorted(keys)[0].startswith("%E8%A7%86") and "%~" in sorted(keys)[0]
    assert max(len(k.encode("utf-8")) for k in keys) <= 255
    assert max(len(p.name.encode("utf-8")) for p in folder_run["cache"].rglob("*")) <= 255
    assert store.verify_video(LONG_ID)


# -- 3. ids that climb out or are absolute ---------------------------------------------------


@pytest.mark.parametrize(
    "video_id, message",
    [
        ("../../escape", "has an empty, '.' or '..' path component"),
        ("clips/../../../escape", "has an empty, '.' or '..' path component"),
        ("/tmp/escape", "is an absolute path"),
        ("a\\..\\..\\escape", "contains a backslash"),
        ("bell\x07", "contains a control character"),
    ],
)
def test_ids_that_would_leave_the_store_are_refused(tmp_path, tiny_clip, video_id, message):
    _need_videos()
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    shutil.copy(VIDEOS / GOOD, data / "videos" / "clip.mp4")
    (data / "val.jsonl").write_text(jsonl_rows(question("q1", video_id, video_path="clip.mp4")))
    cache = tmp_path / "cache"
    before = snapshot(tmp_path)
    result = featurize(data, cache, dataset="jsonl", encoder=tiny_clip)
    line = one_line_error(result)
    assert message in line and "video id" in line
    assert snapshot(tmp_path, outside_of=cache) == before  # nothing outside the cache root
    assert not Path("/tmp/escape").exists()
    # the run creates its (empty) store before it reads the ids: no video, no failure in it
    for store in cache.glob("*/*.zarr"):
        assert not [p for p in store.rglob("*") if p.is_dir() and p.parent.name in ("videos", "failures", "questions")]


# -- 4. duplicate question ids ---------------------------------------------------------------


def test_duplicate_qids_in_one_file_are_refused_before_decoding(tmp_path, tiny_clip):
    _need_videos()
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(VIDEOS / GOOD, data / "videos" / f"{name}.mp4")
    (data / "val.jsonl").write_text(jsonl_rows(question("q1", "a"), question("q2", "a"), question("q1", "b")))
    result = featurize(data, tmp_path / "cache", dataset="jsonl", encoder=tiny_clip)
    line = one_line_error(result)
    assert line.startswith(f"error: jsonl: {data / 'val.jsonl'} has question q1 twice: video 'a'")
    assert "video 'b'" in line  # both records named
    assert not (tmp_path / "cache").exists()  # no store, no video decoded


def test_duplicate_qids_across_split_files_are_refused_naming_both(tmp_path, tiny_clip):
    _need_videos()
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(VIDEOS / GOOD, data / "videos" / f"{name}.mp4")
    (data / "train.jsonl").write_text(jsonl_rows(question("q1", "a")))
    (data / "val.jsonl").write_text(jsonl_rows(question(1, "b"), question("q1", "b", question="which one?")))
    result = featurize(data, tmp_path / "cache", dataset="jsonl", encoder=tiny_clip)
    line = one_line_error(result)
    assert "question id 'q1' is listed twice" in line
    assert "video 'a' (train, 'what moves?')" in line and "video 'b' (val, 'which one?')" in line
    assert not (tmp_path / "cache").exists()


# -- 5. broken video files -------------------------------------------------------------------


def test_broken_videos_are_recorded_as_failed_and_the_rest_is_done(folder_run):
    result = folder_run["result"]
    no_traceback(result)
    assert result.exit_code == 3, result.output
    assert lines(result)[-1].startswith("2 videos done, 0 skipped, 4 failed")
    for name in sorted(BROKEN):
        assert f"failed {name}: unreadable: " in result.output
    assert folder_run["outside_after"] == folder_run["outside_before"]  # nothing written beside the cache
    store = open_store(folder_run["store"])
    assert store.complete_videos() == sorted(["good", LONG_ID])
    failures = store.failures()
    assert set(failures) == BROKEN
    assert failures["empty"].endswith("empty.mp4: empty file")
    for name in ("truncated", "text", "noise"):
        assert failures[name].startswith(f"unreadable: {folder_run['data'] / name}.mp4: not a readable media file")


def test_info_lists_the_failures_and_verify_counts_them(folder_run):
    info = cache_cmd("info", folder_run["store"])
    no_traceback(info)
    assert info.exit_code == 0 and "videos 2 complete, 0 incomplete, 4 failed" in info.output
    assert "failures (4):" in info.output
    for name in sorted(BROKEN):
        assert f"  {name}: unreadable: " in info.output
    verify = cache_cmd("verify", folder_run["store"])
    no_traceback(verify)
    assert verify.exit_code == 0
    assert summary(verify) == ("OK: 2 videos ok, 0 question bundles ok, 0 corrupt, 0 incomplete, "
                               "missing not checked (no expected ids), 4 failed")
    strict = cache_cmd("verify", folder_run["store"], "--strict")
    assert strict.exit_code == 1 and summary(strict).startswith("PROBLEMS: 2 videos ok")


# -- 6. a hand-edited spec -------------------------------------------------------------------


def test_hand_edited_spec_is_refused_by_info_verify_and_featurize(folder_run, tmp_path):
    cache, store = copy_store(folder_run, tmp_path)
    root = store / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["vqacache"]["spec"]["dtype"] = "float32"  # the arrays stay float16
    root.write_text(json.dumps(meta))
    fingerprint = meta["attributes"]["vqacache"]["fingerprint"][:12]
    for args in (("info", store), ("verify", store)):
        line = one_line_error(cache_cmd(*args))
        assert line.startswith(f"error: store {store}: its spec hashes to ")
        assert line.endswith(f"not the recorded {fingerprint} (edited by hand, or written by an incompatible version)")
    before = snapshot(store)
    line = one_line_error(featurize(folder_run["data"], cache, encoder=folder_run["encoder"]))
    assert "its spec hashes to" in line and "edited by hand" in line
    assert snapshot(store) == before


def test_hand_edited_spec_with_matching_fingerprint_is_not_reported_clean(folder_run, tmp_path):
    from vqacache.cache_spec.spec import FeatureSpec

    _, store = copy_store(folder_run, tmp_path)
    root = store / "zarr.json"
    meta = json.loads(root.read_text())
    attrs = meta["attributes"]["vqacache"]
    attrs["spec"]["dtype"] = "float32"
    attrs["fingerprint"] = FeatureSpec.from_dict(attrs["spec"]).fingerprint()
    root.write_text(json.dumps(meta))
    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code != 0, verify.output  # the store says float32; every array is float16


# -- 7. a flipped byte in a chunk ------------------------------------------------------------


def test_flipped_byte_is_corrupt_deleted_and_recomputed(folder_run, tmp_path):
    cache, store = copy_store(folder_run, tmp_path)
    original = open_store(store).read_video("good").cls.copy()
    shard = store / "videos" / "good" / "cls" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01  # in the data, before the shard index
    shard.write_bytes(bytes(data))

    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code == 1
    assert "│ corrupt │ video │ good " in verify.output
    assert "checksum mismatch (data changed, or a chunk/shard file deleted)" in verify.output
    assert summary(verify).startswith("PROBLEMS: 1 videos ok, 0 question bundles ok, 1 corrupt")

    deleted = cache_cmd("verify", store, "--delete-corrupt")
    no_traceback(deleted)
    assert deleted.exit_code == 1 and summary(deleted) == "deleted 1 corrupt groups; rerun vqa-featurize to recompute them"
    assert not (store / "videos" / "good").exists()
    assert sorted(open_store(store).complete_videos()) == [LONG_ID]

    rerun = featurize(folder_run["data"], cache, encoder=folder_run["encoder"])
    no_traceback(rerun)
    assert rerun.exit_code == 0, rerun.output
    assert lines(rerun)[-1].startswith("1 videos done, 5 skipped, 0 failed")
    clean = cache_cmd("verify", store)
    assert clean.exit_code == 0 and summary(clean).startswith("OK: 2 videos ok")
    np.testing.assert_array_equal(open_store(store).read_video("good").cls, original)


# -- 8. foreign things in the store ----------------------------------------------------------


def test_foreign_files_and_folders_are_ignored(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    (store / "videos" / "junk").mkdir()
    (store / "videos" / "junk" / "blob.bin").write_bytes(os.urandom(100))
    (store / "backup").mkdir()
    (store / "backup" / "notes.txt").write_text("not zarr")
    (store / "README.txt").write_text("not zarr")
    (store / "videos" / "stray.txt").write_text("not zarr")

    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code == 0, verify.output
    assert summary(verify).startswith("OK: 2 videos ok, 0 question bundles ok, 0 corrupt, 0 incomplete")
    info = cache_cmd("info", store)
    assert info.exit_code == 0 and "videos 2 complete, 0 incomplete, 4 failed" in info.output
    opened = open_store(store)
    assert opened.complete_videos() == sorted(["good", LONG_ID])
    assert opened.read_video("good").cls.shape == (72, 32)


def test_a_foreign_zarr_group_among_the_videos_is_reported_incomplete(folder_run, tmp_path):
    import zarr

    _, store = copy_store(folder_run, tmp_path)
    zarr.open_group(store / "videos" / "junk", mode="w", zarr_format=3).attrs["made_by"] = "someone else"
    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code == 1
    assert "│ incomplete │ video │ junk " in verify.output and "no completion marker" in verify.output
    assert summary(verify).startswith("PROBLEMS: 2 videos ok, 0 question bundles ok, 0 corrupt, 1 incomplete")
    assert open_store(store).complete_videos() == sorted(["good", LONG_ID])


def test_a_forged_group_with_a_dotdot_id_is_reported_corrupt(folder_run, tmp_path):
    import zarr

    _, store = copy_store(folder_run, tmp_path)
    group = zarr.open_group(store / "videos" / "evil", mode="w", zarr_format=3)
    group.attrs.update({"video_id": "../../evil", "complete": True})
    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code == 1, verify.output
    assert "corrupt" in verify.output and "evil" in verify.output


# -- extra: a video group moved onto another id's key ---------------------------------------


def _move_long_onto_good(store: Path, *, keep_source: bool) -> Path:
    videos = store / "videos"
    long_key = next(p for p in videos.iterdir() if p.name.startswith("%"))
    shutil.rmtree(videos / "good")
    if keep_source:
        shutil.copytree(long_key, videos / "good")
    else:
        long_key.rename(videos / "good")
    return long_key


def test_group_renamed_onto_another_key_is_reported_corrupt(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    _move_long_onto_good(store, keep_source=False)
    verify = cache_cmd("verify", store)
    no_traceback(verify)
    assert verify.exit_code == 1
    assert "stored under key 'good', which is not this id's" in verify.output
    assert summary(verify).startswith("PROBLEMS: 0 videos ok, 0 question bundles ok, 1 corrupt")


def test_group_renamed_onto_another_key_is_not_read_as_that_key(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    _move_long_onto_good(store, keep_source=False)
    opened = open_store(store)
    try:
        video = opened.read_video("good")
    except Exception:
        return  # refusing is right
    assert video.attrs["video_id"] == "good", "read_video('good') returned the data of another video id"


def test_delete_corrupt_removes_a_group_renamed_onto_another_key(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    _move_long_onto_good(store, keep_source=False)
    deleted = cache_cmd("verify", store, "--delete-corrupt")
    no_traceback(deleted)
    again = cache_cmd("verify", store)
    assert again.exit_code == 0, again.output


def test_delete_corrupt_keeps_the_intact_group_of_a_copied_id(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    long_key = _move_long_onto_good(store, keep_source=True)
    deleted = cache_cmd("verify", store, "--delete-corrupt")
    no_traceback(deleted)
    assert long_key.exists(), "--delete-corrupt deleted the intact group of the id the copy claims"
    assert not (store / "videos" / "good").exists()


# -- extra: a video group that is a symlink to a folder outside the store ---------------------


def test_delete_corrupt_on_a_symlinked_group_is_one_line_and_touches_nothing_outside(folder_run, tmp_path):
    _, store = copy_store(folder_run, tmp_path)
    outside = tmp_path / "outside"
    shutil.move(str(store / "videos" / "good"), outside)
    (store / "videos" / "good").symlink_to(outside, target_is_directory=True)
    shard = outside / "cls" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    before = snapshot(outside)
    verify = cache_cmd("verify", store)
    assert verify.exit_code == 1 and "│ corrupt │ video │ good " in verify.output
    deleted = cache_cmd("verify", store, "--delete-corrupt")
    assert snapshot(outside) == before  # never deletes through the link
    no_traceback(deleted)
