"""Which store each input of a run comes from: a primary store plus named role overrides.

A run reads four kinds of input, its *roles* (:data:`ROLES`):

* ``cls``: the N dense frames' CLS vectors and the frames' ``pts`` (video arrays);
* ``patch``: the patch tokens of the frames a method needs (video array ``patch``);
* ``text``: the question list of the store-driven runs and the question and candidate
  sentence vectors (question bundles);
* ``imageqa``: the image-QA teacher's per-frame probabilities (``imageqa``/``imageqa_pts`` in
  the question bundles), used when present.

Every role comes from the primary store unless overridden by name::

    StoreSet("cache/nextqa/clip-b16-....zarr", {"patch": "cache/nextqa/eva-g-....zarr"})

**Why named roles and not "each feature from the first store that has it".** The mapping is
what a checkpoint records (role -> fingerprint) and what a reader of the run's
``config.json`` needs to see. With a first-that-has-it rule the source of a feature would
change silently when a store gains an output (a teacher added to the primary store, a store
re-featurized with patch tokens), and two stores that both hold patch tokens from different
encoders, the very case that motivates several stores, would be resolved by the order of the
command-line arguments. Named roles make the choice explicit and let every error name the
role it concerns.

**Checks** when the set is built: all stores hold the same dataset (and ``dataset`` when
given); the stores of the frame roles (``cls``, ``patch``) sample frames the same way
(``spec.sampling``: fps and policy), since frames of one video are matched across stores by
their ``pts``, which only makes sense on the same grid; and a run's expected fingerprints
(a checkpoint's) match role by role. Frames are matched per video by :func:`match_frames`
(same sampling rule on the same file gives identical pts; a tolerance of
:data:`PTS_TOLERANCE_S` absorbs float round-off); :meth:`StoreSet.check_alignment` checks a
few videos eagerly, the rest are checked as they are read. The ``imageqa`` teacher is matched
to frames by nearest pts (it has its own frame grid), so its store's sampling is not checked.

The set pickles without its open stores (DataLoader workers reopen them, checking their
fingerprints again).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vqacache.cache_spec import open_store
from vqacache.cache_spec.errors import SpecMismatch, UnknownName, UsageError, VqaCacheError
from vqacache.cache_spec.store import FeatureStore

ROLES: dict[str, str] = {
    "cls": "dense frames' CLS vectors and pts",
    "patch": "patch tokens",
    "text": "question list and question/candidate sentence vectors",
    "imageqa": "image-QA teacher probabilities",
}
FRAME_ROLES = ("cls", "patch")
"""Roles read by frame index: their stores must share the sampling spec."""
PTS_TOLERANCE_S = 1e-3
"""Two frames of one video in two stores are the same frame when their pts differ by at most this."""

StoreLike = str | Path | FeatureStore


class FrameMisaligned(VqaCacheError, ValueError):
    """A video's frames in two stores do not share the same pts (decoded differently)."""


def _path_of(store: StoreLike) -> Path:
    return store.path if isinstance(store, FeatureStore) else Path(store)


