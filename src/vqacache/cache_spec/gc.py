"""``vqa-cache gc``: find, then (asked to) remove, what no reader and no live writer needs.

Under a cache root (every ``<dataset>/<name>.zarr``) or in one store, :func:`plan_gc` lists:

- ``temporary``: a group being built under ``.tmp-<token>-<key>`` (or an old copy moved aside,
  ``.old-...``), and a store being created or imported beside its final name
  (``.<name>.zarr.tmp-...``), that no live lease carries and nothing touched for ``min_age_s``
  (default 600 s, above any lease's ttl and any bundle's write time);
- ``lease``: a lease file whose holder's lease expired (plus the grace) or whose holder is dead;
- ``lease-leftover``: the private files of lease operations (``.<lease>.<token>.tmp``,
  ``.renew-``, ``.released-``, ``.stale-``, ``.broken-``, steal tickets) older than ``min_age_s``;
- ``failure``: the failure record of a video that has since been completed;
- ``run-log``: a run log finished more than ``run_log_days`` ago.

Nothing else is ever listed: never a complete video, a question bundle, a store's metadata, a
temporary a live lease carries or a lease that is not stealable. :func:`apply_gc` checks each
item again at removal time (a writer may have renewed or published meanwhile), removes leases
by the steal protocol (:func:`~vqacache.cache_spec.lease.remove_if_expired`), moves record
groups aside (``.old-``, which readers skip) before deleting them, and reports the bytes freed.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vqacache.cache_spec import layout
from vqacache.cache_spec.errors import StoreError
from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.lease import (
    DEFAULT_GRACE_S, LEASE_DIR_SUFFIX, active_leases, is_expired, lease_dir, read_lease_file, remove_if_expired,
)
from vqacache.cache_spec.publish import OLD_PREFIX, TOKEN_CHARS, is_temporary, remove_tree, temp_token
from vqacache.cache_spec.run_logs import RUNS
from vqacache.cache_spec.store import FeatureStore, open_store

KINDS = ("temporary", "lease", "lease-leftover", "failure", "run-log")
_LEASE_LEFTOVER = (".renew-", ".released-", ".stale-", ".broken-", ".steal-")


@dataclass(frozen=True)
class GcItem:
    """One removable thing: ``kind`` (see :data:`KINDS`), where, its size and why."""

    kind: str
    path: Path
    bytes: int
    reason: str
    store: Path


@dataclass
class GcPlan:
    root: Path
    items: list[GcItem] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Things looked at and kept on purpose (a temporary a live lease holds), for the listing."""

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)


