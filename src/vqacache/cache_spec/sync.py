"""``vqa-cache sync SRC DST``: copy a store between a local folder and an object store URL.

What is copied: every complete video (``videos/<key>``), the failure records of videos not
complete at the destination, every complete question bundle (``questions/<split>/<key>``, with
its image-QA teacher arrays) and the teacher record (``imageqa/``). Run logs stay where they
were written. The destination must be empty or a store of the same fingerprint.

Each group is copied file by file (bytes as they are, through fsspec on both sides), then its
checksum is recomputed from the destination's copy before it is published:

- to a **local** destination, the group is built under ``.tmp-<token>-<key>`` and published by
  one rename, as a featurize writer does;
- to an **object store**, whose objects appear one by one, the group's own ``zarr.json`` (which
  carries its completion marker) is uploaded **last**: until then zarr does not see the group,
  so a reader never meets a partial video. A run that was interrupted leaves such unmarked
  uploads; the next run skips the objects already there with the right size, re-checks the
  checksum and writes the marker.

Videos complete at the destination are skipped; a question bundle is re-copied when its
metadata differs (its image-QA arrays were added since). A new destination store's root is
published last in the same way (local: rename of a temporary; remote: root ``zarr.json`` last).

**Several syncs (and featurize writers) into one destination at once.**

- A **local** destination is coordinated by the featurize writers' own per-video leases
  (:mod:`vqacache.cache_spec.lease`, ``<store>.leases/<key>.json`` beside the destination): a
  sync claims a video before copying it and keeps the claim alive while it copies; a video
  another live process holds is left for later in the run, and the sync waits (polling) until
  that holder publishes it or its lease expires (then it is claimed and copied). Publishing is a
  rename either way, so even a wrong lease (a stalled holder) never mixes two copies: one
  group wins, the other temporary is removed. Small records (failure records, the teacher record,
  a split's group metadata) are written to a temporary name and renamed.
- An **object store** has no atomic create that fsspec offers on every backend, so no lease
  there; what makes two syncs of the *same source* harmless is that every object PUT is atomic
  and both upload the same bytes: each sync checks the checksum of what is at the destination
  before writing the marker (a group still being uploaded by the other fails the check and is
  uploaded again by this one), and both markers are the same bytes. Two syncs of two *different*
  stores of the same fingerprint whose bytes differ for one video, into one bucket at the same
  moment, are not coordinated (one's marker can meet the other's chunks); sync one source at a
  time into a bucket.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import zarr

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import checksum_arrays
from vqacache.cache_spec.errors import SpecMismatch, StoreError, VqaCacheError
from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.lease import Lease, try_claim
from vqacache.cache_spec.publish import is_temporary, publish, remove_tree, replace, temp_key
from vqacache.cache_spec.remote import is_url
from vqacache.cache_spec.store import FeatureStore, open_store

MARKER = "zarr.json"
Progress = Callable[[str], None]
LEASE_TTL_S = 60.0
"""A sync's claim on a video at a local destination; renewed every third of it while copying."""
WAIT_POLL_S = 0.5
"""How often a sync looks again at a video another process holds at the destination."""


class SyncError(VqaCacheError, OSError):
    """A copied group does not match its checksum at the destination (twice)."""


@dataclass
class SyncReport:
    videos_copied: list[str] = field(default_factory=list)
    videos_skipped: int = 0
    bundles_copied: int = 0
    bundles_skipped: int = 0
    failures_copied: int = 0
    files_uploaded: int = 0
    files_resumed: int = 0
    """Files found already at the destination from an interrupted run (right size: kept)."""
    videos_waited: int = 0
    """Videos another process held at a local destination when this sync reached them (waited for)."""
    bytes_copied: int = 0
    created: bool = False


