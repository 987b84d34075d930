"""The HDF5 layouts other VideoQA code reads, as typed descriptions (a registry by name).

Each layout is what one family of released loaders opens (read the loaders, never copy them):

- ``nextqa``: NExT-QA / HGA / HME (doc-doc/NExT-QA ``dataloader/sample_loader.py``):
  ``app_mot_{split}.h5`` with ``ids`` (N,) integers and ``feat`` (N, 16, D); the loader keys
  videos by ``str(id)``.
- ``hcrn``: HCRN (thaolmk54/hcrn-videoqa ``preprocess/preprocess_features.py``,
  ``DataLoader.py``): ``{ds}_appearance_feat.h5`` with ``ids`` (N,) integers and
  ``resnet_features`` (N, 8, 16, D) float32: 8 clips of 16 consecutive frames.
- ``vgt``: VGT / HQGA (sail-sg/VGT ``data/vqa_loader.py``): ``frame_feat/app_feat_{split}.h5``
  with ``ids`` (N,) and ``resnet_features`` (V, 8, 4, D): 8 clips of 4 frames. Ids are strings
  (UTF-8, as VGT's STAR branch decodes them), so any dataset's ids fit.

**Which frames fill the slots** (:func:`slot_frames`), from a store's ``T`` frames (7.5 fps):
HCRN's clip rule. The ``C`` clip centres are ``linspace(0, T, C + 2)`` cast to int32, without the
first and last value. A clip of ``F`` frames covers ``[c - F//2, c + F//2)``; a window that
starts before frame 0 starts at 0 and is padded at its front with copies of frame 0; a window
that ends past ``T`` ends at ``T - 1`` (exclusive, as in HCRN) and is padded at its back with
copies of frame ``T - 1``; the first ``F`` frames of the padded window are kept. With ``F = 1``
(NExT-QA's one vector per clip) the slot is the centre frame itself, ``min(c, T - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vqacache.cache_spec.errors import UnknownName

IdKind = Literal["int", "str"]


@dataclass(frozen=True)
class H5Layout:
    """One HDF5 layout: dataset names, the clip x frame grid and the id type.

    ``features``: the feature dataset's name, shape (N, *grid, D) with ``grid`` = (clips,) when
    ``frames_per_clip`` is 1 (NExT-QA's ``feat`` (N, 16, D)), else (clips, frames_per_clip).
    ``ids``: integers (``int``: every video id must be a decimal integer) or UTF-8 strings.
    ``file_name``: the name the loader opens (``{split}``/``{ds}`` filled by the user).
    """

    name: str
    features: str
    clips: int
    frames_per_clip: int
    ids: IdKind
    file_name: str
    loader: str

    @property
    def grid(self) -> tuple[int, ...]:
        """The per-video slot shape of the feature dataset, without D."""
        return (self.clips,) if self.frames_per_clip == 1 else (self.clips, self.frames_per_clip)

    @property
    def slots(self) -> int:
        return self.clips * self.frames_per_clip


LAYOUTS: dict[str, H5Layout] = {
    "nextqa": H5Layout("nextqa", "feat", 16, 1, "int", "vid_feat/app_mot_{split}.h5",
                       "doc-doc/NExT-QA dataloader/sample_loader.py"),
    "hcrn": H5Layout("hcrn", "resnet_features", 8, 16, "int", "{ds}_appearance_feat.h5",
                     "thaolmk54/hcrn-videoqa DataLoader.py"),
    "vgt": H5Layout("vgt", "resnet_features", 8, 4, "str", "frame_feat/app_feat_{split}.h5",
                    "sail-sg/VGT data/vqa_loader.py"),
}

IDS = "ids"
PTS = "pts"
"""Dataset (N, *grid) float64: the time (seconds, the store's ``pts``) each slot came from;
NaN in the rows of failed videos."""
SPEC_ATTR = "vqacache_spec"
FINGERPRINT_ATTR = "vqacache_fingerprint"
LAYOUT_ATTR = "vqacache_layout"


def get_layout(name: str) -> H5Layout:
    """The layout registered as ``name``; unknown names list the valid ones."""
    if name not in LAYOUTS:
        raise UnknownName(f"unknown HDF5 layout {name!r}; valid: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]


def clip_centres(n_frames: int, clips: int) -> np.ndarray:
    """(clips,) centre frame of each clip: ``linspace(0, T, clips + 2)`` as int32, inner values."""
    return np.linspace(0, n_frames, clips + 2, dtype=np.int32)[1 : clips + 1].astype(np.int64)


def slot_frames(n_frames: int, clips: int, frames_per_clip: int) -> np.ndarray:
    """(clips, frames_per_clip) indices into a video's ``n_frames`` frames (see the module doc)."""
    if n_frames <= 0:
        raise ValueError("a video without frames has no slots")
    out = np.empty((clips, frames_per_clip), dtype=np.int64)
    half = frames_per_clip // 2
    for i, c in enumerate(clip_centres(n_frames, clips)):
        if frames_per_clip == 1:
            out[i] = min(int(c), n_frames - 1)
            continue
        start, end = int(c) - half, int(c) + half
        start = max(start, 0)
        if end > n_frames:
            end = n_frames - 1
        window = list(range(start, end))
        if start == 0:
            window = [0] * (frames_per_clip - (end - start)) + window
        if end == n_frames - 1:
            window = window + [n_frames - 1] * (frames_per_clip - (end - start))
        out[i] = window[:frames_per_clip]
    return out
