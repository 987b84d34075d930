"""``vqa-cache du``: bytes on disk per dataset, encoder and kind of output, and a projection.

Every file of a store is counted once, under the kind its path says (:func:`kind_of`):
a video array's name (``cls``, ``cls_hidden``, ``patch``, ``time`` for ``pts``/``src_index``/
``is_repeat``/``patch_pts``), ``questions`` (question bundles' text arrays), ``imageqa`` (the
teacher arrays inside them), ``failures``, ``runs``, ``temporaries`` (groups being written or
abandoned), ``metadata`` (``zarr.json`` files of groups) and ``leases`` (beside the store).

The projection for a dataset's full video list is the store's bytes with its complete videos'
bytes scaled to ``expected`` videos: ``other + video_bytes / complete * expected``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqacache.cache_spec import layout
from vqacache.cache_spec.lease import lease_dir
from vqacache.cache_spec.publish import is_temporary
from vqacache.cache_spec.run_logs import RUNS
from vqacache.cache_spec.store import open_store
from vqacache.cache_spec.video_writer import PATCH_PTS

VIDEO_KINDS = ("cls", "cls_hidden", "patch", "time")
_TIME = {*layout.TIME_ARRAYS, PATCH_PTS}
_TEACHER = {"imageqa", "imageqa_pts", "imageqa_index"}


@dataclass
class StoreUsage:
    path: str
    dataset: str
    encoder: str
    fingerprint: str
    complete: int
    failed: int
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def video_bytes(self) -> int:
        return sum(self.by_kind.get(k, 0) for k in VIDEO_KINDS)

    def projection(self, expected: int) -> int | None:
        """Bytes once ``expected`` videos are complete (None without a complete video to scale)."""
        if self.complete == 0:
            return None
        return self.total - self.video_bytes + round(self.video_bytes / self.complete * expected)


def kind_of(parts: tuple[str, ...]) -> str:
    """The kind of the store file at relative path ``parts`` (see the module docstring)."""
    if any(is_temporary(p) for p in parts):
        return "temporaries"
    if parts[-1] == "zarr.json" and (len(parts) <= 3 or parts[0] != layout.VIDEOS):
        return "metadata"
    head = parts[0]
    if head == layout.VIDEOS and len(parts) >= 4:
        name = parts[2]
        return "time" if name in _TIME else name
    if head == layout.QUESTIONS and len(parts) >= 5:
        return "imageqa" if parts[3] in _TEACHER else "questions"
    if head in (layout.FAILURES, RUNS):
        return head
    return "metadata"


def store_usage(path: str | Path) -> StoreUsage:
    """Bytes of the store at ``path`` by kind (plus its lease folder)."""
    store = open_store(path)
    usage = StoreUsage(str(store.path), store.dataset, store.spec.encoder, store.fingerprint,
                       len(store.complete_videos()), len(store.failures()))
    for f in store.path.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                kind = kind_of(f.relative_to(store.path).parts)
                usage.by_kind[kind] = usage.by_kind.get(kind, 0) + f.stat().st_size
        except FileNotFoundError:  # published or removed while we walk
            continue
    leases = sum(f.stat().st_size for f in lease_dir(store.path).rglob("*") if f.is_file()) if lease_dir(store.path).is_dir() else 0
    if leases:
        usage.by_kind["leases"] = leases
    return usage