class StoreSet:
    """The store of each role (see the module docstring).

    Args:
        primary: the store every role not in ``overrides`` comes from.
        overrides: ``{role: store}``; unknown roles raise :class:`UnknownName`.
        dataset: refuse stores of another dataset.
        expect: ``{role: fingerprint}`` the run expects (a checkpoint's); a role whose store
            has another fingerprint raises :class:`SpecMismatch`.
        expect_what: how the message names the expectation ("the checkpoint").
        expect_paths: ``{role: path}`` the expected stores had (named in the message).
    """

    def __init__(
        self,
        primary: StoreLike,
        overrides: Mapping[str, StoreLike] | None = None,
        *,
        dataset: str | None = None,
        expect: Mapping[str, str] | None = None,
        expect_what: str = "the run",
        expect_paths: Mapping[str, str] | None = None,
    ) -> None:
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(ROLES))
        if unknown:
            raise UnknownName(f"unknown store role {unknown[0]!r}; valid: {', '.join(sorted(ROLES))}")
        opened: dict[Path, FeatureStore] = {}

        def _open(store: StoreLike) -> FeatureStore:
            key = _path_of(store).resolve()
            if key not in opened:
                opened[key] = store if isinstance(store, FeatureStore) else open_store(store)
            return opened[key]

        first = _open(primary)
        self.primary_path: Path = first.path
        self.primary_fingerprint: str = first.fingerprint
        self.primary_spec = first.spec
        self.dataset: str = first.dataset
        self._stores: dict[str, FeatureStore] = {role: _open(overrides.get(role, primary)) for role in ROLES}
        self.paths: dict[str, Path] = {role: s.path for role, s in self._stores.items()}
        self.fingerprints: dict[str, str] = {role: s.fingerprint for role, s in self._stores.items()}
        self.overridden = tuple(sorted(overrides))
        self.check_dataset(dataset)
        self._check_sampling()
        if expect:
            self.check_expected(expect, expect_what, expect_paths)

    # -- checks ------------------------------------------------------------------------

    def check_dataset(self, dataset: str | None) -> None:
        """Refuse stores of different datasets, or not of ``dataset`` when given."""
        if dataset is not None and self.dataset != dataset:
            raise SpecMismatch(f"store {self.primary_path} holds dataset {self.dataset!r}, not {dataset!r}")
        for role, store in self._stores.items():
            if store.dataset != self.dataset:
                raise SpecMismatch(
                    f"the {role} store {self.paths[role]} holds dataset {store.dataset!r}, the primary store "
                    f"{self.primary_path} {self.dataset!r}; a run combines stores of one dataset"
                )

    def check_text(self) -> None:
        """Refuse a text store without sentence vectors (vitg and blip have no text tower), for
        readers of the vectors; methods that tokenize the strings themselves read any store."""
        store = self._stores["text"]
        if store.spec.outputs.text is None:
            raise UsageError(
                f"store {store.path} ({store.spec.encoder}) holds no text features (a vision-only encoder); "
                "take the text from a store that has them: --store text=PATH (e.g. a clip-b16 store)"
            )

    def _check_sampling(self) -> None:
        ref = self._stores["cls"].spec.sampling
        for role in FRAME_ROLES:
            sampling = self._stores[role].spec.sampling
            if sampling != ref:
                raise SpecMismatch(
                    f"the {role} store {self.paths[role]} samples frames at {sampling.fps} fps ({sampling.policy}), "
                    f"the cls store {self.paths['cls']} at {ref.fps} fps ({ref.policy}); frames can only be "
                    "matched by pts between stores featurized with the same --fps"
                )

    def check_expected(
        self, expect: Mapping[str, str], what: str = "the run", paths: Mapping[str, str] | None = None
    ) -> None:
        """Refuse a role whose store's fingerprint is not ``expect[role]`` (``paths``: where the
        expected stores were, for the message)."""
        for role in sorted(expect):
            if role not in ROLES:
                continue
            if self.fingerprints[role] != expect[role]:
                was = f" (it used {paths[role]})" if paths and role in paths else ""
                raise SpecMismatch(
                    f"the {role} store {self.paths[role]} has fingerprint {self.fingerprints[role][:12]}, "
                    f"{what} expects {expect[role][:12]}{was}; features from another spec would silently change "
                    "the inputs"
                )

    def check_alignment(self, video_ids: list[str], sample: int = 4) -> None:
        """Match every frame of ``sample`` of ``video_ids`` across the frame roles' stores
        (eagerly, so a systematic misalignment fails before training, not in a worker)."""
        if self.same("cls", "patch"):
            return
        for video_id in video_ids[:sample]:
            cls_pts = self.store("cls").video_arrays(video_id)["pts"][:]
            patch_pts = self.store("patch").video_arrays(video_id)["pts"][:]
            match_frames(cls_pts, patch_pts, video_id, f"cls store {self.paths['cls'].name}",
                         f"patch store {self.paths['patch'].name}")

    # -- access ------------------------------------------------------------------------

    def store(self, role: str) -> FeatureStore:
        """The open store of ``role`` (reopened and checked after unpickling)."""
        if role not in self._stores:
            path = self.paths[role]
            same = [s for r, s in self._stores.items() if self.paths[r] == path]
            opened = same[0] if same else open_store(path)
            if opened.fingerprint != self.fingerprints[role]:
                raise SpecMismatch(
                    f"the {role} store {path} changed since the run started (fingerprint {opened.fingerprint[:12]}, "
                    f"was {self.fingerprints[role][:12]})"
                )
            self._stores[role] = opened
        return self._stores[role]

    def same(self, a: str, b: str) -> bool:
        """Whether roles ``a`` and ``b`` read the same store."""
        return self.paths[a] == self.paths[b]

    def distinct_roles(self, roles: tuple[str, ...]) -> list[str]:
        """``roles`` with one role per distinct store (the first one), in order."""
        seen: set[Path] = set()
        out = []
        for role in roles:
            if self.paths[role] not in seen:
                seen.add(self.paths[role])
                out.append(role)
        return out

    def describe(self) -> dict[str, dict[str, str]]:
        """``{role: {"path", "fingerprint", "encoder"}}`` for configs and reports."""
        return {
            role: {"path": str(self.paths[role]), "fingerprint": self.fingerprints[role],
                   "encoder": self.store(role).spec.encoder}
            for role in ROLES
        }

    def specs(self) -> dict[str, dict[str, Any]]:
        """``{role: spec as a dict}``: what each role's features are, for checkpoints."""
        return {role: self.store(role).spec.to_dict() for role in ROLES}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stores"] = {}
        return state

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}={self.paths[r].name}" for r in ROLES)
        return f"StoreSet({roles})"


