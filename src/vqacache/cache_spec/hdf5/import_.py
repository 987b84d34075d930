"""``vqa-cache import``: one HDF5 file in a known layout -> one read-only store.

The store's spec says where its numbers came from: weights ``imported`` with identity
``sha256:<the file's bytes>``, sampling policy ``clip-grid-v1`` (its frames are the file's
clip x frame slots, row order), outputs ``imported:<feature dataset>``, the file's float
dtype, and ``extra.imported``: the layout, file name and sha256, whether slot times came from
the file's ``pts`` (``"file"``) or are slot indices (``"slot-index"``, released files carry no
times), and the file's ``vqacache_*`` attributes verbatim. When those attributes hold a valid
spec (a file ``vqa-cache export`` wrote), its architecture, preprocessing and fps are kept;
otherwise architecture is ``unknown`` and the preprocessing fields are placeholders
(``extra.imported.preprocess = "unknown"``).

Each video holds ``cls`` (S, D) and ``patch`` (S, 1, D), the same slot vectors (one token per
frame, so methods that read patch tokens train from released features), ``pts`` (S,),
``src_index`` (S,) the slot index, ``is_repeat`` where a slot repeats the previous slot's time.
A row that is all zeros (the extraction scripts write zeros for videos they could not read) is
recorded as a failure (``ZeroFeatures``), never stored as features.

The store is built under a private temporary name and published with one rename; a store of
the same file already there is opened instead. Loading reads arrays and JSON only.

**Hostile files** are refused with one line before anything is written (docs/safety.md):
datasets reached through an external link, kept in external raw files or virtual (mapping
other files): import reads only the file it is given; a feature width over
:data:`MAX_WIDTH` or more than :data:`MAX_ROWS` rows; datasets that declare more data than
the file stores (chunks or contiguous storage never written: a small file posing as a huge
one); features that are not floats (integers, complex, variable-length, object); ids that are
not one-dimensional integers or strings; slot times that are not numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vqacache.cache_spec.errors import SpecError, StoreError, UsageError
from vqacache.cache_spec.hdf5.layouts import FINGERPRINT_ATTR, IDS, LAYOUT_ATTR, PTS, SPEC_ATTR, H5Layout, get_layout
from vqacache.cache_spec.keys import validate_id
from vqacache.cache_spec.layout import store_path
from vqacache.cache_spec.spec import FeatureSpec, OutputSpec, PreprocessSpec, SamplingSpec, WeightsSpec
from vqacache.cache_spec.store import FeatureStore, _create_root, open_store

MAX_WIDTH = 65536
"""Largest feature width D imported (encoders in use are at most a few thousand wide)."""
MAX_ROWS = 10_000_000
"""Most videos (rows) one file may hold."""

PLACEHOLDER_PREPROCESS = PreprocessSpec(
    decode_short_side=None, decode_interpolation="bilinear", resize_short_side=1, interpolation="bilinear",
    crop="none", crop_size=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
)
"""Preprocessing of a file without a vqacache spec: unknown; these values only fill the fields."""


@dataclass
class ImportReport:
    path: str
    videos: int = 0
    failed: list[str] = field(default_factory=list)
    already: bool = False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_file(path: str | Path, layout_name: str, dataset: str, cache_root: str | Path) -> tuple[FeatureStore, ImportReport]:
    """Import ``path`` (layout ``layout_name``) as dataset ``dataset``'s store under ``cache_root``."""
    lay = get_layout(layout_name)
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"FILE {path} does not exist")
    validate_id(dataset, "--dataset")
    digest = file_sha256(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # not HDF5, truncated, locked
        raise UsageError(f"FILE {path} is not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    with f:
        ids, feats, pts, attrs = _check_file(f, lay, path)
        spec = imported_spec(lay, path.name, digest, feats.dtype, attrs, has_pts=pts is not None)
        final = store_path(cache_root, dataset, spec.encoder, spec.fingerprint())
        if (final / "zarr.json").exists():
            store = open_store(final)
            return store, ImportReport(str(final), len(store.complete_videos()), sorted(store.failures()), already=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:16]}")
        try:
            _create_root(tmp, spec, dataset)
            report = _write_videos(FeatureStore(tmp, writable=True), lay, ids, feats, pts, path.name)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "zarr.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another import of this file published first
                report.already = True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    report.path = str(final)
    return open_store(final), report


def _check_file(f: h5py.File, lay: H5Layout, path: Path) -> tuple[list[str], h5py.Dataset, h5py.Dataset | None, dict]:
    for name in (IDS, lay.features, PTS):
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise UsageError(f"{path}: {name!r} is an external link to {link.filename}:{link.path}; import reads only "
                             "the file it is given")
    for name in (IDS, lay.features):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise UsageError(f"{path} has no dataset {name!r}: not a --layout {lay.name} file ({lay.loader})")
    feats = f[lay.features]
    if feats.ndim != 2 + len(lay.grid) or tuple(feats.shape[1:-1]) != lay.grid or feats.dtype.kind != "f":
        raise UsageError(
            f"{path}: {lay.features!r} is {feats.dtype} {feats.shape}; --layout {lay.name} needs floats of shape "
            f"(N, {', '.join(map(str, lay.grid))}, D)"
        )
    if not 1 <= feats.shape[-1] <= MAX_WIDTH or feats.shape[0] > MAX_ROWS:
        raise UsageError(f"{path}: {lay.features!r} has shape {feats.shape}; import takes at most {MAX_ROWS} rows "
                         f"of width 1 to {MAX_WIDTH}")
    pts = f[PTS] if PTS in f else None
    for name, ds in ((IDS, f[IDS]), (lay.features, feats), (PTS, pts)):
        if ds is not None:
            _check_stored(ds, name, path)
    if f[IDS].ndim != 1 or not (f[IDS].dtype.kind in "iu" or h5py.check_string_dtype(f[IDS].dtype) is not None):
        raise UsageError(f"{path}: {IDS!r} is {f[IDS].dtype} {f[IDS].shape}; ids are one-dimensional integers or strings")
    if pts is not None and pts.dtype.kind not in "fiu":
        raise UsageError(f"{path}: {PTS!r} is {pts.dtype}; slot times are numbers (seconds)")
    ids = [_id_text(v) for v in f[IDS][:]]
    if len(ids) != feats.shape[0]:
        raise UsageError(f"{path}: {len(ids)} ids for {feats.shape[0]} feature rows")
    seen: set[str] = set()
    for video_id in ids:
        validate_id(video_id)
        if video_id in seen:
            raise UsageError(f"{path}: video id {video_id!r} appears twice in {IDS!r}")
        seen.add(video_id)
    if pts is not None and tuple(pts.shape) != (feats.shape[0], *lay.grid):
        raise UsageError(f"{path}: {PTS!r} has shape {pts.shape}, not (N, {', '.join(map(str, lay.grid))})")
    attrs = {k: _attr_text(f.attrs[k]) for k in (SPEC_ATTR, FINGERPRINT_ATTR, LAYOUT_ATTR) if k in f.attrs}
    return ids, feats, pts, {k: v for k, v in attrs.items() if v is not None}


def _check_stored(ds: h5py.Dataset, name: str, path: Path) -> None:
    """Refuse a dataset whose bytes live outside this file (external raw files, a virtual
    dataset) or that declares more data than the file stores (never-written chunks/storage)."""
    if ds.external:
        raise UsageError(f"{path}: {name!r} keeps its data in external files ({', '.join(str(e[0]) for e in ds.external)}); "
                         "import reads only the file it is given")
    if ds.is_virtual:
        raise UsageError(f"{path}: {name!r} is a virtual dataset (its data comes from other files); import reads only "
                         "the file it is given")
    if ds.size == 0:
        return
    if ds.chunks is None:
        stored, declared = ds.id.get_storage_size(), ds.size * ds.dtype.itemsize
        missing = stored < declared
    else:
        expected = int(np.prod([-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)], dtype=np.float64))
        stored, declared = ds.id.get_num_chunks(), expected
        missing = stored < expected
    if missing:
        unit = "bytes" if ds.chunks is None else "chunks"
        raise UsageError(f"{path}: {name!r} declares shape {ds.shape} but the file stores {stored} of its {declared} "
                         f"{unit} (never written); not a feature file")


