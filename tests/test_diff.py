"""``vqa-cache diff``: spec fields, videos in one store only, largest differences, fp16 equality.

Mutations tried (each makes a test here fail):
1. tolerance ``2**-12`` instead of ``2**-10`` (one fp16 ulp apart counted as different) -> test_one_ulp_is_equal;
2. ``max_abs`` kept from the first video instead of the largest -> test_changed_value_is_reported;
3. ``equal`` ignores videos in one store only -> test_spec_and_missing_videos;
4. ``sample_ids`` takes the first n ids -> test_sample_spreads_over_ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import open_store  # noqa: E402
from vqacache.cache_spec.diff import diff_stores, sample_ids  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402


def _store(path: Path, cls: dict[str, np.ndarray], seed: int = 0):
    store = open_store(path, "a", spec=make_spec(patches=False, seed=seed), dataset="toy")
    for vid, x in cls.items():
        n = len(x)
        with store.write_video(vid) as w:
            w.append(cls=x, cls_hidden=np.ones((n, 4)), pts=np.arange(n) / 7.5, src_index=np.arange(n),
                     is_repeat=np.zeros(n, bool))
    return store


def _values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"v{i}": rng.standard_normal((20 + i, 6)).astype(np.float16) for i in range(4)}


def test_one_ulp_is_equal(tmp_path):
    base = _values()
    nudged = {k: np.nextafter(v, np.float16(np.inf)) for k, v in base.items()}  # one fp16 ulp up
    a, b = _store(tmp_path / "a.zarr", base), _store(tmp_path / "b.zarr", nudged)
    d = diff_stores(a, b)
    assert d.equal and d.arrays["cls"].max_abs > 0 and len(d.compared) == 4
    res = CliRunner().invoke(app, ["diff", str(a.path), str(b.path)])
    assert res.exit_code == 0 and "EQUAL" in res.output


def test_changed_value_is_reported(tmp_path):
    base = _values()
    changed = {k: v.copy() for k, v in base.items()}
    changed["v2"][5, 3] = np.float16(float(changed["v2"][5, 3]) * 1.05 + 0.01)
    changed["v1"][0, 0] = np.float16(float(changed["v1"][0, 0]) + 0.002)
    a, b = _store(tmp_path / "a.zarr", base), _store(tmp_path / "b.zarr", changed)
    d = diff_stores(a, b)
    worst = max(float(np.abs(base[k].astype(np.float64) - changed[k].astype(np.float64)).max()) for k in base)
    assert not d.equal and d.arrays["cls"].max_abs == worst and d.arrays["cls"].worst_video == "v2"
    assert d.arrays["cls_hidden"].within_fp16
    res = CliRunner().invoke(app, ["diff", str(a.path), str(b.path)])
    assert res.exit_code == 1 and "cls: max abs" in res.output and "DIFFERENT" in res.output


def test_spec_and_missing_videos(tmp_path):
    base = _values()
    a = _store(tmp_path / "a.zarr", base)
    b = _store(tmp_path / "b.zarr", {k: v for k, v in base.items() if k != "v3"}, seed=7)
    d = diff_stores(a, b)
    assert d.spec == ["weights.identity: 'random:0' != 'random:7'"] and d.only_a == ["v3"] and not d.only_b
    assert all(x.within_fp16 for x in d.arrays.values()) and not d.equal
    same_spec = _store(tmp_path / "c.zarr", {k: v for k, v in base.items() if k != "v0"})
    assert not diff_stores(a, same_spec).equal and diff_stores(a, same_spec).only_a == ["v0"]
    res = CliRunner().invoke(app, ["diff", str(a.path), str(b.path)])
    assert res.exit_code == 1 and "spec: weights.identity" in res.output and "only in A: v3" in res.output


def test_sample_spreads_over_ids(tmp_path):
    ids = [f"x{i:02d}" for i in range(10)]
    assert sample_ids(ids, 3) == ["x00", "x04", "x09"]  # round(linspace(0, 9, 3)): 4.5 rounds to even
    assert sample_ids(ids, 0) == ids and sample_ids(ids, 50) == ids
    a = _store(tmp_path / "a.zarr", _values())
    assert len(diff_stores(a, a, sample=2).compared) == 2
