"""``verify_store`` and ``vqa-cache verify``: corrupt, incomplete, missing and failed groups."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from spec_factory import make_spec
from test_store import E, W, fake_video, write
from vqacache.cache_spec import delete_corrupt, open_store, verify_store
from vqacache.cache_spec import layout
from vqacache.cli.cache import app

runner = CliRunner()


def _questions(store, split, video_id, n=2):
    rng = np.random.default_rng(0)
    entries = [{"qid": f"{video_id}_{i}", "question": "q?", "candidates": ["a", "b"], "answer": 0, "qtype": None} for i in range(n)]
    arrays = {
        "text": rng.standard_normal((n, E)), "text_tokens": rng.standard_normal((n, 3, W)), "text_len": np.full(n, 3),
        "cand": rng.standard_normal((n, 2, E)), "cand_tokens": rng.standard_normal((n, 2, 3, W)), "cand_len": np.full((n, 2), 3),
    }
    store.write_questions(split, video_id, entries, arrays)


@pytest.fixture
def store(tmp_path):
    """Two complete videos (one spans two patch shards), one failure, one question bundle."""
    st = open_store(tmp_path / "s.zarr", "a", spec=make_spec(), dataset="demo")
    write(st, "a", fake_video(70, seed=1))
    write(st, "sub/b", fake_video(5, seed=2))
    st.record_failure("broken", "decode-error", "truncated file")
    _questions(st, "val", "a")
    st.write_run_log("run1", {"start": "2026-01-01T00:00:00+00:00", "done": 2})  # must not disturb verify
    return st


def _video_dir(store, video_id):
    return store.path / layout.VIDEOS / video_id.replace("/", "%2F")


def test_clean_store(store):
    calls = []
    report = verify_store(store, ["a", "sub/b", "broken"], lambda *a: calls.append(a))
    assert report.clean and report.exit_code == 0
    assert (report.ok, report.ok_questions) == (2, 1)
    assert report.corrupt == report.incomplete == report.missing == [] and report.unexpected == []
    assert [(p.id, p.detail) for p in report.failed] == [("broken", "decode-error: truncated file")]
    assert calls[0] == (0, 3, "") and calls[-1][:2] == (3, 3) and len(calls) == 4
    assert report.summary_line().startswith("OK: 2 videos ok, 1 question bundles ok, 0 corrupt")
    assert not verify_store(store, strict=True).clean  # --strict: recorded failures count


@pytest.mark.parametrize(
    "relpath, offset, detail",
    [
        ("cls/c/0/0", 100, "checksum mismatch"),  # uncompressed feature bytes inside a shard
        ("patch/c/0/0/0", -10, "unreadable"),  # the shard index (crc32c-protected)
        ("pts/c/0", 20, ""),  # a zstd chunk (no frame checksum): garbled values or a decode error
    ],
)
def test_flipped_bytes_are_corrupt(store, relpath, offset, detail):
    path = _video_dir(store, "a") / relpath
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_store(store)
    assert [(p.kind, p.what, p.id) for p in report.corrupt] == [("corrupt", "video", "a")]
    assert report.corrupt[0].detail.startswith(detail) and report.ok == 1 and report.exit_code == 1


@pytest.mark.parametrize("relpath", ["patch/c/1/0/0", "cls/c/0/0", "src_index/c/0"])
def test_deleted_chunk_file_is_corrupt(store, relpath):
    (_video_dir(store, "a") / relpath).unlink()  # zarr would silently read fill values
    assert store.is_complete("a")
    report = verify_store(store)
    assert [p.id for p in report.corrupt] == ["a"] and "checksum mismatch" in report.corrupt[0].detail


def test_deleted_array_is_corrupt(store):
    (_video_dir(store, "sub/b") / "patch" / "zarr.json").unlink()
    report = verify_store(store)
    assert [(p.id, p.detail) for p in report.corrupt] == [("sub/b", "array(s) missing: patch")]


def test_corrupt_question_bundle(store):
    path = store.path / layout.QUESTIONS / "val" / "a" / "text" / "c" / "0" / "0"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_store(store)
    assert [(p.what, p.id) for p in report.corrupt] == [("questions", "val/a")] and report.ok == 2


def test_partial_group_is_incomplete(store):
    group = store.root[layout.VIDEOS].create_group("killed", attributes={"video_id": "killed", "complete": False})
    group.create_array("cls", data=np.ones((3, E), np.float16))
    report = verify_store(store)
    assert [(p.kind, p.id) for p in report.incomplete] == [("incomplete", "killed")] and report.exit_code == 1
    assert "crashed" in report.incomplete[0].detail
    store.claim("killed", "worker-7", ttl_s=30)
    assert "being written by worker-7" in verify_store(store).incomplete[0].detail


def test_missing_and_unexpected_ids(store):
    report = verify_store(store, ["a", "c", "broken"], expected_questions=[("val", "a"), ("val", "c")])
    assert [(p.what, p.id) for p in report.missing] == [("video", "c"), ("questions", "val/c")]
    assert report.unexpected == ["sub/b"] and not report.clean  # extra videos are reported, not an error
    assert verify_store(store, ["a"]).clean
    assert "missing not checked" in verify_store(store).summary_line()


def test_delete_corrupt_makes_a_rerun_recompute(store):
    (_video_dir(store, "a") / "cls" / "c" / "0" / "0").unlink()
    report = verify_store(store, ["a", "sub/b"])
    assert delete_corrupt(store, report) == ["video a"]
    after = verify_store(store, ["a", "sub/b"])
    assert [p.id for p in after.missing] == ["a"] and after.corrupt == []
    write(store, "a", fake_video(70, seed=1))  # what the next featurize run does
    assert verify_store(store, ["a", "sub/b"]).clean


# -- CLI ---------------------------------------------------------------------------------


def test_cli_exit_codes(store, tmp_path):
    out = runner.invoke(app, ["verify", str(store.path)])
    assert out.exit_code == 0, out.output
    assert "OK: 2 videos ok" in out.output and "broken" in out.output  # failures listed, not fatal
    assert runner.invoke(app, ["verify", str(store.path), "--strict"]).exit_code == 1
    (_video_dir(store, "sub/b") / "cls" / "c" / "0" / "0").unlink()
    out = runner.invoke(app, ["verify", str(store.path)])
    assert out.exit_code == 1 and "corrupt" in out.output and "sub/b" in out.output and "PROBLEMS" in out.output
    out = runner.invoke(app, ["verify", str(store.path), "--delete-corrupt"])
    assert out.exit_code == 1 and "deleted 1 corrupt" in out.output and not store.is_complete("sub/b")
    out = runner.invoke(app, ["verify", str(tmp_path / "nothing.zarr")])
    assert out.exit_code == 2
    assert "Exit codes: 0 clean; 1" in runner.invoke(app, ["verify", "--help"]).output


def test_cli_expected_ids_from_a_dataset(tmp_path):
    data = tmp_path / "videos"
    (data / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.mp4", "c.avi"):
        (data / name).write_bytes(b"")  # the folder adapter lists files; nothing is decoded
    st = open_store(tmp_path / "f.zarr", "a", spec=make_spec(), dataset="folder")
    write(st, "a", fake_video(3))
    write(st, "sub/b", fake_video(3))
    out = runner.invoke(app, ["verify", str(st.path), "--data-root", str(data)])
    assert out.exit_code == 1 and "missing" in out.output and " c " in out.output, out.output
    write(st, "c", fake_video(3))
    out = runner.invoke(app, ["verify", str(st.path), "--dataset", "folder", "--data-root", str(data)])
    assert out.exit_code == 0 and "0 missing" in out.output, out.output
    out = runner.invoke(app, ["verify", str(st.path), "--dataset", "demo", "--data-root", str(data)])
    assert out.exit_code == 2 and "holds dataset 'folder'" in out.output
