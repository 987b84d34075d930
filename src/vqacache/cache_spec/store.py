"""Reading and writing a feature store (one Zarr v3 group per (dataset, spec)).

Public entry point: :func:`open_store`. The layout is in :mod:`vqacache.cache_spec.layout`
and ``docs/cache-format.md``; plain ``zarr`` can read everything written here.

Safety rules, all enforced here:
- a store's spec is fixed at creation; opening it for writing with another spec raises
  :class:`SpecMismatch`;
- each video (and each question bundle) is a group written by one writer; its completion
  marker (``attrs["complete"] = True`` with the checksum) is written last, atomically;
  readers only ever see complete videos;
- ids are validated and percent-encoded into keys (:mod:`vqacache.cache_spec.keys`);
- concurrent runs coordinate through leases (:mod:`vqacache.cache_spec.lease`, beside the
  store) and each run logs into its own group ``runs/<run id>``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsGroupError

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import ArrayHasher, checksum_arrays
from vqacache.cache_spec.environment import producing_environment
from vqacache.cache_spec.errors import NotComplete, SpecError, SpecMismatch, StoreError
from vqacache.cache_spec.keys import id_to_key, key_to_id, validate_id
from vqacache.cache_spec.lease import (
    DEFAULT_GRACE_S,
    Lease,
    LeaseLost,
    active_leases,
    break_lease,
    lease_dir,
    try_claim,
)
from vqacache.cache_spec.spec import FORMAT_VERSION, FeatureSpec
from vqacache.cache_spec.teacher_spec import TeacherSpec, vocab_sha256

ROOT_ATTR = "vqacache"
MODES = ("r", "a")
IMAGEQA_ARRAYS = ("imageqa", "imageqa_pts", "imageqa_index")
"""A bundle's teacher arrays, Q questions: ``imageqa`` (Q, F, K) float32 probabilities (K = the
candidates, or the top-k of the vocabulary; padding is 0), ``imageqa_pts`` (Q, F) float64
seconds (NaN marks the padding past a question's own frame count), ``imageqa_index`` (Q, F, K)
int64 vocabulary indices (open-ended only; padding -1)."""
QUESTION_ARRAYS = ("text", "text_tokens", "text_len", "cand", "cand_tokens", "cand_len", *IMAGEQA_ARRAYS)
KEEP_DTYPE = ("imageqa", "imageqa_pts")
"""Question arrays stored as given rather than in the spec's dtype: probabilities stay float32
(float16 loses small ones) and times float64."""
RUNS = "runs"
"""Group of run logs, ``runs/<run key>``; created by the first run that logs (absent in older stores)."""


@dataclass
class VideoFeatures:
    """One complete video read from a store. ``T`` frames at the spec's fps.

    ``cls`` (T, E); ``cls_hidden`` (T, W) or None; ``patch`` (T, P, W) or None;
    ``pts`` (T,) seconds from the first frame; ``src_index`` (T,) index of each frame among
    the source video's frames in presentation order; ``is_repeat`` (T,) True where the
    frame repeats the previous one (videos slower than the sampling fps); ``attrs`` the
    video's attributes (source info, checksum).
    """

    video_id: str
    cls: np.ndarray
    pts: np.ndarray
    src_index: np.ndarray
    is_repeat: np.ndarray
    cls_hidden: np.ndarray | None = None
    patch: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:  # dict-style access: v["cls"]
        return getattr(self, name)


@dataclass
class QuestionFeatures:
    """One question's text features. ``C`` candidates (0 for open-ended).

    ``text`` (E,) sentence vector; ``text_tokens`` (L, W) token states (L = its own length);
    ``cand`` (C, E) candidate sentence vectors; ``cand_tokens`` list of C arrays (L_c, W).
    """

    qid: str
    video_id: str
    split: str
    question: str
    candidates: tuple[str, ...]
    answer: int | str | None
    qtype: str | None
    start: float | None
    end: float | None
    text: np.ndarray | None
    """None when the store's encoder has no text tower (``spec.outputs.text`` is None)."""
    text_tokens: np.ndarray | None
    cand: np.ndarray | None
    cand_tokens: list[np.ndarray] | None
    imageqa: np.ndarray | None = None
    """The image-QA teacher's probabilities (F, C) (open-ended: (F, k) over ``imageqa_index``)."""
    imageqa_pts: np.ndarray | None = None
    """(F,) seconds of the teacher's frames."""
    imageqa_index: np.ndarray | None = None
    """(F, k) vocabulary indices of ``imageqa``'s columns (open-ended), else None."""
    imageqa_fingerprint: str | None = None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


def _imageqa_of(group: zarr.Group, row: int, n_cand: int) -> dict[str, Any]:
    """The teacher fields of QuestionFeatures for bundle row ``row`` (all None without them):
    ``imageqa`` (F, C) for multiple choice or (F, k) open-ended, ``imageqa_pts`` (F,),
    ``imageqa_index`` (F, k) or None, ``imageqa_fingerprint``; F = this question's frames."""
    if "imageqa" not in group:
        return {}
    pts = group["imageqa_pts"][row]
    n_frames = int(np.count_nonzero(~np.isnan(pts)))
    probs = group["imageqa"][row, :n_frames]
    index = group["imageqa_index"][row, :n_frames] if "imageqa_index" in group else None
    if index is None and n_cand:
        probs = probs[:, :n_cand]
    return {"imageqa": probs, "imageqa_pts": pts[:n_frames], "imageqa_index": index,
            "imageqa_fingerprint": group.attrs.get("imageqa_fingerprint")}


def _diff_dicts(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_dicts(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A run id unique across processes and machines: ``<UTC time>-<host>-<pid>-<random>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
    path = Path(path)
    if not (path / "zarr.json").exists():
        if mode == "r":
            raise StoreError(f"no vqacache store at {path}")
        if spec is None or dataset is None:
            raise ValueError("creating a store needs spec= and dataset=")
        _create_root(path, spec, dataset)
    store = FeatureStore(path, writable=(mode == "a"))
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
        "created": _utcnow(),
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
            self.root = zarr.open_group(path, mode="r+" if writable else "r", zarr_format=3)
            meta = dict(self.root.attrs)[ROOT_ATTR]
        except (KeyError, FileNotFoundError, ValueError) as exc:
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
        return self._group(layout.VIDEOS, id_to_key(video_id))

    def _iter_groups(self, name: str) -> Iterator[tuple[str, zarr.Group]]:
        parent = self._group(name)
        if parent is not None:
            yield from parent.groups()

    def complete_videos(self) -> list[str]:
        """Ids of the videos whose completion marker exists, sorted."""
        return sorted(key_to_id(k) for k, g in self._iter_groups(layout.VIDEOS) if g.attrs.get("complete") is True)

    def incomplete_videos(self) -> list[str]:
        """Ids of video groups that were started but never completed (crashed writers)."""
        return sorted(key_to_id(k) for k, g in self._iter_groups(layout.VIDEOS) if g.attrs.get("complete") is not True)

    def is_complete(self, video_id: str) -> bool:
        group = self._video_group(video_id)
        return group is not None and group.attrs.get("complete") is True

    def _complete_group(self, video_id: str) -> zarr.Group:
        group = self._video_group(video_id)
        if group is None or group.attrs.get("complete") is not True:
            raise NotComplete(f"video {video_id!r} is not complete in {self.path}")
        return group

    def video_arrays(self, video_id: str) -> dict[str, zarr.Array]:
        """The complete video's arrays, lazily (slice them to read a few frames)."""
        group = self._complete_group(video_id)
        return {name: array for name, array in group.arrays()}

    def read_video(self, video_id: str, frames: slice | np.ndarray | None = None) -> VideoFeatures:
        """Read a complete video; ``frames`` (a slice or index array) reads only those frames."""
        group = self._complete_group(video_id)
        sel = slice(None) if frames is None else frames
        arrays = {name: _take(array, sel) for name, array in group.arrays()}
        return VideoFeatures(
            video_id=video_id,
            cls=arrays["cls"],
            pts=arrays["pts"],
            src_index=arrays["src_index"],
            is_repeat=arrays["is_repeat"],
            cls_hidden=arrays.get("cls_hidden"),
            patch=arrays.get("patch"),
            attrs=dict(group.attrs),
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

    @contextmanager
    def write_video(
        self, video_id: str, attrs: dict[str, Any] | None = None, *, lease: Lease | None = None
    ) -> Iterator[VideoWriter]:
        """Write one video: ``with store.write_video(vid, attrs) as w: w.append(...)``.

        Any earlier partial group of the video is removed first. On a clean exit the data is
        flushed and the completion marker written; on an exception the partial group is
        removed and the exception propagates (the caller records the failure).

        With ``lease`` (from :meth:`claim`), the lease is renewed before anything is touched
        and once more between the last data and the marker; if another process took the
        video over, :class:`LeaseLost` propagates and the group, now the new holder's, is
        left alone (also when ``LeaseLost`` is raised inside the block).
        """
        self._require_writable()
        if lease is not None:
            if lease.video_id != video_id:
                raise ValueError(f"lease is for {lease.video_id!r}, not {video_id!r}")
            lease.renew()
        key = id_to_key(video_id)
        videos = self.root[layout.VIDEOS]
        if key in videos:
            if videos[key].attrs.get("complete") is True:
                raise StoreError(f"video {video_id!r} is already complete in {self.path}")
            del videos[key]
        base = {"video_id": video_id, "complete": False, "started": _utcnow(), **(attrs or {})}
        group = videos.create_group(key, attributes=base)
        writer = VideoWriter(group, self.spec)
        try:
            yield writer
            writer.finish(before_marker=lease.renew if lease is not None else None)
        except BaseException as exc:
            if lease is None or not isinstance(exc, LeaseLost):
                del videos[key]
            raise
        self._clear_failure(video_id)

    def delete_video(self, video_id: str) -> bool:
        """Remove a video's group, complete or not (``vqa-cache verify --delete-corrupt``).
        Returns whether there was one. Do not use on a video another process is writing."""
        self._require_writable()
        videos = self.root[layout.VIDEOS]
        key = id_to_key(video_id)
        if key not in videos:
            return False
        del videos[key]
        return True

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
        video meanwhile), renews while working (``lease.keep_alive()`` or
        ``lease.renew_if_due()``), writes with ``write_video(..., lease=lease)`` and
        releases. A lease whose holder died is taken over ``ttl_s + grace_s`` after its
        last renewal, or at once when the holder ran on this host and its process is gone.
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
            key, attributes={"video_id": video_id, "reason": reason, "message": message, "time": _utcnow()}
        )

    def _clear_failure(self, video_id: str) -> None:
        failures = self.root[layout.FAILURES]
        key = id_to_key(video_id)
        if key in failures:
            del failures[key]

    def failures(self) -> dict[str, str]:
        """``{video_id: "<reason>: <message>"}`` for every failed video; reason is the class."""
        return {
            key_to_id(k): f"{g.attrs['reason']}: {g.attrs['message']}" for k, g in self._iter_groups(layout.FAILURES)
        }

    # -- questions -----------------------------------------------------------------------

    def write_questions(
        self, split: str, video_id: str, entries: list[dict[str, Any]], arrays: dict[str, np.ndarray],
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Write the text features of one video's questions in one split, as one bundle.

        ``entries``: one dict per question (``qid``, ``question``, ``candidates``, ``answer``,
        ``qtype``, ``start``, ``end``). ``arrays``, with Q questions, C = max candidates and L
        the longest token count: ``text`` (Q, E), ``text_tokens`` (Q, L, W), ``text_len``
        (Q,), and when C > 0 ``cand`` (Q, C, E), ``cand_tokens`` (Q, C, L, W), ``cand_len``
        (Q, C). Rewrites an existing bundle.
        """
        self._require_writable()
        for entry in entries:
            validate_id(entry["qid"], "question id")
        unknown = set(arrays) - set(QUESTION_ARRAYS)
        if unknown:
            raise ValueError(f"unknown question arrays: {sorted(unknown)}")
        questions = self.root[layout.QUESTIONS]
        split_key = id_to_key(split, "split")
        try:
            splits = questions.require_group(split_key)
        except Exception:  # created by a concurrent writer between the check and the write
            splits = questions[split_key]
        key = id_to_key(video_id)
        # build under a temporary name, publish with one rename: two runs writing the same
        # bundle at once never interleave (the loser discards its copy)
        tmp_key = f".tmp-{uuid.uuid4().hex[:12]}-{key}"[:240]
        group = splits.create_group(tmp_key, attributes={"video_id": video_id, "split": split, "complete": False})
        stored: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and name not in KEEP_DTYPE:
                value = value.astype(self.spec.dtype)
            group.create_array(name, data=value, chunks=value.shape or (1,), compressors=None)
            stored[name] = value
        group.attrs.update(
            {**_json_safe(attributes or {}), "entries": _json_safe(entries), "checksum": checksum_arrays(stored),
             "complete": True, "written": _utcnow()}
        )
        split_dir = self.path / layout.QUESTIONS / split_key
        final, tmp = split_dir / key, split_dir / tmp_key
        if final.exists():  # an older or partial bundle: replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another writer published first
            shutil.rmtree(tmp, ignore_errors=True)
        self._question_index = None

    def _questions_index(self) -> dict[str, tuple[str, str, int]]:
        if self._question_index is None:
            index: dict[str, tuple[str, str, int]] = {}
            for split_key, split_group in self._iter_groups(layout.QUESTIONS):
                for key, group in split_group.groups():
                    if key.startswith(".tmp-") or group.attrs.get("complete") is not True:
                        continue
                    for row, entry in enumerate(group.attrs["entries"]):
                        index[entry["qid"]] = (split_key, key, row)
            self._question_index = index
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
            split_key, key, row = self._questions_index()[qid]
        except KeyError:
            raise NotComplete(f"question {qid!r} is not in {self.path}") from None
        group = self.root[f"{layout.QUESTIONS}/{split_key}/{key}"]
        entry = group.attrs["entries"][row]
        cand = cand_tokens = text = text_tokens = None
        n_cand = len(entry["candidates"])
        if "text_len" in group:  # absent for vision-only encoders (spec.outputs.text is None)
            text, text_tokens = group["text"][row], group["text_tokens"][row, : int(group["text_len"][row])]
        if n_cand and "cand" in group:
            cand = group["cand"][row, :n_cand]
            lengths = group["cand_len"][row, :n_cand]
            block = group["cand_tokens"][row, :n_cand]
            cand_tokens = [block[c, : int(lengths[c])] for c in range(n_cand)]
        return QuestionFeatures(
            qid=qid,
            video_id=group.attrs["video_id"],
            split=group.attrs["split"],
            question=entry["question"],
            candidates=tuple(entry["candidates"]),
            answer=entry.get("answer"),
            qtype=entry.get("qtype"),
            start=entry.get("start"),
            end=entry.get("end"),
            text=text,
            text_tokens=text_tokens,
            cand=cand,
            cand_tokens=cand_tokens,
            **_imageqa_of(group, row, n_cand),
        )

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
        if (vocab is None) != (spec.vocab_sha256 is None) or (vocab is not None and vocab_sha256(vocab) != spec.vocab_sha256):
            raise ValueError("the vocabulary must be given exactly when the spec has one, and match its sha256")
        current = self.teacher_spec()
        if current is None:
            tmp_key = f".tmp-{uuid.uuid4().hex[:12]}-{layout.IMAGEQA}"
            attributes = {"spec": spec.to_dict(), "fingerprint": spec.fingerprint(), "vocab": vocab}
            self.root.create_group(tmp_key, attributes=attributes)
            try:
                os.rename(self.path / tmp_key, self.path / layout.IMAGEQA)
            except OSError:  # another run recorded one first: compare with it below
                shutil.rmtree(self.path / tmp_key, ignore_errors=True)
            current = self.teacher_spec()
        if current is None or current.fingerprint() != spec.fingerprint():
            changes = "; ".join(_diff_dicts(current.to_dict() if current else {}, spec.to_dict())) or "fingerprints differ"
            raise SpecMismatch(
                f"store {self.path} already holds image-QA probabilities of another teacher spec ({changes}); "
                "one teacher per store: use another --cache-root for this one"
            )
        return spec.fingerprint()

    def has_imageqa(self, split: str, video_id: str, fingerprint: str) -> bool:
        """Whether the (split, video) bundle holds probabilities of the teacher ``fingerprint``."""
        group = self._group(layout.QUESTIONS, id_to_key(split, "split"), id_to_key(video_id))
        return group is not None and group.attrs.get("complete") is True and group.attrs.get("imageqa_fingerprint") == fingerprint

    def write_imageqa(self, split: str, video_id: str, fingerprint: str, arrays: dict[str, np.ndarray]) -> None:
        """Add the teacher arrays (see :data:`IMAGEQA_ARRAYS`) to an existing question bundle,
        whose rows they follow. The bundle is rewritten whole and published by rename."""
        self._require_writable()
        spec = self.teacher_spec()
        if spec is None or spec.fingerprint() != fingerprint:
            raise StoreError(f"record the teacher spec first (set_teacher_spec); {fingerprint[:12]} is not this store's")
        unknown = set(arrays) - set(IMAGEQA_ARRAYS)
        if unknown:
            raise ValueError(f"unknown image-QA arrays: {sorted(unknown)}")
        entries = self.question_entries(split, video_id)
        group = self.root[f"{layout.QUESTIONS}/{id_to_key(split, 'split')}/{id_to_key(video_id)}"]
        for name, value in arrays.items():
            if value.shape[0] != len(entries):
                raise ValueError(f"{name} has {value.shape[0]} rows for {len(entries)} questions")
        existing = {name: group[name][...] for name in group.array_keys() if name not in IMAGEQA_ARRAYS}
        self.write_questions(split, video_id, entries, {**existing, **arrays},
                             attributes={"imageqa_fingerprint": fingerprint})

    def question_entries(self, split: str, video_id: str) -> list[dict[str, Any]]:
        """The questions of one (split, video) bundle, in row order (qid, question, candidates, ...)."""
        group = self._group(layout.QUESTIONS, id_to_key(split, "split"), id_to_key(video_id))
        if group is None or group.attrs.get("complete") is not True:
            raise NotComplete(f"no complete question bundle for ({split!r}, {video_id!r}) in {self.path}")
        return list(group.attrs["entries"])

    def has_question_bundle(self, split: str, video_id: str) -> bool:
        group = self._group(layout.QUESTIONS, id_to_key(split, "split"), id_to_key(video_id))
        return group is not None and group.attrs.get("complete") is True

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

    # -- run logs --------------------------------------------------------------------------

    def write_run_log(self, run_id: str, record: dict[str, Any]) -> None:
        """Store ``record`` (JSON-able) as the attributes of ``runs/<run id>``, replacing
        what this run logged before. Each run has its own group, so concurrent runs never
        write the same metadata; log the same ``run_id`` from one process only."""
        self._require_writable()
        runs = self._runs_group(create=True)
        key = id_to_key(run_id, "run id")
        attrs = {**_json_safe(record), "run_id": run_id}
        if key in runs:
            runs[key].attrs.put(attrs)
        else:
            try:
                runs.create_group(key, attributes=attrs)
            except ContainsGroupError:
                runs[key].attrs.put(attrs)

    def run_logs(self) -> list[dict[str, Any]]:
        """Every run's record (with ``run_id``), oldest first (by ``start``, then run id)."""
        runs = self._runs_group(create=False)
        if runs is None:
            return []
        logs = [dict(group.attrs) for _, group in runs.groups()]
        return sorted(logs, key=lambda r: (str(r.get("start", "")), str(r.get("run_id", ""))))

    def _runs_group(self, create: bool) -> zarr.Group | None:
        runs = self._group(RUNS)
        if runs is not None or not create:
            return runs
        try:  # two runs may create it at once: both write the same empty group
            return self.root.create_group(RUNS)
        except ContainsGroupError:
            return self.root[RUNS]

    # -- summary -------------------------------------------------------------------------

    def nbytes_on_disk(self) -> int:
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


class VideoWriter:
    """Appends one video's frames in time order; flushes whole shards only.

    Created by :meth:`FeatureStore.write_video`; not for direct use.
    """

    def __init__(self, group: zarr.Group, spec: FeatureSpec) -> None:
        self.group = group
        self.spec = spec
        self.n_frames = 0
        self._hasher = ArrayHasher()
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._written: dict[str, int] = {}
        self._expected = {"cls"} | set(layout.TIME_ARRAYS)
        if spec.outputs.cls_hidden is not None:
            self._expected.add("cls_hidden")
        if spec.outputs.patches:
            self._expected.add("patch")

    def append(self, **blocks: Any) -> None:
        """Append a block of frames: ``cls`` (n, E), ``pts``/``src_index``/``is_repeat`` (n,),
        ``cls_hidden`` (n, W) and ``patch`` (n, P, W) when the spec asks for them. Arrays may
        be numpy arrays or CPU torch tensors; features are cast to the spec's storage dtype."""
        names = set(blocks)
        if names != self._expected:
            missing, extra = self._expected - names, names - self._expected
            raise ValueError(f"append() needs exactly {sorted(self._expected)}; missing {sorted(missing)}, unexpected {sorted(extra)}")
        sizes = {name: len(block) for name, block in blocks.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"append() blocks disagree on the number of frames: {sizes}")
        for name, block in blocks.items():
            dtype = layout.TIME_ARRAYS.get(name, self.spec.dtype)
            array = np.asarray(block).astype(dtype, copy=False)
            if dtype.startswith("float") and not np.isfinite(array).all():
                raise ValueError(f"refusing to store non-finite values in {name!r}")
            self._hasher.update(name, array)
            self._buffers.setdefault(name, []).append(array)
            self._flush(name, final=False)
        self.n_frames += next(iter(sizes.values()))

    def _array(self, name: str, first: np.ndarray) -> zarr.Array:
        if name in self.group:
            return self.group[name]
        frame_shape = first.shape[1:]
        if name in layout.TIME_ARRAYS:
            return self.group.create_array(name, shape=(0,), dtype=first.dtype, chunks=(layout.TIME_CHUNK,))
        chunks, shards = layout.chunk_shapes(name, frame_shape)
        return self.group.create_array(
            name, shape=(0, *frame_shape), dtype=first.dtype, chunks=chunks, shards=shards, compressors=None
        )

    def _flush(self, name: str, final: bool) -> None:
        pending = self._buffers.get(name)
        if not pending:
            return
        step = layout.TIME_CHUNK if name in layout.TIME_ARRAYS else layout.shard_frames(name)
        buffered = sum(len(b) for b in pending)
        n_out = buffered if final else (buffered // step) * step
        if n_out == 0:
            return
        data = np.concatenate(pending)
        self._buffers[name] = [data[n_out:]] if n_out < len(data) else []
        array = self._array(name, data)
        start = self._written.get(name, 0)
        array.resize((start + n_out, *data.shape[1:]))
        array[start : start + n_out] = data[:n_out]
        self._written[name] = start + n_out

    def finish(self, before_marker: Callable[[], None] | None = None) -> str:
        """Flush everything and write the completion marker (last). Returns the checksum.

        ``before_marker`` runs after the data is flushed, just before the marker (the
        lease check); if it raises, no marker is written."""
        if self.n_frames == 0:
            raise ValueError("refusing to complete a video with zero frames")
        for name in self._expected:
            self._flush(name, final=True)
        checksum = self._hasher.hexdigest()
        if before_marker is not None:
            before_marker()
        self.group.attrs.update(
            {"n_frames": self.n_frames, "checksum": checksum, "finished": _utcnow(), "complete": True}
        )
        return checksum


def _take(array: zarr.Array, sel: slice | np.ndarray) -> np.ndarray:
    if isinstance(sel, slice):
        return array[sel]
    return array.get_orthogonal_selection((np.asarray(sel),) + (slice(None),) * (array.ndim - 1))


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars and tuples become plain JSON values."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