def _id_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _attr_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value if isinstance(value, str) else None


def imported_spec(lay: H5Layout, file_name: str, digest: str, dtype: np.dtype, attrs: dict[str, str],
                  has_pts: bool) -> FeatureSpec:
    """The spec of a store imported from a file (see the module docstring)."""
    source = None
    if SPEC_ATTR in attrs:
        try:
            source = FeatureSpec.from_json(attrs[SPEC_ATTR])
        except SpecError:
            source = None  # kept verbatim in extra; its fields are not trusted
    storage = "float16" if np.dtype(dtype) == np.float16 else "float32"
    return FeatureSpec(
        encoder=f"imported-{lay.name}",
        architecture=source.architecture if source else "unknown",
        weights=WeightsSpec("imported", f"sha256:{digest}"),
        preprocess=source.preprocess if source else PLACEHOLDER_PREPROCESS,
        sampling=SamplingSpec(source.sampling.fps if source else "1", "clip-grid-v1"),
        outputs=OutputSpec(cls=f"imported:{lay.features}", cls_hidden=None, patch_layer=f"imported:{lay.features}",
                           patch_pool=1, text=None, text_context=None),
        dtype=storage,
        extra={"imported": {
            "layout": lay.name, "file": file_name, "sha256": digest, "features": lay.features,
            "pts": "file" if has_pts else "slot-index", "preprocess": "source" if source else "unknown",
            "attrs": dict(sorted(attrs.items())),
        }},
    )


def _write_videos(store: FeatureStore, lay: H5Layout, ids: list[str], feats: h5py.Dataset,
                  pts: h5py.Dataset | None, file_name: str) -> ImportReport:
    report = ImportReport(str(store.path))
    slots = lay.slots
    for row, video_id in enumerate(ids):
        vectors = np.asarray(feats[row]).reshape(slots, -1)  # (S, D)
        if not vectors.any():
            store.record_failure(video_id, "ZeroFeatures",
                                 f"row {row} of {file_name} is all zeros (the extraction wrote zeros: the video failed)")
            report.failed.append(video_id)
            continue
        if not np.isfinite(vectors).all():
            store.record_failure(video_id, "NonFinite", f"row {row} of {file_name} holds NaN or inf")
            report.failed.append(video_id)
            continue
        times = np.asarray(pts[row], dtype=np.float64).reshape(slots) if pts is not None else np.arange(slots, dtype=np.float64)
        repeat = np.concatenate([[False], times[1:] == times[:-1]])
        with store.write_video(video_id, {"source": {"imported": file_name, "row": row}}) as w:
            w.append(cls=vectors, patch=vectors[:, None, :], pts=times, src_index=np.arange(slots), is_repeat=repeat)
        report.videos += 1
    return report
