"""Stores read from fsspec URLs (issue 17): read-only, through zarr's own fsspec store.

Checked with ``file://`` URLs (fsspec's local filesystem behind zarr's ``FsspecStore``; the same
code path as ``s3://`` with ``s3fs``): ``info``/``verify``/``diff`` read them, writing is
refused, and stage two trains from a URL with the losses it gets from the local path.
``http://``: a store folder served on loopback by a plain HTTP server that honours ``Range``
requests (as every static server and object store does; Python's own ``http.server`` does not,
so the test adds it); fsspec's HTTP filesystem lists folders from the server's index pages.
``gs://``: ``gcsfs`` against ``gcp-storage-emulator`` (a dev dependency) on loopback, found by
``STORAGE_EMULATOR_HOST``; the emulator does not serve suffix ranges (``bytes=-N``, which zarr
uses for shard indexes and real GCS serves), so the test adds them to its download handler.
Over both, ``info``/``verify``/``diff`` read the store and stage two's dataset yields the same
samples as from the local path; ``vqa-cache sync`` copies local -> gs:// -> local.

Mutations tried (each makes a test here fail):
1. ``is_url`` always False (the URL taken for a local path) -> every test;
2. ``nbytes_on_disk`` walking the URL as a local folder (0 bytes) -> test_cli_reads_urls;
3. the read-only refusal removed from ``open_store`` -> test_cli_reads_urls;
4. the listings cache left on for URL stores (``use_listings_cache`` dropped) -> test_gs_reads_and_sync
   (a store reopened after a sync does not see the new videos);
5. the HTTP test server ignoring ``Range`` (as ``http.server`` does) -> test_http_reads (the
   checksum of every sharded chunk fails), which shows the test reads through range requests.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import StoreError, open_store  # noqa: E402
from vqacache.cache_spec.diff import diff_stores  # noqa: E402
from vqacache.cache_spec.remote import StoreURL  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402


def test_cli_reads_urls(tmp_path):
    store = open_store(tmp_path / "s.zarr", "a", spec=make_spec(patches=False), dataset="toy")
    rng = np.random.default_rng(0)
    for vid in ("a", "sub/b"):
        with store.write_video(vid) as w:
            w.append(cls=rng.standard_normal((9, 8)), cls_hidden=rng.standard_normal((9, 8)), pts=np.arange(9) / 7.5,
                     src_index=np.arange(9), is_repeat=np.zeros(9, bool))
    store.record_failure("c", "DecodeError", "unreadable")
    url = f"file://{store.path}"
    remote = open_store(url)
    assert isinstance(remote.path, StoreURL) and str(remote.path) == url and remote.path.name == "s.zarr"
    assert remote.complete_videos() == ["a", "sub/b"] and remote.failures() == store.failures()
    assert np.array_equal(remote.read_video("sub/b").cls, store.read_video("sub/b").cls)
    assert remote.summary()["bytes"] == store.nbytes_on_disk()
    with pytest.raises(StoreError, match="read-only"):
        open_store(url, "a")
    runner = CliRunner()
    info = runner.invoke(app, ["info", url])
    assert info.exit_code == 0 and "videos 2 complete" in info.output and "c: DecodeError" in info.output
    ok = runner.invoke(app, ["verify", url])
    assert ok.exit_code == 0 and "OK: 2 videos ok" in ok.output
    same = runner.invoke(app, ["diff", url, str(store.path)])
    assert same.exit_code == 0 and "EQUAL" in same.output
    refused = runner.invoke(app, ["verify", url, "--delete-corrupt"])
    assert refused.exit_code == 2 and "opens read-only" in refused.output


def test_stage_two_trains_from_a_url(tmp_path):
    from vqacache.heads.synthetic import make_temporal_store
    from vqacache.heads.train import TrainConfig, train

    store = make_temporal_store(tmp_path / "t.zarr", splits={"train": 6, "val": 2}, n_frames=10, dim=16, n_patches=2)
    args = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}
    local = train(TrainConfig(method="uniform", store=str(store.path), out=str(tmp_path / "l"), epochs=1,
                              batch_size=4, lr=1e-3, args=args))
    remote = train(TrainConfig(method="uniform", store=f"file://{store.path}", out=str(tmp_path / "r"), epochs=1,
                               batch_size=4, lr=1e-3, args=args))
    assert remote["losses"] == local["losses"] and np.isfinite(remote["train_loss"])


# -- https:// (plain HTTP on loopback) and gs:// (an emulator) ----------------------------------


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` / ``bytes=-n`` answered by 206 (http.server ignores Range)."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            self._left = None
            return super().send_head()
        size = os.path.getsize(path)
        a, b = match.groups()
        start, end = (int(a), min(int(b) if b else size - 1, size - 1)) if a else (max(0, size - int(b)), size - 1)
        f = open(path, "rb")  # noqa: SIM115 (closed by the base class after copyfile)
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        if getattr(self, "_left", None) is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self._left))


@pytest.fixture
def served(tmp_path):
    """(local store, its http:// URL): a folder served on loopback for the test's duration."""
    from vqacache.heads.synthetic import make_temporal_store

    store = make_temporal_store(tmp_path / "www" / "t.zarr", splits={"train": 2, "val": 1}, n_frames=10, dim=8,
                                n_patches=2)
    store.record_failure("gone", "DecodeError", "unreadable")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield store, f"http://127.0.0.1:{server.server_address[1]}/t.zarr"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _same_samples(url: str, local) -> None:
    """Stage two's dataset over ``url`` yields the local store's samples (uniform's inputs, all frames' patches)."""
    import torch

    from vqacache.heads.data import QADataset

    a = QADataset(url, "train", num_frames=8, patch_frames="all")
    b = QADataset(str(local.path), "train", num_frames=8, patch_frames="all")
    assert len(a) == len(b) == len(local.questions("train"))
    for i in range(len(a)):
        x, y = a[i], b[i]
        for key in ("cls", "patch", "text", "cand", "imageqa"):
            assert torch.equal(x[key], y[key]), key


def _cli_reads(url: str, local, videos: int) -> None:
    runner = CliRunner()
    info = runner.invoke(app, ["info", url])
    assert info.exit_code == 0 and f"videos {videos} complete" in info.output and "gone: DecodeError" in info.output
    ok = runner.invoke(app, ["verify", url])
    assert ok.exit_code == 0 and f"OK: {videos} videos ok" in ok.output, ok.output
    same = runner.invoke(app, ["diff", url, str(local.path)])
    assert same.exit_code == 0 and "EQUAL" in same.output


def test_http_reads(served):
    local, url = served
    remote = open_store(url)
    assert remote.complete_videos() == local.complete_videos() and remote.summary()["bytes"] == local.nbytes_on_disk()
    _cli_reads(url, local, 3)
    _same_samples(url, local)


def test_gs_reads_and_sync(tmp_path, monkeypatch):
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # no gRPC probe of the bucket type
    emulator = pytest.importorskip("gcp_storage_emulator.server", reason="gcp-storage-emulator is a dev dependency")
    gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is a dev dependency")
    from gcp_storage_emulator.handlers import objects

    from vqacache.cache_spec.sync import sync_stores
    from vqacache.heads.synthetic import make_temporal_store

    def download(request, response, storage, *args, **kwargs):  # + suffix ranges, which real GCS serves
        suffix = re.fullmatch(r"\s*bytes=-(\d+)\s*", request.get_header("range", "") or "")
        if suffix:
            size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
            headers = request._request_handler.headers
            del headers["Range"]
            headers["Range"] = f"bytes={max(0, size - int(suffix.group(1)))}-"
        return objects.download(request, response, storage, *args, **kwargs)

    for _, handlers in emulator.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is objects.download:
                monkeypatch.setitem(handlers, method, download)
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    server = emulator.create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        host, port = server._api._httpd.server_address
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{host}:{port}")
        gcsfs.GCSFileSystem.clear_instance_cache()
        gcsfs.GCSFileSystem(token="anon").mkdir("lab")
        small = make_temporal_store(tmp_path / "s.zarr", splits={"train": 1}, n_frames=10, dim=8, n_patches=2)
        local = make_temporal_store(tmp_path / "t.zarr", splits={"train": 2}, n_frames=10, dim=8, n_patches=2)
        local.record_failure("gone", "DecodeError", "unreadable")  # the same store with one more video
        url = "gs://lab/cache/t.zarr"
        first = sync_stores(small.path, url)
        assert first.created and first.videos_copied == ["train00000"]
        assert open_store(url).complete_videos() == ["train00000"]
        assert sync_stores(local.path, url).videos_copied == ["train00001"]
        _cli_reads(url, local, 2)
        _same_samples(url, local)
        back = sync_stores(url, tmp_path / "back.zarr")
        assert sorted(back.videos_copied) == ["train00000", "train00001"]
        assert diff_stores(open_store(tmp_path / "back.zarr"), local).equal
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
        server.stop()
