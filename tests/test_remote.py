"""Stores read from fsspec URLs (issue 17): read-only, through zarr's own fsspec store.

Checked with ``file://`` URLs (fsspec's local filesystem behind zarr's ``FsspecStore``; the same
code path as ``s3://`` with ``s3fs``): ``info``/``verify``/``diff`` read them, writing is
refused, and stage two trains from a URL with the losses it gets from the local path.

Mutations tried (each makes a test here fail):
1. ``is_url`` always False (the URL taken for a local path) -> every test;
2. ``nbytes_on_disk`` walking the URL as a local folder (0 bytes) -> test_cli_reads_urls;
3. the read-only refusal removed from ``open_store`` -> test_cli_reads_urls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import StoreError, open_store  # noqa: E402
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
