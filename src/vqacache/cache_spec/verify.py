"""Check a whole store against its own checksums (``vqa-cache verify``).

Every complete video and every complete question bundle is read back from disk and its
checksum recomputed. Problems found:

- ``corrupt``: a complete group whose data does not match its checksum, whose patch rows do
  not fit its frames (``patch_pts`` not the sub-grid of ``pts``), that lacks an array
  the spec requires, or that cannot be read (a truncated shard, a damaged shard index or
  compressed chunk). A deleted chunk or shard file is caught by the checksum: zarr reads a
  missing chunk as fill values, which differ from what was stored (unless what was stored
  *was* all fill values, in which case the data read back is exactly right).
- ``incomplete``: a group without its completion marker (a crashed writer, or one still
  running: then the detail names the lease holder).
- ``missing``: with ``expected_ids``, ids that are neither complete nor recorded as failed;
  with ``expected_questions``, ``(split, video id)`` bundles that are not complete.

Temporaries (groups being written under ``.tmp-<token>-<key>``, or left there by a killed
writer; see :mod:`~vqacache.cache_spec.publish`) are counted but are not problems: no reader
ever sees them. :func:`remove_stale_temporaries` deletes those no live lease holds.

Recorded failures (``failed``: videos the featurizer could not decode) are listed but are not
problems by themselves: they are a known, permanent property of the dataset, and a rerun would
not change them. ``strict=True`` counts them as problems.
"""

from __future__ import annotations

import time
import warnings
from fractions import Fraction
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.errors import ZarrUserWarning

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import checksum_arrays
from vqacache.cache_spec.errors import InvalidVideoId
from vqacache.cache_spec.keys import id_to_key, key_to_id
from vqacache.cache_spec.lease import active_leases
from vqacache.cache_spec.patch_frames import subgrid_rows
from vqacache.cache_spec.publish import is_temporary, remove_tree, temp_token
from vqacache.cache_spec.store import FeatureStore
from vqacache.cache_spec.video_writer import PATCH_PTS

Progress = Callable[[int, int, str], None]
"""``progress(checked, total, name)``: called with ``checked=0`` first, then after each group."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store. ``what`` is ``video`` or ``questions``; ``id`` a video
    id, or ``<split>/<video id>`` for a question bundle."""

    kind: str  # "corrupt" | "incomplete" | "missing" | "failed"
    what: str
    id: str
    detail: str = ""
    location: tuple[str, ...] = ()
    """Where the group was found, relative to the store (``("videos", key)``,
    ``("questions", split key, key)``): what ``delete_corrupt`` removes."""


