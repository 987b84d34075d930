"""``vqa-cache export``: one store -> one HDF5 file in a layout other VideoQA code reads.

Per video (rows sorted by id: numerically for integer ids, else by string), the layout's
clip x frame slots are filled from the store's frames by :func:`~.layouts.slot_frames` (HCRN's
clip-centre rule), with the ``cls`` vectors in float32 (the released loaders' dtype). Written
beside them:

- ``ids`` (N,): int64 for ``nextqa``/``hcrn`` (every id must be a decimal integer), UTF-8
  strings for ``vgt``;
- ``pts`` (N, *grid) float64: the time each slot came from (NaN in failed videos' rows);
- file attributes ``vqacache_spec`` (the store's canonical spec JSON), ``vqacache_fingerprint``
  and ``vqacache_layout``.

Videos the store records as failed get all-zero rows, as the extraction scripts write for
videos they could not read (``vqa-cache import`` turns such rows back into failures).

An imported store (``vqa-cache import``) is written back as it was read: its frames already
are the slots, its ``pts`` and the source file's spec attributes are the ones it recorded, and
its storage dtype is the file's; so export -> import -> export gives the same bytes.

The file is built under a private temporary name beside ``out`` and published with an
exclusive hard link: an existing file is never replaced.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vqacache.cache_spec import layout as store_layout
from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.hdf5.layouts import (
    FINGERPRINT_ATTR, IDS, LAYOUT_ATTR, PTS, SPEC_ATTR, H5Layout, get_layout, slot_frames,
)
from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.publish import is_temporary
from vqacache.cache_spec.store import FeatureStore

_INT_ID = re.compile(r"^[0-9]{1,18}$")


@dataclass
class ExportReport:
    """What :func:`export_store` wrote: ``videos`` rows with features, ``failed`` all-zero rows."""

    path: str
    layout: str
    videos: int = 0
    failed: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = ()


def export_store(store: FeatureStore, layout_name: str, out: str | Path, split: str | None = None) -> ExportReport:
    """Write ``store`` (the videos of ``split``'s question bundles, or every complete and failed
    video) to ``out`` in layout ``layout_name``; see the module docstring."""
    lay = get_layout(layout_name)
    out = Path(out)
    if out.exists():
        raise UsageError(f"--out {out} exists; choose another path (export never replaces a file)")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    imported = store.imported
    if imported is not None and imported.get("layout") != lay.name:
        raise UsageError(
            f"--layout {lay.name}: store {store.path} was imported from a {imported.get('layout')} file; "
            f"export it as --layout {imported.get('layout')}"
        )
    complete, failed = _chosen_videos(store, split)
    ids = _sorted_ids(lay, complete + failed)
    if not complete:
        raise UsageError(f"store {store.path} has no complete video{' in --split ' + split if split else ''} to export")
    dim = int(store.video_arrays(complete[0])["cls"].shape[-1])
    dtype = np.dtype(store.spec.dtype) if imported is not None else np.dtype("float32")
    with_pts = imported is None or imported.get("pts") == "file"
    attrs = _file_attrs(store, lay)
    report = ExportReport(path=str(out), layout=lay.name, shape=(len(ids), *lay.grid, dim))
    failed_set = set(failed)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:16]}")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            id_dtype = np.int64 if lay.ids == "int" else h5py.string_dtype("utf-8")
            f.create_dataset(IDS, data=np.array([int(v) if lay.ids == "int" else v for v in ids], dtype=id_dtype),
                             track_times=False)
            feats = f.create_dataset(lay.features, shape=(len(ids), *lay.grid, dim), dtype=dtype, track_times=False)
            pts = f.create_dataset(PTS, shape=(len(ids), *lay.grid), dtype=np.float64, track_times=False) if with_pts else None
            for row, video_id in enumerate(ids):
                if video_id in failed_set:
                    feats[row] = np.zeros((*lay.grid, dim), dtype)
                    if pts is not None:
                        pts[row] = np.full(lay.grid, np.nan)
                    report.failed.append(video_id)
                    continue
                vectors, times = _slots(store, lay, video_id, imported is not None)
                feats[row] = vectors.astype(dtype, copy=False)
                if pts is not None:
                    pts[row] = times
                report.videos += 1
        os.link(tmp, out)  # exclusive: a file created meanwhile is kept, ours dropped
    except FileExistsError:
        raise UsageError(f"--out {out} was created by someone else meanwhile; nothing written") from None
    finally:
        tmp.unlink(missing_ok=True)
    return report


def _chosen_videos(store: FeatureStore, split: str | None) -> tuple[list[str], list[str]]:
    """(complete ids, failed-and-not-complete ids) of ``split``'s bundles, or of the store."""
    complete = set(store.complete_videos())
    failed = set(store.failures()) - complete
    if split is None:
        return sorted(complete), sorted(failed)
    try:
        parent = store.root[f"{store_layout.QUESTIONS}/{id_to_key(split, 'split')}"]
    except KeyError:
        splits = sorted(k for k, _ in store.root[store_layout.QUESTIONS].groups()) if store_layout.QUESTIONS in store.root else []
        raise UsageError(f"--split {split}: store {store.path} has no questions of that split; it has: "
                         f"{', '.join(splits) or 'none'}") from None
    wanted = {str(g.attrs.get("video_id")) for k, g in parent.groups() if not is_temporary(k)}
    return sorted(wanted & complete), sorted(wanted & failed)


def _sorted_ids(lay: H5Layout, ids: list[str]) -> list[str]:
    if lay.ids == "str":
        return sorted(ids)
    bad = [v for v in ids if not _INT_ID.match(v)]
    if bad:
        raise UsageError(
            f"--layout {lay.name} stores integer video ids; {bad[0]!r}"
            f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} is not one "
            "(use --layout vgt, whose ids are strings)"
        )
    return sorted(ids, key=int)


def _file_attrs(store: FeatureStore, lay: H5Layout) -> dict[str, str]:
    """The spec, fingerprint and layout attributes: the store's own, or for an imported store
    those its source file carried (absent ones stay absent)."""
    imported = store.imported
    if imported is None:
        return {SPEC_ATTR: store.spec.to_json(), FINGERPRINT_ATTR: store.fingerprint, LAYOUT_ATTR: lay.name}
    recorded = imported.get("attrs") or {}
    return {k: recorded[k] for k in (SPEC_ATTR, FINGERPRINT_ATTR, LAYOUT_ATTR) if isinstance(recorded.get(k), str)}


def _slots(store: FeatureStore, lay: H5Layout, video_id: str, imported: bool) -> tuple[np.ndarray, np.ndarray]:
    """(*grid, D) slot vectors and (*grid,) slot times of one complete video."""
    arrays = store.video_arrays(video_id)
    if imported:  # the frames are the slots already
        cls, pts = arrays["cls"][:], arrays["pts"][:]
        if len(cls) != lay.slots:
            raise UsageError(f"video {video_id!r} of imported store {store.path} has {len(cls)} slots, not {lay.slots}")
        return cls.reshape(*lay.grid, -1), pts.reshape(lay.grid)
    pts_all = arrays["pts"][:]
    index = slot_frames(len(pts_all), lay.clips, lay.frames_per_clip)  # (clips, frames)
    flat = np.unique(index)
    rows = np.asarray(arrays["cls"].get_orthogonal_selection((flat, slice(None))))  # only the frames used
    picked = rows[np.searchsorted(flat, index.ravel())]  # (clips * frames, D)
    return picked.reshape(*lay.grid, -1), pts_all[index].reshape(lay.grid)
