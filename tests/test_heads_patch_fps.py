"""Stage two on a ``--patch-fps`` store: the frames a question uses are those that have patch
tokens (the sub-grid), picked by the shared frame-selection rule; every patch read is the row
of that very frame (by pts), in the same store or in a separate patch store.

Mutations tried (each fails a test here):
- ``_patch`` reading ``patch`` at the frame rows (``rows = chosen``) on a sub-grid store;
- the question's frames chosen among all frames (``usable = arange``) when patches are read;
- the patch rows of a separate patch store not mapped through its sub-grid (its frame rows used).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vqacache.cache_spec import open_store, subgrid_rows
from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.featurize.pipeline import FeaturizeConfig, featurize
from vqacache.heads.data import QADataset


@pytest.fixture(scope="module")
def stores(tmp_path_factory, demo_root, tiny_clip):
    """The demo's val split with patches on a 2 fps sub-grid, and without (CLS only)."""
    cache = tmp_path_factory.mktemp("cache")
    paths = {}
    for name, kw in (("sub", {"patch_fps": Fraction(2)}), ("cls_only", {"patches": False})):
        result = featurize(FeaturizeConfig(dataset="demo", encoder=tiny_clip, cache_root=cache / name,
                                           data_root=demo_root, weights="random", splits=("val",), workers=0, **kw))
        assert result.exit_code == 0 and result.failed == 0, result.summary_line()
        paths[name] = result.store_path
    return paths


def _check_items(ds: QADataset, patch_store, num_frames: int) -> None:
    for i in range(len(ds)):
        item, ref = ds[i], ds.refs[i]
        arrays = patch_store.video_arrays(ref.video_id)
        pts, patch_pts, patch = arrays["pts"][:], arrays["patch_pts"][:], arrays["patch"][:]
        rows = subgrid_rows(pts, 2)
        usable = frame_indices(pts[rows], num_frames, ref.start, ref.end)  # independently: among sub-grid frames
        expected_pts = pts[rows][usable]
        want = np.stack([patch[int(np.flatnonzero(patch_pts == p)[0])] for p in expected_pts]).astype(np.float32)
        np.testing.assert_array_equal(item["patch"].numpy(), want)
        assert item["cls"].shape[0] == len(expected_pts)


@pytest.mark.parametrize("num_frames", [4, 100])
def test_questions_use_the_frames_that_have_patches(stores, num_frames):
    store = open_store(stores["sub"])
    assert store.spec.outputs.patch_fps is not None
    ds = QADataset(store, "val", num_frames=num_frames, patch_frames="all")
    _check_items(ds, store, num_frames)
    cls_store_rows = store.video_arrays(ds.refs[0].video_id)["cls"].shape[0]
    assert cls_store_rows > store.video_arrays(ds.refs[0].video_id)["patch"].shape[0]  # a real sub-grid


def test_a_separate_patch_store_with_a_subgrid(stores):
    """CLS from a store without patches, patches from the sub-grid store (``--store patch=...``)."""
    ds = QADataset(stores["cls_only"], "val", num_frames=100, patch_frames="all", roles={"patch": stores["sub"]})
    _check_items(ds, open_store(stores["sub"]), 100)
