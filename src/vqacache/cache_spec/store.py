"""Reading and writing a feature store (one Zarr v3 group per (dataset, spec)).

Public entry point: :func:`open_store`. The layout is in :mod:`vqacache.cache_spec.layout`
and ``docs/cache-format.md``; plain ``zarr`` can read everything written here.

Safety rules, all enforced here and in the modules beside it:
- a store's spec is fixed at creation; opening it for writing with another spec raises
  :class:`SpecMismatch`;
- every group (a video, a question bundle, the teacher record) is built under a private
  temporary key and published with one rename (:mod:`~vqacache.cache_spec.publish`); its
  completion marker is written before the rename, so readers only ever see complete groups,
  and a writer removes nothing but its own temporary (:mod:`~vqacache.cache_spec.video_writer`,
  :mod:`~vqacache.cache_spec.question_bundles`, :mod:`~vqacache.cache_spec.teacher_arrays`);
- ids are validated and percent-encoded into keys, long ones hashed
  (:mod:`vqacache.cache_spec.keys`); the id itself is kept in each group's attributes;
- concurrent runs coordinate through leases (:mod:`vqacache.cache_spec.lease`, beside the
  store) and each run logs into its own group ``runs/<run id>``
  (:mod:`~vqacache.cache_spec.run_logs`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import checksum_arrays
from vqacache.cache_spec.environment import producing_environment
from vqacache.cache_spec.errors import InvalidVideoId, NotComplete, SpecError, SpecMismatch, StoreError
from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.lease import (
    DEFAULT_GRACE_S,
    Lease,
    active_leases,
    break_lease,
    lease_dir,
    try_claim,
)
from vqacache.cache_spec.publish import is_temporary
from vqacache.cache_spec.question_bundles import (
    IMAGEQA_ARRAYS,
    KEEP_DTYPE,
    QUESTION_ARRAYS,
    QuestionFeatures,
    build_index,
    bundle_group,
    read_question,
    write_bundle,
)
from vqacache.cache_spec.run_logs import RUNS, new_run_id, run_logs, write_run_log
from vqacache.cache_spec.spec import FORMAT_VERSION, FeatureSpec
from vqacache.cache_spec.teacher_arrays import set_teacher_spec, write_imageqa
from vqacache.cache_spec.teacher_spec import TeacherSpec
from vqacache.cache_spec.patch_frames import patch_frame_rows
from vqacache.cache_spec.permissions import check_writable
from vqacache.cache_spec.remote import StoreURL, is_url, remote_nbytes
from vqacache.cache_spec.video_writer import PATCH_PTS, VideoWriter, utcnow

__all__ = [
    "IMAGEQA_ARRAYS", "KEEP_DTYPE", "QUESTION_ARRAYS", "RUNS", "FeatureStore", "QuestionFeatures",
    "VideoFeatures", "VideoWriter", "new_run_id", "open_store",
]

ROOT_ATTR = "vqacache"
MODES = ("r", "a")
VERSIONED_PACKAGES = ("torch", "open_clip_torch", "transformers", "decord2", "decord", "torchcodec", "av")
"""Packages whose major.minor is recorded with every video; appending with another one warns."""


@dataclass
class VideoFeatures:
    """One complete video read from a store. ``T`` frames at the spec's fps.

    ``cls`` (T, E); ``cls_hidden`` (T, W) or None; ``patch`` (T, P, W) or None;
    ``patch_pts`` None, except in a store with ``outputs.patch_fps`` (patch tokens on a
    sub-grid): then ``patch`` is (M, P, W), the frames of the sub-grid (among those read), and
    ``patch_pts`` (M,) their times (rows of the frame list: :func:`patch_frame_rows`);
    ``pts`` (T,) seconds from the first frame; ``src_index`` (T,) index of each frame among
    the source video's frames in presentation order; ``is_repeat`` (T,) True where the
    frame repeats the previous one (videos slower than the sampling fps); ``attrs`` the
    video's attributes (source info, checksum, producing versions).
    """

    video_id: str
    cls: np.ndarray
    pts: np.ndarray
    src_index: np.ndarray
    is_repeat: np.ndarray
    cls_hidden: np.ndarray | None = None
    patch: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    patch_pts: np.ndarray | None = None

    def __getitem__(self, name: str) -> Any:  # dict-style access: v["cls"]
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        """``"patch" in v``: whether the field exists and holds a value."""
        return getattr(self, name, None) is not None


def video_versions() -> dict[str, str]:
    """The versions of :data:`VERSIONED_PACKAGES` installed here (recorded with each video)."""
    env = producing_environment()
    return {name: env[name] for name in VERSIONED_PACKAGES if name in env}


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def version_drift(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """``["torch 2.5.1 -> 2.6.0", ...]``: packages whose major.minor differs between two
    version records (a package missing from either side is not compared)."""
    return [
        f"{name} {recorded[name]} -> {current[name]}"
        for name in sorted(set(recorded) & set(current))
        if _major_minor(str(recorded[name])) != _major_minor(str(current[name]))
    ]

def open_store(
    path: str | Path, mode: str = "r", *, spec: FeatureSpec | None = None, dataset: str | None = None
) -> FeatureStore:
    """Open the store at ``path``.

    ``mode="r"``: it must exist; ``spec``, if given, must match. ``mode="a"``: open for
    writing, creating it (``spec`` and ``dataset`` required) when absent; an existing store
    with a different spec is refused with :class:`SpecMismatch` naming the differing fields.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if is_url(path):  # s3://, gs://, https://, file://: read-only, through zarr's fsspec store
        if mode != "r":
            raise StoreError(f"store {path} is a URL: it opens read-only (write locally, then vqa-cache sync)")
        store = FeatureStore(StoreURL(str(path)), writable=False)
        if spec is not None and spec.fingerprint() != store.fingerprint:
            changes = "; ".join(store.spec.diff(spec)) or "fingerprints differ"
            raise SpecMismatch(f"store {path} was written with another spec ({changes}); refusing to mix features")
        return store
    path = Path(path)
    if not (path / "zarr.json").exists():
        if mode == "r":
            raise StoreError(f"no vqacache store at {path}")
        if spec is None or dataset is None:
            raise ValueError("creating a store needs spec= and dataset=")
        check_writable(*[p for p in (path.parent, path.parent.parent) if p.is_dir()][:1])
        _create_root(path, spec, dataset)
    elif mode == "a":  # a shared root: say who owns what this user cannot write, before any work
        check_writable(path, *(path / name for name in (layout.VIDEOS, layout.FAILURES, layout.QUESTIONS, RUNS)),
                       lease_dir(path) if lease_dir(path).is_dir() else path.parent)
    store = FeatureStore(path, writable=(mode == "a"))
    if mode == "a" and store.imported is not None:
        raise StoreError(
            f"store {path} was imported from {store.imported.get('file')} (read-only); "
            "import the file again to change it (vqa-cache import)"
        )
    if spec is not None and spec.fingerprint() != store.fingerprint:
        changes = "; ".join(store.spec.diff(spec)) or "fingerprints differ"
        raise SpecMismatch(f"store {path} was written with another spec ({changes}); refusing to mix features")
    return store


