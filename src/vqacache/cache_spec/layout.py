"""Where things live in a store, and how arrays are chunked. See ``docs/cache-format.md``.

One Zarr v3 store per (dataset, spec)::

    <cache-root>/<dataset>/<encoder>-<fingerprint[:12]>.zarr/
        zarr.json                      root group; attrs["vqacache"] = spec, fingerprint, ...
        videos/<key>/                  one group per video, written by exactly one writer
            cls (T, E)  cls_hidden (T, W)  patch (T, P, W)   features, storage dtype
            pts (T,) float64  src_index (T,) int64  is_repeat (T,) bool
        failures/<key>/                one group per failed video; attrs = reason
        questions/<split>/<key>/       one group per (split, video): that video's questions
                                       (text features; image-QA probabilities when added)
        imageqa/                       attrs = the image-QA teacher's spec, if any

Chunking: time is the first axis everywhere. Features are sharded along time so a video is
a handful of files however long it is, while reading a few frames touches one small inner
chunk. No two writers ever share a chunk or a shard because every array belongs to one
video group, and a video group has a single writer.
"""

from __future__ import annotations

import re
from pathlib import Path

VIDEOS = "videos"
FAILURES = "failures"
QUESTIONS = "questions"
IMAGEQA = "imageqa"
"""Group whose attrs hold the store's image-QA teacher spec (see teacher_spec.py)."""

FEATURE_ARRAYS = ("cls", "cls_hidden", "patch")
"""Per-frame feature arrays, stored in the spec's dtype."""
TIME_ARRAYS = {"pts": "float64", "src_index": "int64", "is_repeat": "bool"}
"""Per-frame bookkeeping arrays and their fixed dtypes."""

# (inner chunk frames, shard frames) per array; see docs/cache-format.md for the measurements
CHUNK_FRAMES = {"cls": 64, "cls_hidden": 64, "patch": 8}
SHARD_FRAMES = {"cls": 1024, "cls_hidden": 1024, "patch": 64}
TIME_CHUNK = 4096
"""Frames per chunk of the 1-d time arrays (unsharded, zstd-compressed)."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str) -> str:
    """Make an encoder or dataset name usable as a path component (``a:b/c`` -> ``a-b-c``)."""
    cleaned = _SAFE_NAME.sub("-", name).strip("-.")
    if not cleaned:
        raise ValueError(f"cannot make a path component from {name!r}")
    return cleaned


def store_path(cache_root: Path | str, dataset: str, encoder: str, fingerprint: str) -> Path:
    """``<cache-root>/<dataset>/<encoder>-<fingerprint[:12]>.zarr``."""
    return Path(cache_root) / safe_name(dataset) / f"{safe_name(encoder)}-{fingerprint[:12]}.zarr"


def shard_frames(name: str) -> int:
    """Frames per shard of a feature array: a writer flushes whole shards only."""
    return SHARD_FRAMES[name]


def chunk_shapes(name: str, frame_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(inner chunk shape, shard shape) of feature array ``name`` with per-frame shape ``frame_shape``."""
    return (CHUNK_FRAMES[name], *frame_shape), (SHARD_FRAMES[name], *frame_shape)