@dataclass
class VerifyReport:
    """What :func:`verify_store` found. ``clean`` when nothing is corrupt, incomplete or missing
    (and, with ``strict``, nothing failed)."""

    path: str
    ok: int = 0
    ok_questions: int = 0
    corrupt: list[Problem] = field(default_factory=list)
    incomplete: list[Problem] = field(default_factory=list)
    missing: list[Problem] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    temporaries: int = 0
    """Temporary groups found (in progress, or left by killed writers); not problems."""
    expected_checked: bool = False
    strict: bool = False

    @property
    def problems(self) -> list[Problem]:
        """Everything that makes the store not clean, in a stable order."""
        found = self.corrupt + self.incomplete + self.missing
        return found + self.failed if self.strict else found

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 clean, 1 anything wrong."""
        return 0 if self.clean else 1

    def summary_line(self) -> str:
        parts = [
            f"{self.ok} videos ok",
            f"{self.ok_questions} question bundles ok",
            f"{len(self.corrupt)} corrupt",
            f"{len(self.incomplete)} incomplete",
            f"{len(self.missing)} missing" if self.expected_checked else "missing not checked (no expected ids)",
            f"{len(self.failed)} failed",
        ]
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} complete but not expected")
        if self.temporaries:
            parts.append(f"{self.temporaries} temporaries (invisible to readers)")
        return ("OK: " if self.clean else "PROBLEMS: ") + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        def rows(problems: list[Problem]) -> list[dict[str, str]]:
            return [{"what": p.what, "id": p.id, "detail": p.detail} for p in problems]

        return {
            "path": self.path,
            "clean": self.clean,
            "ok": self.ok,
            "ok_questions": self.ok_questions,
            "corrupt": rows(self.corrupt),
            "incomplete": rows(self.incomplete),
            "missing": rows(self.missing),
            "failed": rows(self.failed),
            "unexpected": list(self.unexpected),
            "temporaries": self.temporaries,
            "expected_checked": self.expected_checked,
            "strict": self.strict,
        }


def verify_store(
    store: FeatureStore,
    expected_ids: Iterable[str] | None = None,
    progress: Progress | None = None,
    *,
    expected_questions: Iterable[tuple[str, str]] | None = None,
    strict: bool = False,
) -> VerifyReport:
    """Recompute every complete video's and question bundle's checksum from disk and compare
    the store with ``expected_ids`` (video ids) and ``expected_questions`` ((split, video id)
    pairs). See the module docstring for what counts as a problem."""
    report = VerifyReport(path=str(store.path), strict=strict)
    videos = _children(store.root, layout.VIDEOS)
    bundles = [
        (split_key, key, group)
        for split_key, split_group in _children(store.root, layout.QUESTIONS)
        for key, group in split_group.groups()
        if not is_temporary(key)  # a bundle being written (published by rename)
    ]
    videos = [(key, group) for key, group in videos if not is_temporary(key)]
    report.temporaries = len(store.temporaries())
    leases = active_leases(store.path)
    required = _required_arrays(store)
    total = len(videos) + len(bundles)
    checked = 0
    if progress is not None:
        progress(0, total, "")

    complete: set[str] = set()
    for key, group in videos:
        video_id = str(group.attrs.get("video_id", key))
        where = (layout.VIDEOS, key)
        misplaced = _misplaced(video_id, key)
        if misplaced:  # a forged, renamed or copied folder: readers ignore it, its data is not this key's
            report.corrupt.append(Problem("corrupt", "video", video_id, misplaced, where))
            checked += 1
            continue
        if group.attrs.get("complete") is not True:
            report.incomplete.append(Problem("incomplete", "video", video_id, _in_progress(leases.get(video_id)), where))
        else:
            detail = (
                _check_group(group, required) or _check_dtypes(group, store.spec.dtype)
                or _check_patch_rows(group, store.spec.outputs.patch_fps)
            )
            if detail:
                report.corrupt.append(Problem("corrupt", "video", video_id, detail, where))
            else:
                report.ok += 1
            complete.add(video_id)
        checked += 1
        if progress is not None:
            progress(checked, total, video_id)

    complete_bundles: set[tuple[str, str]] = set()
    for split_key, key, group in bundles:
        video_id = str(group.attrs.get("video_id", key))
        split = str(group.attrs.get("split", key_to_id(split_key)))
        name = f"{split}/{video_id}"
        where = (layout.QUESTIONS, split_key, key)
        misplaced = _misplaced(video_id, key) or _misplaced(split, split_key, "split")
        if misplaced:
            report.corrupt.append(Problem("corrupt", "questions", name, misplaced, where))
        elif group.attrs.get("complete") is not True:
            report.incomplete.append(Problem("incomplete", "questions", name, "no completion marker", where))
        else:
            detail = _check_group(group, ())
            if detail:
                report.corrupt.append(Problem("corrupt", "questions", name, detail, where))
            else:
                report.ok_questions += 1
            complete_bundles.add((split, video_id))
        checked += 1
        if progress is not None:
            progress(checked, total, name)

    failures = store.failures()
    report.failed = [Problem("failed", "video", vid, reason) for vid, reason in sorted(failures.items()) if vid not in complete]
    if expected_ids is not None:
        expected = set(expected_ids)
        report.expected_checked = True
        report.missing = [Problem("missing", "video", vid, "not in the store") for vid in sorted(expected - complete - set(failures))]
        report.unexpected = sorted(complete - expected)
    if expected_questions is not None:
        report.expected_checked = True
        report.missing += [
            Problem("missing", "questions", f"{split}/{vid}", "no complete bundle")
            for split, vid in sorted(set(expected_questions) - complete_bundles)
        ]
    return report


def delete_corrupt(store: FeatureStore, report: VerifyReport) -> list[str]:
    """Remove the corrupt groups of ``report`` so the next featurize run recomputes them.
    Returns their names (``video <id>`` / ``questions <split>/<id>``)."""
    removed = []
    for problem in report.corrupt:
        if problem.location and store.delete_group(*problem.location):  # where it was found, not its id's key
            removed.append(f"{problem.what} {problem.id}")
    return removed


def _children(root: zarr.Group, name: str) -> list[tuple[str, zarr.Group]]:
    try:
        parent = root[name]
    except KeyError:
        return []
    return sorted(parent.groups()) if isinstance(parent, zarr.Group) else []


def _required_arrays(store: FeatureStore) -> tuple[str, ...]:
    names = ["cls", *layout.TIME_ARRAYS]
    if store.spec.outputs.cls_hidden is not None:
        names.append("cls_hidden")
    if store.spec.outputs.patches:
        names.append("patch")
    if store.spec.outputs.patch_fps is not None:
        names.append(PATCH_PTS)
    return tuple(sorted(names))


def _check_group(group: zarr.Group, required: tuple[str, ...]) -> str:
    """'' when the group's arrays match its checksum, else what is wrong."""
    try:
        with warnings.catch_warnings():  # a deleted array's leftover folder: reported below
            warnings.simplefilter("ignore", ZarrUserWarning)
            arrays = dict(group.arrays())
        absent = sorted(set(required) - set(arrays))
        if absent:
            return f"array(s) missing: {', '.join(absent)}"
        if checksum_arrays(arrays) != group.attrs.get("checksum"):
            return "checksum mismatch (data changed, or a chunk/shard file deleted)"
    except Exception as exc:  # any decoding failure of damaged files means corrupt
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"unreadable: {type(exc).__name__}: {message}"
    return ""


