"""``vqa-cache diff A B``: how two stores differ.

- the spec, field by field (:meth:`FeatureSpec.diff`);
- the complete videos in one store only;
- for the videos in both (all, or ``sample`` of them evenly spread over the sorted ids), each
  shared feature array's largest absolute and relative difference, and whether the frames
  (``pts``) and shapes agree.

*Equal* means: the same spec, the same videos, the same frames, and every feature value equal
within float16 rounding: ``|a - b| <= 2**-10 * max(|a|, |b|) + 2**-24`` (one float16 unit in the
last place of the larger value; ``2**-24`` the smallest subnormal). Two runs on two machines
whose float32 results differ in the last bits, then rounded to float16, are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vqacache.cache_spec import layout
from vqacache.cache_spec.store import FeatureStore

FP16_REL = 2.0**-10
FP16_ABS = 2.0**-24


@dataclass
class ArrayDiff:
    """Largest differences of one array over the compared videos, and where."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_video: str = ""
    within_fp16: bool = True


@dataclass
class StoreDiff:
    spec: list[str] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    common: int = 0
    compared: list[str] = field(default_factory=list)
    arrays: dict[str, ArrayDiff] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)
    """``"<video>: <what>"`` for frames or shapes that disagree."""

    @property
    def equal(self) -> bool:
        return not (self.spec or self.only_a or self.only_b or self.mismatched) and all(
            d.within_fp16 for d in self.arrays.values())


def sample_ids(ids: list[str], n: int | None) -> list[str]:
    """``n`` of the sorted ``ids`` evenly spread (first and last included); all when n is None/0."""
    ids = sorted(ids)
    if not n or n >= len(ids):
        return ids
    return [ids[i] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


def diff_stores(a: FeatureStore, b: FeatureStore, sample: int | None = None) -> StoreDiff:
    out = StoreDiff(spec=a.spec.diff(b.spec))
    va, vb = set(a.complete_videos()), set(b.complete_videos())
    out.only_a, out.only_b = sorted(va - vb), sorted(vb - va)
    common = sorted(va & vb)
    out.common = len(common)
    out.compared = sample_ids(common, sample)
    for video_id in out.compared:
        arrays_a, arrays_b = a.video_arrays(video_id), b.video_arrays(video_id)
        pts_a, pts_b = arrays_a["pts"][:], arrays_b["pts"][:]
        if pts_a.shape != pts_b.shape or not np.allclose(pts_a, pts_b, rtol=0, atol=1e-6):
            out.mismatched.append(f"{video_id}: frames differ ({len(pts_a)} vs {len(pts_b)} frames)")
            continue
        for name in layout.FEATURE_ARRAYS:
            if name not in arrays_a or name not in arrays_b:
                if (name in arrays_a) != (name in arrays_b):
                    out.mismatched.append(f"{video_id}: {name} in one store only")
                continue
            x, y = arrays_a[name][:].astype(np.float64), arrays_b[name][:].astype(np.float64)
            if x.shape != y.shape:
                out.mismatched.append(f"{video_id}: {name} shape {x.shape} vs {y.shape}")
                continue
            _update(out.arrays.setdefault(name, ArrayDiff(name)), video_id, x, y)
    return out


def _update(d: ArrayDiff, video_id: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.size == 0:
        return
    gap = np.abs(x - y)
    scale = np.maximum(np.abs(x), np.abs(y))
    rel = np.where(scale > 0, gap / np.where(scale > 0, scale, 1.0), 0.0)
    if float(gap.max()) > d.max_abs:
        d.max_abs, d.worst_video = float(gap.max()), video_id
    d.max_rel = max(d.max_rel, float(rel.max()))
    if not (gap <= FP16_REL * scale + FP16_ABS).all():
        d.within_fp16 = False