def _create_root(path: Path, spec: FeatureSpec, dataset: str) -> None:
    """Create the root group in a temporary sibling, then publish it with one rename.

    Two processes creating the same store at once: one rename wins, the other finds the
    store and opens it (and its spec check then applies).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    root = zarr.open_group(tmp, mode="w", zarr_format=3)
    root.attrs[ROOT_ATTR] = {
        "format_version": FORMAT_VERSION,
        "fingerprint": spec.fingerprint(),
        "spec": spec.to_dict(),
        "dataset": dataset,
        "created": utcnow(),
        "environment": producing_environment(),
    }
    for name in (layout.VIDEOS, layout.FAILURES, layout.QUESTIONS):
        root.create_group(name)
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "zarr.json").exists():
            raise StoreError(f"cannot create store at {path}: the path exists and is not a vqacache store") from None


class FeatureStore:
    """A vqacache store. Obtain one with :func:`open_store`."""

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = path
        self.writable = writable
        try:
            if is_url(path):  # no listings cache: a store opened again sees what was published since
                self.root = zarr.open_group(str(path), mode="r", zarr_format=3,
                                            storage_options={"use_listings_cache": False})
            else:
                self.root = zarr.open_group(path, mode="r+" if writable else "r", zarr_format=3)
            meta = dict(self.root.attrs)[ROOT_ATTR]
        except (KeyError, FileNotFoundError, ValueError, ImportError) as exc:
            raise StoreError(f"{path} is not a vqacache store ({exc.__class__.__name__}: {exc})") from None
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(f"store {path} has format version {version}; this vqacache reads {FORMAT_VERSION}")
        try:
            self.spec = FeatureSpec.from_dict(meta["spec"])
        except SpecError as exc:
            raise StoreError(f"store {path} holds an invalid spec: {exc}") from None
        self.fingerprint: str = meta["fingerprint"]
        if self.spec.fingerprint() != self.fingerprint:
            raise StoreError(
                f"store {path}: its spec hashes to {self.spec.fingerprint()[:12]}, not the recorded "
                f"{self.fingerprint[:12]} (edited by hand, or written by an incompatible version)"
            )
        self.dataset: str = meta["dataset"]
        self.meta: dict[str, Any] = meta
        self._question_index: dict[str, tuple[str, str, int]] | None = None

    @property
    def imported(self) -> dict[str, Any] | None:
        """What an imported store was read from (``vqa-cache import``: layout, file, sha256,
        ...), or None for a featurized store. Imported stores open read-only."""
        if self.spec.weights.source != "imported":
            return None
        return dict(self.spec.extra.get("imported") or {})

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, dataset={self.dataset!r}, encoder={self.spec.encoder!r}, fingerprint={self.fingerprint[:12]!r})"

    # -- videos: reading -----------------------------------------------------------------
    def _group(self, *parts: str) -> zarr.Group | None:
        try:
            node = self.root["/".join(parts)]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    def _video_group(self, video_id: str) -> zarr.Group | None:
        """The group published under ``video_id``'s key, if it is that video's: a group moved or
        copied there by hand (its ``video_id`` attribute names another id) is not."""
        group = self._group(layout.VIDEOS, id_to_key(video_id))
        return group if group is not None and _owned_id(id_to_key(video_id), group) == video_id else None

    def _iter_groups(self, name: str) -> Iterator[tuple[str, zarr.Group]]:
        """``(id, group)`` of the published member groups of ``name`` that are their id's
        (temporaries, and groups under another id's key, skipped: ``verify`` reports those)."""
        parent = self._group(name)
        if parent is not None:
            for key, group in parent.groups():
                owner = None if is_temporary(key) else _owned_id(key, group)
                if owner is not None:
                    yield owner, group

    def complete_videos(self) -> list[str]:
        """Ids of the videos whose completion marker exists, sorted."""
        return sorted(v for v, g in self._iter_groups(layout.VIDEOS) if g.attrs.get("complete") is True)

    def incomplete_videos(self) -> list[str]:
        """Ids of published video groups without a completion marker (left by vqacache versions
        that wrote in place; writers now publish complete groups only)."""
        return sorted(v for v, g in self._iter_groups(layout.VIDEOS) if g.attrs.get("complete") is not True)

    def temporaries(self) -> list[Path]:
        """Folders of groups being written, or left by killed writers (see ``verify``)."""
        found = []
        for parent in (self.path / layout.VIDEOS, *sorted((self.path / layout.QUESTIONS).glob("*"))):
            if parent.is_dir():
                found += [p for p in sorted(parent.iterdir()) if is_temporary(p.name)]
        found += [p for p in sorted(self.path.iterdir()) if is_temporary(p.name)]
        return found

    def is_complete(self, video_id: str) -> bool:
        group = self._video_group(video_id)
        return group is not None and group.attrs.get("complete") is True

    def _complete_group(self, video_id: str) -> zarr.Group:
        group = self._video_group(video_id)
        if group is None or group.attrs.get("complete") is not True:
            raise NotComplete(f"video {video_id!r} is not complete in {self.path}")
        return group

    def video_arrays(self, video_id: str) -> dict[str, zarr.Array]:
        """The complete video's arrays, lazily (slice them to read a few frames). With
        ``outputs.patch_fps``, ``patch`` has one row per ``patch_pts`` entry, not per frame:
        :func:`~vqacache.cache_spec.patch_frames.patch_frame_rows` maps them to frame rows."""
        group = self._complete_group(video_id)
        return {name: array for name, array in group.arrays()}

    def read_video(self, video_id: str, frames: slice | np.ndarray | None = None) -> VideoFeatures:
        """Read a complete video; ``frames`` (a slice or index array) reads only those frames
        (with a patch sub-grid: the patch rows of those of them that have patches)."""
        group = self._complete_group(video_id)
        sel = slice(None) if frames is None else frames
        lazy = dict(group.arrays())
        patch_lazy, patch_pts_lazy = lazy.pop("patch", None), lazy.pop(PATCH_PTS, None)
        arrays = {name: _take(array, sel) for name, array in lazy.items()}
        patch = patch_pts = None
        if patch_lazy is not None and patch_pts_lazy is None:
            patch = _take(patch_lazy, sel)
        elif patch_lazy is not None:
            rows = patch_frame_rows({"pts": lazy["pts"], PATCH_PTS: patch_pts_lazy})  # (M,) frame rows
            wanted = np.arange(lazy["pts"].shape[0])[sel]  # frame rows read
            keep = np.flatnonzero(np.isin(rows, wanted))  # patch rows among them, in patch order
            patch = _take(patch_lazy, keep)
            patch_pts = np.asarray(patch_pts_lazy[:])[keep]
        return VideoFeatures(
            video_id=video_id,
            cls=arrays["cls"],
            pts=arrays["pts"],
            src_index=arrays["src_index"],
            is_repeat=arrays["is_repeat"],
            cls_hidden=arrays.get("cls_hidden"),
            patch=patch,
            attrs=dict(group.attrs),
            patch_pts=patch_pts,
        )

    def verify_video(self, video_id: str) -> bool:
        """Recompute the checksum of a complete video from disk; True when it matches."""
        group = self._complete_group(video_id)
        arrays = {name: array for name, array in group.arrays()}
        return checksum_arrays(arrays) == group.attrs["checksum"]

    # -- videos: writing -----------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"store {self.path} is open read-only")

    def begin_video(self, video_id: str, attrs: dict[str, Any] | None = None, *, lease: Lease | None = None) -> VideoWriter:
        """A :class:`VideoWriter` for ``video_id``: append frames, then ``commit()`` (publish) or
        ``abort()`` (remove the temporary). See :mod:`vqacache.cache_spec.video_writer`.

        With ``lease`` (from :meth:`claim`), the lease is renewed first and once more just
        before publishing; a lost lease raises :class:`LeaseLost` and publishes nothing. The
        video's attributes record the versions of the packages that produced it.
        """
        self._require_writable()
        if lease is not None:
            if lease.video_id != video_id:
                raise ValueError(f"lease is for {lease.video_id!r}, not {video_id!r}")
            lease.renew()
        key = id_to_key(video_id)
        if self.is_complete(video_id):
            raise StoreError(f"video {video_id!r} is already complete in {self.path}")
        return VideoWriter(
            self.root[layout.VIDEOS], self.path / layout.VIDEOS, video_id, key, self.spec,
            {"versions": video_versions(), **(attrs or {})}, lease,
            on_published=lambda: self._clear_failure(video_id),
        )

    @contextmanager
    def write_video(
        self, video_id: str, attrs: dict[str, Any] | None = None, *, lease: Lease | None = None
    ) -> Iterator[VideoWriter]:
        """``with store.write_video(vid, attrs) as w: w.append(...)``: :meth:`begin_video`,
        committed on a clean exit, aborted (temporary removed) on an exception."""
        writer = self.begin_video(video_id, attrs, lease=lease)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def delete_video(self, video_id: str) -> bool:
        """Remove a video's group, complete or not. Returns whether there was one. Do not use
        on a video another process is writing."""
        return self.delete_group(layout.VIDEOS, id_to_key(video_id))

    def delete_group(self, *parts: str) -> bool:
        """Remove the member at ``parts`` (e.g. ``("videos", key)``; ``vqa-cache verify
        --delete-corrupt`` passes the key where the damaged group was found). A symbolic link is
        removed itself, never followed. Returns whether there was one."""
        self._require_writable()
        if not parts or any(p in ("", ".", "..") or "/" in p for p in parts):
            raise ValueError(f"not a member path: {parts!r}")
        path = self.path.joinpath(*parts)
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            return False
        self._question_index = None
        return True

    def version_drift(self) -> list[str]:
        """Packages whose major.minor here differs from what the store's videos were made with
        (``["torch 2.5.1 -> 2.6.0"]``), compared with the store's creation record and with the
        newest video's record."""
        current = video_versions()
        recorded = {k: v for k, v in dict(self.meta.get("environment") or {}).items() if k in VERSIONED_PACKAGES}
        drift = version_drift(recorded, current)
        newest = max(self._iter_groups(layout.VIDEOS), key=lambda kg: str(kg[1].attrs.get("finished", "")), default=None)
        if newest is not None:
            drift += [d for d in version_drift(dict(newest[1].attrs.get("versions") or {}), current) if d not in drift]
        return drift

    def video_versions_summary(self) -> dict[str, int]:
        """``{"torch 2.6.0, open_clip_torch 3.3.0, ...": number of videos}`` over the complete
        videos (``"unrecorded"`` for videos written before versions were recorded)."""
        counts: dict[str, int] = {}
        for _, group in self._iter_groups(layout.VIDEOS):
            if group.attrs.get("complete") is not True:
                continue
            versions = group.attrs.get("versions")
            label = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) if versions else "unrecorded"
            counts[label] = counts.get(label, 0) + 1
        return counts

    # -- leases: coordination of concurrent runs ------------------------------------------

    @property
    def lease_dir(self) -> Path:
        """``<store>.leases``, beside the store (see :mod:`vqacache.cache_spec.lease`)."""
        return lease_dir(self.path)

    def claim(
        self, video_id: str, owner: str, ttl_s: float, *, grace_s: float = DEFAULT_GRACE_S, kind: str = "video"
    ) -> Lease | None:
        """Claim ``video_id`` before featurizing it; None when another live process holds it.

        The caller then checks :meth:`is_complete` (another process may have finished the
        video meanwhile), keeps the lease alive while working (``lease.keep_alive()`` or a
        :class:`~vqacache.cache_spec.heartbeat.Heartbeat`), writes with
        ``begin_video(..., lease=lease)`` and releases. A lease whose holder died is taken
        over ``ttl_s + grace_s`` after its last renewal, or at once when the holder ran on
        this host and its process is gone.
        """
        self._require_writable()
        return try_claim(self.path, video_id, owner, ttl_s, grace_s=grace_s, kind=kind)

    def break_lease(self, video_id: str, owner: str, kind: str = "video") -> bool:
        """Drop ``owner``'s lease on ``video_id``, its holder being dead (see lease.break_lease)."""
        self._require_writable()
        return break_lease(self.path, video_id, owner, kind)

    def leases(self) -> dict[str, dict[str, Any]]:
        """``{video_id: lease record}`` of the videos some process is working on now."""
        return active_leases(self.path)

    def record_failure(self, video_id: str, reason: str, message: str) -> None:
        """Record why a video could not be featurized (replaces an earlier record)."""
        self._require_writable()
        key = id_to_key(video_id)
        failures = self.root[layout.FAILURES]
        if key in failures:
            del failures[key]
        failures.create_group(
            key, attributes={"video_id": video_id, "reason": reason, "message": message, "time": utcnow()}
        )

    def _clear_failure(self, video_id: str) -> None:
        failures = self.root[layout.FAILURES]
        key = id_to_key(video_id)
        if key in failures:
            del failures[key]

    def failures(self) -> dict[str, str]:
        """``{video_id: "<reason>: <message>"}`` for every failed video; reason is the class."""
        return {v: f"{g.attrs['reason']}: {g.attrs['message']}" for v, g in self._iter_groups(layout.FAILURES)}

    # -- questions -----------------------------------------------------------------------

    def write_questions(
        self, split: str, video_id: str, entries: list[dict[str, Any]], arrays: dict[str, np.ndarray],
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Write the text features of one video's questions in one split, as one bundle.

        ``entries``: one dict per question (``qid``, ``question``, ``candidates``, ``answer``,
        ``qtype``, ``start``, ``end``); two entries with one qid are refused naming both.
        ``arrays``, with Q questions, C = max candidates and L the longest token count:
        ``text`` (Q, E), ``text_tokens`` (Q, L, W), ``text_len`` (Q,), and when C > 0 ``cand``
        (Q, C, E), ``cand_tokens`` (Q, C, L, W), ``cand_len`` (Q, C). Replaces an existing
        bundle atomically (see :mod:`vqacache.cache_spec.question_bundles`).
        """
        self._require_writable()
        write_bundle(self, split, video_id, entries, arrays, attributes)
        self._question_index = None

    def _questions_index(self) -> dict[str, tuple[str, str, int]]:
        if self._question_index is None:
            self._question_index = build_index(self.root)
        return self._question_index

    def questions(self, split: str | None = None) -> list[str]:
        """Question ids with complete text features (optionally of one split), sorted."""
        index = self._questions_index()
        if split is None:
            return sorted(index)
        split_key = id_to_key(split, "split")
        return sorted(q for q, (s, _, _) in index.items() if s == split_key)

    def read_question(self, qid: str) -> QuestionFeatures:
        """The text features and metadata of question ``qid``."""
        try:
            location = self._questions_index()[qid]
        except KeyError:
            raise NotComplete(f"question {qid!r} is not in {self.path}") from None
        return read_question(self, location, qid)

    def question_entries(self, split: str, video_id: str) -> list[dict[str, Any]]:
        """The questions of one (split, video) bundle, in row order (qid, question, candidates, ...)."""
        group = bundle_group(self, split, video_id)
        if group is None:
            raise NotComplete(f"no complete question bundle for ({split!r}, {video_id!r}) in {self.path}")
        return list(group.attrs["entries"])

    def has_question_bundle(self, split: str, video_id: str) -> bool:
        return bundle_group(self, split, video_id) is not None

    def delete_question_bundle(self, split: str, video_id: str) -> bool:
        """Remove one question bundle, complete or not. Returns whether there was one."""
        self._require_writable()
        splits = self._group(layout.QUESTIONS, id_to_key(split, "split"))
        key = id_to_key(video_id)
        if splits is None or key not in splits:
            return False
        del splits[key]
        self._question_index = None
        return True

    # -- image-QA teacher probabilities ----------------------------------------------------

    def teacher_spec(self) -> TeacherSpec | None:
        """The spec of the image-QA probabilities in this store's bundles, if any."""
        group = self._group(layout.IMAGEQA)
        return None if group is None else TeacherSpec.from_dict(dict(group.attrs)["spec"])

    def teacher_vocab(self) -> list[str] | None:
        """The answer vocabulary ``imageqa_index`` points into (open-ended teachers), if any."""
        group = self._group(layout.IMAGEQA)
        return None if group is None else dict(group.attrs).get("vocab")

    def set_teacher_spec(self, spec: TeacherSpec, vocab: list[str] | None = None) -> str:
        """Record ``spec`` (and, open-ended, its answer ``vocab``) as this store's teacher (once;
        published by rename) and return its fingerprint. A store already holding another
        teacher's probabilities refuses it."""
        self._require_writable()
        return set_teacher_spec(self, spec, vocab)

    def has_imageqa(self, split: str, video_id: str, fingerprint: str) -> bool:
        """Whether the (split, video) bundle holds probabilities of the teacher ``fingerprint``."""
        group = bundle_group(self, split, video_id)
        return group is not None and group.attrs.get("imageqa_fingerprint") == fingerprint

    def write_imageqa(self, split: str, video_id: str, fingerprint: str, arrays: dict[str, np.ndarray]) -> None:
        """Add the teacher arrays (see :data:`IMAGEQA_ARRAYS`) to an existing question bundle,
        whose rows they follow. The bundle is rewritten whole and published by rename."""
        self._require_writable()
        write_imageqa(self, split, video_id, fingerprint, arrays)
        self._question_index = None

    # -- run logs --------------------------------------------------------------------------

    def write_run_log(self, run_id: str, record: dict[str, Any]) -> None:
        """Store ``record`` (JSON-able) as ``runs/<run id>``; see :mod:`~vqacache.cache_spec.run_logs`."""
        self._require_writable()
        write_run_log(self.root, run_id, record)

    def run_logs(self) -> list[dict[str, Any]]:
        """Every run's record (with ``run_id``), oldest first (by ``start``, then run id)."""
        return run_logs(self.root)

    # -- summary -------------------------------------------------------------------------

    def nbytes_on_disk(self) -> int:
        if is_url(self.path):
            return remote_nbytes(str(self.path))
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def summary(self) -> dict[str, Any]:
        """Counts for ``vqa-cache ls``/``info``."""
        return {
            "path": str(self.path),
            "dataset": self.dataset,
            "encoder": self.spec.encoder,
            "fingerprint": self.fingerprint,
            "videos": len(self.complete_videos()),
            "incomplete": len(self.incomplete_videos()),
            "failed": len(self.failures()),
            "questions": len(self.questions()),
            "bytes": self.nbytes_on_disk(),
            "created": self.meta.get("created"),
        }


def _owned_id(key: str, group: zarr.Group) -> str | None:
    """The id of the group found under ``key`` when that key is this id's own key; None for a
    group whose ``video_id`` attribute is not a valid id or belongs under another key."""
    video_id = group.attrs.get("video_id")
    if not isinstance(video_id, str):
        return None
    try:
        return video_id if id_to_key(video_id) == key else None
    except InvalidVideoId:
        return None


def _take(array: zarr.Array, sel: slice | np.ndarray) -> np.ndarray:
    if isinstance(sel, slice):
        return array[sel]
    return array.get_orthogonal_selection((np.asarray(sel),) + (slice(None),) * (array.ndim - 1))