def nearest_frames(src_pts: np.ndarray, dst_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``src_pts`` (n,): the index (n,) of the nearest of ``dst_pts`` (m,, increasing;
    the earlier on a tie) and its distance (n,) in seconds (inf when ``dst_pts`` is empty)."""
    src_pts = np.asarray(src_pts, dtype=np.float64)
    dst_pts = np.asarray(dst_pts, dtype=np.float64)
    if len(dst_pts) == 0:
        return np.zeros(len(src_pts), np.int64), np.full(len(src_pts), np.inf)
    pos = np.clip(np.searchsorted(dst_pts, src_pts), 1, max(1, len(dst_pts) - 1))
    left = np.clip(pos - 1, 0, len(dst_pts) - 1)
    right = np.clip(pos, 0, len(dst_pts) - 1)
    nearest = np.where(np.abs(dst_pts[left] - src_pts) <= np.abs(dst_pts[right] - src_pts), left, right)
    return nearest.astype(np.int64), np.abs(dst_pts[nearest] - src_pts)


def match_frames(src_pts: np.ndarray, dst_pts: np.ndarray, video_id: str, src: str = "cls store",
                 dst: str = "patch store") -> np.ndarray:
    """Indices (n,) into ``dst_pts`` of the frames at ``src_pts`` (n,), matched by pts.

    Raises :class:`FrameMisaligned` when a frame has no counterpart within
    :data:`PTS_TOLERANCE_S` (the stores decoded the video differently).
    """
    src_pts, dst_pts = np.asarray(src_pts, dtype=np.float64), np.asarray(dst_pts, dtype=np.float64)
    if len(dst_pts) == 0:
        raise FrameMisaligned(f"video {video_id!r}: the {dst} has no frames")
    nearest, gap = nearest_frames(src_pts, dst_pts)
    bad = np.flatnonzero(gap > PTS_TOLERANCE_S)
    if len(bad):
        i = bad[0]
        raise FrameMisaligned(
            f"video {video_id!r}: the frame at {src_pts[i]:.3f} s in the {src} has no frame within "
            f"{PTS_TOLERANCE_S * 1000:g} ms in the {dst} (nearest {dst_pts[nearest[i]]:.3f} s; {len(bad)} of "
            f"{len(src_pts)} frames unmatched); the stores decoded this video differently"
        )
    return nearest


def require_patches(stores: StoreSet) -> None:
    """Refuse a patch store without patch tokens, naming the way out."""
    if not stores.store("patch").spec.outputs.patches:
        raise UsageError(
            f"store {stores.paths['patch']} has no patch tokens; featurize it with patches or take them "
            "from another store of the dataset (--store patch=PATH)"
        )
