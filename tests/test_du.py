"""``vqa-cache du``: every byte counted once, under the kind its path says; the projection.

Mutations tried (each makes a test here fail):
1. array ``zarr.json`` files counted as metadata -> test_bytes_by_kind (cls bytes != the cls folders' bytes);
2. the projection scales the whole store instead of the video bytes -> test_bytes_by_kind;
3. temporaries counted under their array's kind -> test_bytes_by_kind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import open_store  # noqa: E402
from vqacache.cache_spec.du import store_usage  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402


def _bytes_under(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_bytes_by_kind(tmp_path):
    store = open_store(tmp_path / "cache" / "toy" / "s.zarr", "a", spec=make_spec(patches=True), dataset="toy")
    rng = np.random.default_rng(0)
    for vid in ("a", "b"):
        with store.write_video(vid) as w:
            w.append(cls=rng.standard_normal((9, 8)), cls_hidden=rng.standard_normal((9, 8)),
                     patch=rng.standard_normal((9, 4, 8)), pts=np.arange(9) / 7.5, src_index=np.arange(9),
                     is_repeat=np.zeros(9, bool))
    pending = store.begin_video("c")  # a temporary
    pending.append(cls=np.ones((3, 8)), cls_hidden=np.ones((3, 8)), patch=np.ones((3, 4, 8)), pts=np.arange(3) / 7.5,
                   src_index=np.arange(3), is_repeat=np.zeros(3, bool))
    pending._flush("cls", final=True)
    store.record_failure("z", "DecodeError", "x")
    u = store_usage(store.path)
    assert u.total == _bytes_under(store.path)
    for kind in ("cls", "cls_hidden", "patch"):
        assert u.by_kind[kind] == sum(_bytes_under(store.path / "videos" / v / kind) for v in ("a", "b"))
    assert u.by_kind["temporaries"] == _bytes_under(pending._tmp)
    assert u.complete == 2 and u.failed == 1
    assert u.projection(4) == u.total + u.video_bytes  # twice the videos: the video bytes once more
    res = CliRunner().invoke(app, ["du", str(tmp_path / "cache")])
    assert res.exit_code == 0 and f"({u.total} bytes) in 1 stores" in res.output
    pending.abort()


def test_cli_projection_to_the_dataset(tmp_path, demo_root):
    from vqacache.featurize.datasets import get_dataset

    ds = get_dataset("demo", demo_root)
    listed = {v.video_id for s in ds.splits() for v in ds.videos(s)}
    store = open_store(tmp_path / "cache" / "demo" / "s.zarr", "a", spec=make_spec(patches=False), dataset="demo")
    with store.write_video(sorted(listed)[0]) as w:
        w.append(cls=np.ones((5, 8)), cls_hidden=np.ones((5, 8)), pts=np.arange(5) / 7.5, src_index=np.arange(5),
                 is_repeat=np.zeros(5, bool))
    u = store_usage(store.path)
    expected = u.total - u.video_bytes + u.video_bytes * len(listed)
    res = CliRunner().invoke(app, ["du", str(tmp_path / "cache"), "--data-root", str(demo_root)])
    assert res.exit_code == 0 and f"({len(listed)} videos)" in res.output, res.output
    from vqacache.cli.cache import _size

    assert _size(expected) in res.output