@dataclass
class GcResult:
    removed: list[GcItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Items left after all: changed since planning (renewed, published) or not ours to remove."""
    bytes_freed: int = 0


def find_stores(root: Path) -> list[Path]:
    """``root`` itself when it is a store, else the stores ``<root>/<dataset>/<name>.zarr``."""
    if (root / "zarr.json").is_file():
        return [root]
    if not root.is_dir():
        raise StoreError(f"{root} is neither a store nor a cache root folder")
    return sorted(p for p in root.glob("*/*.zarr") if (p / "zarr.json").is_file() and not is_temporary(p.name))


def plan_gc(root: str | Path, *, min_age_s: float = 600.0, run_log_days: float = 90.0,
            grace_s: float = DEFAULT_GRACE_S) -> GcPlan:
    """List what :func:`apply_gc` would remove (a dry run; nothing is changed)."""
    root = Path(root)
    plan = GcPlan(root)
    now = time.time()
    stores = find_stores(root)
    for path in stores:
        try:
            store = open_store(path)
        except StoreError as exc:  # a damaged store is verify's business; gc leaves it alone
            plan.kept.append(f"{path}: not examined ({exc})")
            continue
        held = _held_tokens(path, grace_s)
        for tmp in store.temporaries():
            _temporary(plan, store.path, tmp, held, now, min_age_s)
        _leases(plan, path, now, min_age_s, grace_s)
        _failures(plan, store)
        _run_logs(plan, store, now - run_log_days * 86400.0)
    if not (root / "zarr.json").is_file():  # a cache root: stores being created or imported
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for tmp in sorted(folder.glob(".*.zarr.tmp-*")):
                _temporary(plan, tmp, tmp, set(), now, min_age_s)
    return plan


def apply_gc(plan: GcPlan, *, min_age_s: float = 600.0, grace_s: float = DEFAULT_GRACE_S) -> GcResult:
    """Remove the items of ``plan``, each checked again first (see the module docstring)."""
    result = GcResult()
    for item in plan.items:
        try:
            done = _remove(item, min_age_s, grace_s)
        except PermissionError as exc:
            result.skipped.append(f"{item.path}: {permission_message(Path(exc.filename or item.path))}")
            continue
        if done:
            result.removed.append(item)
            result.bytes_freed += item.bytes
        else:
            result.skipped.append(f"{item.path}: changed since it was listed; kept")
    return result


def permission_message(path: Path) -> str:
    """``permission denied on PATH (owner alice, group lab, mode drwxr-xr-x)``."""
    from vqacache.cache_spec.permissions import describe_owner

    return f"permission denied on {path} ({describe_owner(path)})"


# -- planning -------------------------------------------------------------------------------


def _held_tokens(store_path: Path, grace_s: float) -> set[str]:
    return {str(r.get("token", ""))[:TOKEN_CHARS]
            for kind in ("video", "imageqa") for r in active_leases(store_path, grace_s=grace_s, kind=kind).values()}


def _temporary(plan: GcPlan, store: Path, tmp: Path, held: set[str], now: float, min_age_s: float) -> None:
    if temp_token(tmp.name) in held:
        plan.kept.append(f"{tmp}: held by a live lease")
        return
    newest = _newest_mtime(tmp)
    if newest is None:
        return
    if now - newest < min_age_s:
        plan.kept.append(f"{tmp}: touched {now - newest:.0f}s ago (under --min-age)")
        return
    plan.items.append(GcItem("temporary", tmp, _size(tmp), f"abandoned: untouched for {now - newest:.0f}s, no live lease", store))


def _leases(plan: GcPlan, store: Path, now: float, min_age_s: float, grace_s: float) -> None:
    for folder in (lease_dir(store), lease_dir(store) / "imageqa"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                continue
            if not path.name.startswith("."):
                record = read_lease_file(path)
                if record is not None and is_expired(record, grace_s, min_age_s):
                    who = "a torn lease file" if record.get("unreadable") else f"{record.get('owner')} on {record.get('host')}"
                    plan.items.append(GcItem("lease", path, _size(path), f"expired lease of {who}", store))
            elif any(mark in path.name for mark in _LEASE_LEFTOVER) or path.name.endswith(".tmp"):
                age = _age(path, now)
                if age is not None and age >= min_age_s:
                    plan.items.append(GcItem("lease-leftover", path, _size(path), f"left by a lease operation {age:.0f}s ago", store))


def _failures(plan: GcPlan, store: FeatureStore) -> None:
    complete = set(store.complete_videos())
    for video_id in sorted(set(store.failures()) & complete):
        path = store.path / layout.FAILURES / id_to_key(video_id)
        plan.items.append(GcItem("failure", path, _size(path), f"video {video_id!r} has been completed since", store.path))


def _run_logs(plan: GcPlan, store: FeatureStore, cutoff: float) -> None:
    folder = store.path / RUNS
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or is_temporary(path.name):
            continue
        try:
            group = store.root[f"{RUNS}/{path.name}"]
            finished = _timestamp(group.attrs.get("finished")) or path.stat().st_mtime
        except (KeyError, OSError):
            continue
        if finished < cutoff:
            day = _dt.datetime.fromtimestamp(finished, _dt.timezone.utc).date()
            plan.items.append(GcItem("run-log", path, _size(path), f"run finished {day}", store.path))


# -- removal --------------------------------------------------------------------------------


def _remove(item: GcItem, min_age_s: float, grace_s: float) -> bool:
    if item.kind == "lease":
        return remove_if_expired(item.path, grace_s, min_age_s)
    if item.kind == "lease-leftover":
        if not item.path.exists():
            return False
        item.path.unlink()
        return True
    if item.kind == "temporary":
        held = _held_tokens(item.store, grace_s) if (item.store / "zarr.json").is_file() and item.store != item.path else set()
        newest = _newest_mtime(item.path)
        if newest is None or temp_token(item.path.name) in held or time.time() - newest < min_age_s:
            return False
        remove_tree(item.path)
        return not item.path.exists()
    # failure, run-log: move aside first (readers skip ``.old-``), then delete
    if not item.path.is_dir():
        return False
    aside = item.path.with_name(f"{OLD_PREFIX}{uuid.uuid4().hex[:TOKEN_CHARS]}-{item.path.name}")
    os.rename(item.path, aside)
    remove_tree(aside)
    return True


def _walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        yield from path.rglob("*")


def _newest_mtime(path: Path) -> float | None:
    try:
        return max(p.lstat().st_mtime for p in _walk(path))
    except (FileNotFoundError, ValueError):
        return None


def _age(path: Path, now: float) -> float | None:
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return None


def _size(path: Path) -> int:
    total = 0
    for p in _walk(path):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp.timestamp()


__all__ = ["KINDS", "LEASE_DIR_SUFFIX", "GcItem", "GcPlan", "GcResult", "apply_gc", "find_stores", "plan_gc"]