class _Side:
    """One end of a sync: a local folder or an fsspec URL, addressed by path parts."""

    def __init__(self, location: str | Path) -> None:
        self.local = not is_url(str(location))
        if self.local:
            self.fs = fsspec.filesystem("file")
            self.root = str(Path(location).absolute())
        else:
            self.fs, self.root = fsspec.core.url_to_fs(str(location))
        self.location = str(location)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def url(self, *parts: str) -> str:
        return self.path(*parts) if self.local else self.fs.unstrip_protocol(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def read(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def write(self, data: bytes, *parts: str) -> None:
        """One file; locally written to a temporary name and renamed (a reader or a concurrent
        sync never sees half of it), remotely one PUT (atomic on object stores)."""
        path = self.path(*parts)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:16]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def files(self, *parts: str) -> dict[str, int]:
        """``{relative path: size}`` of the files under ``parts`` (empty when absent)."""
        base = self.path(*parts).rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {name[len(base) + 1 :]: int(info.get("size") or 0) for name, info in found.items()
                if name.startswith(base + "/")}


def sync_stores(src: str | Path, dst: str | Path, progress: Progress | None = None) -> SyncReport:
    """Copy ``src`` into ``dst`` (see the module docstring). Either may be a URL."""
    report = SyncReport()
    source = open_store(src)
    s, d = _Side(src), _Side(dst)
    if d.exists(MARKER):
        target = open_store(dst)
        if target.fingerprint != source.fingerprint:
            raise SpecMismatch(f"{dst} holds another store (fingerprint {target.fingerprint[:12]}, the source "
                               f"{source.fingerprint[:12]}); sync copies into an empty place or the same store")
        done = set(target.complete_videos())
    else:
        _create_root(s, d)
        report.created = True
        target, done = open_store(dst), set()
    note = progress or (lambda line: None)
    owner = f"sync:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    waiting = [v for v in source.complete_videos() if v not in done]
    report.videos_skipped += len(done & set(source.complete_videos()))
    first_pass = True
    while waiting:
        held = []
        for video_id in waiting:
            copied = _sync_video(source, s, d, video_id, owner, report)
            if copied is None:
                held.append(video_id)
            elif copied:
                report.videos_copied.append(video_id)
                note(f"video {video_id}")
            else:
                report.videos_skipped += 1
        if held and first_pass:
            report.videos_waited = len(held)
            note(f"{len(held)} videos held by another process at the destination: waiting for them")
        if held:
            time.sleep(WAIT_POLL_S)
        waiting, first_pass = held, False
    complete_here = done | set(report.videos_copied)
    for video_id in sorted(set(source.failures()) - complete_here):
        parts = (layout.FAILURES, id_to_key(video_id), MARKER)
        if not d.exists(*parts):
            d.write(s.read(*parts), *parts)
            report.failures_copied += 1
    _copy_bundles(source, s, d, report, note)
    if s.exists(layout.IMAGEQA, MARKER) and not d.exists(layout.IMAGEQA, MARKER):
        d.write(s.read(layout.IMAGEQA, MARKER), layout.IMAGEQA, MARKER)
    return report


def _sync_video(source: FeatureStore, s: _Side, d: _Side, video_id: str, owner: str, report: SyncReport) -> bool | None:
    """Copy one video: True when copied, False when it was complete at the destination
    meanwhile, None when another live process holds its lease at a local destination."""
    parts = (layout.VIDEOS, id_to_key(video_id))
    if not d.local:
        _copy_group(source, s, d, parts, report, replace_existing=False)
        return True
    lease: Lease | None = try_claim(d.root, video_id, owner, LEASE_TTL_S)
    if lease is None:
        return None if not d.exists(*parts, MARKER) else False
    with lease, lease.keep_alive():
        if d.exists(*parts, MARKER):  # published by its holder (a writer or another sync) before our claim
            return False
        _copy_group(source, s, d, parts, report, replace_existing=False)
    return True


def _create_root(s: _Side, d: _Side) -> None:
    """A new destination store: its group metadata, the root's ``zarr.json`` published last."""
    groups = [g for g in (layout.VIDEOS, layout.FAILURES, layout.QUESTIONS) if s.exists(g, MARKER)]
    if d.local:
        final = Path(d.root)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:16]}")
        for g in groups:
            (tmp / g).mkdir(parents=True)
            (tmp / g / MARKER).write_bytes(s.read(g, MARKER))
        (tmp / MARKER).write_bytes(s.read(MARKER))
        if not publish(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)
            if not (final / MARKER).exists():
                raise StoreError(f"cannot create store at {final}: the path exists and is not a vqacache store")
        return
    for g in groups:
        d.write(s.read(g, MARKER), g, MARKER)
    d.write(s.read(MARKER), MARKER)


def _copy_bundles(source: FeatureStore, s: _Side, d: _Side, report: SyncReport, note: Progress) -> None:
    try:
        splits = source.root[layout.QUESTIONS]
    except KeyError:
        return
    for split_key, split in sorted(splits.groups()):
        if is_temporary(split_key):
            continue
        if not d.exists(layout.QUESTIONS, split_key, MARKER):
            d.write(s.read(layout.QUESTIONS, split_key, MARKER), layout.QUESTIONS, split_key, MARKER)
        for key, bundle in sorted(split.groups()):
            if is_temporary(key) or bundle.attrs.get("complete") is not True:
                continue
            parts = (layout.QUESTIONS, split_key, key)
            there = d.read(*parts, MARKER) if d.exists(*parts, MARKER) else None
            if there == s.read(*parts, MARKER):
                report.bundles_skipped += 1
                continue
            _copy_group(source, s, d, parts, report, replace_existing=there is not None)
            report.bundles_copied += 1
            note(f"questions {split_key}/{key}")


def _copy_group(source: FeatureStore, s: _Side, d: _Side, parts: tuple[str, ...], report: SyncReport,
                replace_existing: bool) -> None:
    files = s.files(*parts)
    group = source.root["/".join(parts)]
    names = sorted(name for name, _ in group.arrays())
    checksum = group.attrs.get("checksum")
    if d.local:
        _copy_local(s, d, parts, files, names, checksum, report, replace_existing)
        return
    for attempt in (0, 1):
        there = d.files(*parts) if attempt == 0 else {}
        for rel, size in sorted(files.items()):
            if rel == MARKER:
                continue
            if there.get(rel) == size:
                report.files_resumed += 1
                continue
            d.write(s.read(*parts, rel), *parts, rel)
            report.files_uploaded += 1
            report.bytes_copied += size
        arrays = {name: zarr.open_array(d.url(*parts, name), mode="r", zarr_format=3) for name in names}
        if checksum_arrays(arrays) == checksum:
            d.write(s.read(*parts, MARKER), *parts, MARKER)  # the completion marker, last
            report.files_uploaded += 1
            return
    raise SyncError(f"{d.url(*parts)}: the copy does not match its checksum after a second upload")


def _copy_local(s: _Side, d: _Side, parts: tuple[str, ...], files: dict[str, int], names: list[str],
                checksum: str | None, report: SyncReport, replace_existing: bool) -> None:
    final = Path(d.path(*parts))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(temp_key(final.name))
    try:
        for rel, size in sorted(files.items()):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(s.read(*parts, rel))
            report.files_uploaded += 1
            report.bytes_copied += size
        group = zarr.open_group(tmp, mode="r", zarr_format=3)
        if checksum_arrays({name: group[name] for name in names}) != checksum:
            raise SyncError(f"{final}: the copy does not match its checksum")
        if replace_existing:
            replace(tmp, final)
        elif not publish(tmp, final):
            remove_tree(tmp)  # published meanwhile by another sync or writer: theirs stands
    except BaseException:
        remove_tree(tmp)
        raise