def _check_patch_rows(group: zarr.Group, patch_fps: str | None) -> str:
    """'' when the patch rows fit the frame list, else what is wrong: one row per frame without
    a sub-grid; with ``patch_fps``, one row per ``patch_pts`` entry, and ``patch_pts`` exactly
    the frame times the sub-grid rule picks from ``pts`` (so a subset of them)."""
    if "patch" not in group:
        return ""
    pts = np.asarray(group["pts"][:], dtype=np.float64)
    n_patch = group["patch"].shape[0]
    if patch_fps is None:
        if PATCH_PTS in group:
            return f"{PATCH_PTS} present, but the spec keeps patch tokens on every frame"
        return "" if n_patch == len(pts) else f"patch has {n_patch} rows for {len(pts)} frames"
    patch_pts = np.asarray(group[PATCH_PTS][:], dtype=np.float64)
    if n_patch != len(patch_pts):
        return f"patch has {n_patch} rows for {len(patch_pts)} patch_pts"
    if not np.isin(patch_pts, pts).all():
        return "patch_pts holds times that are not frame times (pts)"
    expected = pts[subgrid_rows(pts, Fraction(patch_fps))]
    if not np.array_equal(patch_pts, expected):
        return f"patch_pts is not the {patch_fps} fps sub-grid of pts ({len(patch_pts)} rows, the rule gives {len(expected)})"
    return ""


def _misplaced(name: str, key: str, what: str = "id") -> str:
    """'' when ``key`` is ``name``'s own key, else why the group does not belong there."""
    try:
        own = id_to_key(name, what)
    except InvalidVideoId as exc:
        return f"its {what} attribute is not a valid id ({exc})"
    return "" if own == key else f"stored under key {key!r}, which is not this {what}'s"


def _check_dtypes(group: zarr.Group, dtype: str) -> str:
    """'' when the group's feature arrays have the spec's storage dtype, else what differs
    (a spec edited by hand with its fingerprint recomputed)."""
    for name in layout.FEATURE_ARRAYS:
        if name in group and group[name].dtype != np.dtype(dtype):
            return f"{name} is stored as {group[name].dtype}, the spec says {dtype}"
    return ""


def _in_progress(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "no completion marker (crashed or interrupted writer)"
    return f"no completion marker; being written by {lease.get('owner')} on {lease.get('host')}"


def remove_stale_temporaries(store: FeatureStore, min_age_s: float = 600.0) -> list[str]:
    """Delete the temporary groups that no writer will publish: those whose token no live
    lease carries and that nothing touched for ``min_age_s`` seconds (a question bundle's
    temporary has no lease: its age alone decides). Returns the removed folders' names."""
    held = {str(r.get("token", ""))[:16] for kind in ("video", "imageqa") for r in active_leases(store.path, kind=kind).values()}
    now = time.time()
    removed = []
    for path in store.temporaries():
        if temp_token(path.name) in held:
            continue
        try:
            newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
        except FileNotFoundError:
            continue  # published or removed by its writer just now
        if now - newest >= min_age_s:
            remove_tree(path)
            removed.append(str(path.relative_to(store.path)))
    return removed
