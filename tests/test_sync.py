"""``vqa-cache sync`` against a real S3-compatible server (moto's standalone server, started on
loopback by this module), both ways, skipping what is there, resuming after an interruption,
and checking checksums on arrival.

Mutations tried (each makes a test here fail):
1. the group marker uploaded first instead of last -> test_interrupted_sync_resumes (a partial
   video becomes visible to readers and verify finds it corrupt);
2. the arrival checksum check skipped (marker written whatever the copy holds) ->
   test_corrupted_upload_is_caught;
3. the second attempt resumes too (keeps the damaged same-size object) -> test_corrupted_upload_is_caught;
4. complete destination videos not skipped -> test_local_to_s3_and_back (second sync copies again).

test_two_syncs_into_one_bucket checks only the end state of two runs started together; whether
their uploads interleave depends on timing, so it catches no planted mutation reliably (with
the arrival check skipped it still passed once).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from vqacache.cache_spec import SpecMismatch, open_store, verify_store
from vqacache.cache_spec.diff import diff_stores
from vqacache.cache_spec import sync as sync_mod
from vqacache.cache_spec.sync import SyncError, sync_stores
from vqacache.cli.cache import app
from vqacache.heads.synthetic import make_temporal_store

moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency (uv sync)")
s3fs = pytest.importorskip("s3fs", reason="s3fs is a dev dependency (uv sync)")


@pytest.fixture(scope="module")
def s3():
    """A loopback S3 server for this module; fsspec finds it through the AWS_* variables."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                              "AWS_ENDPOINT_URL")}
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3fs.S3FileSystem()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bucket(fs) -> str:
    name = f"b{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return f"s3://{name}/cache/toy/store.zarr"


@pytest.fixture
def source(tmp_path):
    store = make_temporal_store(tmp_path / "src.zarr", splits={"train": 2, "val": 1}, n_frames=10, dim=8, n_patches=2)
    store.record_failure("gone", "DecodeError", "unreadable")
    return store


def _same(a, b) -> None:
    d = diff_stores(a, b)
    assert d.equal, d
    assert a.questions() == b.questions() and a.failures() == b.failures()
    q = a.questions()[0]
    assert np.array_equal(a.read_question(q).text, b.read_question(q).text)
    assert a.teacher_spec() == b.teacher_spec()


def test_local_to_s3_and_back(s3, source, tmp_path):
    url = _bucket(s3)
    first = sync_stores(source.path, url)
    assert first.created and sorted(first.videos_copied) == source.complete_videos() and first.bundles_copied == 3
    remote = open_store(url)
    report = verify_store(remote)
    assert report.clean and report.ok == 3 and report.ok_questions == 3
    _same(source, remote)
    again = sync_stores(source.path, url)
    assert again.videos_copied == [] and again.videos_skipped == 3 and again.bundles_skipped == 3
    back = tmp_path / "back" / "store.zarr"
    res = CliRunner().invoke(app, ["sync", url, str(back)])
    assert res.exit_code == 0 and "3 videos copied" in res.output, res.output
    local = open_store(back)
    assert verify_store(local).clean and local.temporaries() == []
    _same(source, local)


def test_interrupted_sync_resumes(s3, source, monkeypatch):
    url = _bucket(s3)
    real_write = sync_mod._Side.write
    writes: dict[str, int] = {}

    def dying_write(self, data, *parts):
        if not self.local and parts[0] == "videos" and len(parts) > 2:  # a video's file, not the group's metadata
            writes[parts[1]] = writes.get(parts[1], 0) + 1
            if len(writes) == 2 and writes[parts[1]] == 4:  # the second video's 4th file: killed
                raise KeyboardInterrupt("killed")
        return real_write(self, data, *parts)

    monkeypatch.setattr(sync_mod._Side, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        sync_stores(source.path, url)
    monkeypatch.setattr(sync_mod._Side, "write", real_write)
    partial = open_store(url)
    seen = partial.complete_videos()
    assert len(seen) == 1 and verify_store(partial).clean  # the half-uploaded video is invisible
    resumed = sync_stores(source.path, url)
    assert resumed.files_resumed > 0 and len(resumed.videos_copied) == 2
    _same(source, open_store(url))


def test_corrupted_upload_is_caught(s3, source, monkeypatch):
    url = _bucket(s3)
    real_write = sync_mod._Side.write
    bad = {"left": 1}

    def flaky_write(self, data, *parts):  # one chunk arrives damaged, same size
        if not self.local and parts[0] == "videos" and parts[2:3] and parts[2].startswith("cls/c/") and bad["left"]:
            bad["left"] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return real_write(self, data, *parts)

    monkeypatch.setattr(sync_mod._Side, "write", flaky_write)
    sync_stores(source.path, url)  # the second upload of that video is clean
    _same(source, open_store(url))
    assert verify_store(open_store(url)).clean

    bad["left"] = 10**6  # damaged every time: refused, the video never published
    url2 = _bucket(s3)
    with pytest.raises(SyncError, match="checksum"):
        sync_stores(source.path, url2)
    assert open_store(url2).complete_videos() == []


def test_other_store_refused(s3, source, tmp_path):
    url = _bucket(s3)
    sync_stores(source.path, url)
    other = make_temporal_store(tmp_path / "other.zarr", splits={"train": 1}, n_frames=4, dim=8, n_patches=2, seed=3)
    with pytest.raises(SpecMismatch):
        sync_stores(other.path, url)
    res = CliRunner().invoke(app, ["sync", str(other.path), url])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "another store" in res.output


def test_two_syncs_into_one_bucket(s3, source):
    """Two syncs of one store into one bucket at the same moment: atomic PUTs of the same bytes,
    each group's checksum checked at the destination before its marker (docs/remote.md)."""
    url = _bucket(s3)
    sync_stores(source.path, url)  # the root exists; the two runs race over the groups of a fresh copy
    for video_id in source.complete_videos():
        s3.rm(f"{url}/videos/{video_id}", recursive=True)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(10)
            sync_stores(source.path, url)
        except BaseException as exc:  # noqa: BLE001 (checked below)
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    remote = open_store(url)
    assert verify_store(remote).clean
    _same(source, remote)
