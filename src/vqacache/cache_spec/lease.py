"""Leases: which process is working on which video, across processes and machines.

Two featurize runs (or two Dask clusters on machines sharing an NFS/Lustre filesystem) may
work on the same store at once. Before decoding a video a process *claims* it; the claim is
a small JSON file that expires ``ttl_s`` seconds after its last renewal, so the claim of a
process that died is taken over by the next one that asks.

Where: ``<store>.leases/<key>.json`` beside the store, ``<key>`` from
:func:`~vqacache.cache_spec.keys.id_to_key`. Not inside the store: zarr lists every entry
of a group's directory as a possible member and warns about anything that is not a zarr
node, so a lease folder inside the store would disturb plain zarr readers.

Every step uses only operations that are atomic on local filesystems and on NFS (v3 and
later):

- *claim*: the lease is written in full to a private temporary file and published with
  ``os.link`` (fails if the name exists);
- *steal* an expired lease: first take a ticket named after that lease's token
  (``O_CREAT | O_EXCL``), so only one process at a time may steal that lease; re-read the
  lease; move it away with ``os.rename``; re-check what was moved (put it back if it is not
  expired after all); publish the new lease with ``os.link`` as in a claim;
- *renew*: ``os.rename`` the lease to a private name, check its token is ours, publish the
  renewed record with ``os.link`` as in a claim (never overwriting another holder's lease);
- *release*: check the token, ``os.rename`` away, check again, delete.

Expiry is wall-clock time (``time.time()``) written by the holder and compared by others on
their own clocks, so clocks must agree to well within ``grace_s`` (NTP does this). A holder
treats its lease as lost once its own clock passes ``expires``; others may steal it only
``grace_s`` later.

A holder known to be dead does not have to be waited out: a lease written on this host by a
process that no longer exists (killed with SIGKILL, OOM-killed, crashed) counts as expired at
once (:func:`_holder_dead`), so rerunning after a kill redoes the killed run's videos straight
away. On other hosts, and when the pid has been reused, the lease expires as usual. (Two
containers that share a hostname but not a pid namespace could take a live holder for dead;
that holder then loses its lease and gives up at its final check, so work is repeated, never
mixed.)

A lease is advisory: it tells a live holder from a dead or stalled one, and the store's
publish-by-rename (``cache_spec/video_writer.py``) makes it safe when it is wrong. A holder
renews from a background thread (:class:`~vqacache.cache_spec.heartbeat.Heartbeat`, :meth:`Lease.keep_alive`), independent of
how long its work between two checks takes, so a live holder never loses a lease of a few
seconds; a stalled (SIGSTOP, paused job) or dead one loses it ``ttl_s + grace_s`` after its last
renewal. Writers check their lease once more just before publishing a video; should a stalled
writer resume between that check and its rename, the rename itself decides: one group wins,
the other writer's temporary is removed. On NFS choose ``ttl_s`` larger than the attribute
cache time (60 s by default).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import VqaCacheError
from vqacache.cache_spec.keys import id_to_key

LEASE_DIR_SUFFIX = ".leases"
DEFAULT_GRACE_S = 5.0
"""Seconds past its expiry before another process may steal a lease (clock-skew allowance)."""
TICKET_STALE_S = 30.0
"""A steal ticket older than this was left by a process that died mid-steal; it is removed."""

_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


class LeaseLost(VqaCacheError, RuntimeError):
    """This process's lease on a video was taken over by another process (it expired)."""


def lease_dir(store_path: str | Path) -> Path:
    """``<store>.leases``: the folder holding a store's lease files (a sibling of the store)."""
    path = Path(store_path)
    return path.with_name(path.name + LEASE_DIR_SUFFIX)


LEASE_KINDS = ("video", "imageqa")
"""What a lease claims: a video's frame features, or its questions' image-QA probabilities
(in a subfolder of its own, so the two never block each other)."""


def lease_path(store_path: str | Path, video_id: str, kind: str = "video") -> Path:
    if kind not in LEASE_KINDS:
        raise ValueError(f"lease kind must be one of {LEASE_KINDS}, got {kind!r}")
    folder = lease_dir(store_path) if kind == "video" else lease_dir(store_path) / kind
    return folder / f"{id_to_key(video_id)}.json"


class Lease:
    """A claim on one video, held by this process until released or expired.

    Obtain one with :func:`try_claim`. ``lost`` becomes True once a renewal finds that the
    lease expired or that another process took the video over: the holder must then stop
    (and never mark the video complete).
    """

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record
        self.lost = False
        self.released = False
        self._taken_over = False
        self._lock = threading.Lock()

    @property
    def video_id(self) -> str:
        return self.record["video_id"]

    @property
    def owner(self) -> str:
        return self.record["owner"]

    @property
    def token(self) -> str:
        """Unique per claim: tells this claim's file from any later one."""
        return self.record["token"]

    @property
    def ttl_s(self) -> float:
        return self.record["ttl_s"]

    @property
    def expires(self) -> float:
        """Wall-clock time (``time.time()``) at which the lease expires unless renewed."""
        return self.record["expires"]

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else f"{self.remaining():.1f}s left"
        return f"Lease({self.video_id!r}, owner={self.owner!r}, {state})"

    def remaining(self) -> float:
        """Seconds until this lease expires (negative once expired)."""
        return self.expires - time.time()

    def renew(self, ttl_s: float | None = None) -> None:
        """Extend the lease to ``ttl_s`` (default: its own ttl) from now.

        Raises :class:`LeaseLost` (and sets ``lost``) when the lease already expired (another
        process may be stealing it right now) or another process holds it.

        Compare-and-swap by rename, so a renewal can never overwrite another holder's lease,
        however long this process stalls in the middle: the lease file is first renamed to a
        private name (atomic: of several processes moving it, one wins), checked to be ours,
        and the renewed record is then published under the lease's name with an exclusive
        ``link`` (which fails if a claimant took the free name meanwhile: the lease is lost,
        and work is repeated, never mixed).
        """
        with self._lock:
            if self.lost or self.released:
                raise LeaseLost(f"lease on {self.video_id!r} was {'lost' if self.lost else 'released'}")
            current = _read(self.path)
            if current is None or current.get("token") != self.token:
                self._lose(current)
            if time.time() > self.expires:
                self.lost = True
                raise LeaseLost(f"lease on {self.video_id!r} expired {-self.remaining():.1f}s before its renewal")
            moved = self.path.with_name(f".{self.path.name}.renew-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, moved)
            except FileNotFoundError:
                self._lose(None)
            current = _read(moved)
            if current is None or current.get("token") != self.token:
                _restore(moved, self.path)  # not ours: put the holder's lease back
                self._lose(current)
            now = time.time()
            ttl = self.ttl_s if ttl_s is None else float(ttl_s)
            record = {**self.record, "ttl_s": ttl, "renewed": now, "expires": now + ttl}
            published = _publish(self.path, record)
            _unlink(moved)
            if not published:  # a claimant took the name while it was free
                self._lose(_read(self.path))
            self.record = record

    def _lose(self, holder_record: dict[str, Any] | None) -> None:
        self.lost = self._taken_over = True
        holder = "nobody" if holder_record is None else f"{holder_record.get('owner')} on {holder_record.get('host')}"
        raise LeaseLost(f"lease on {self.video_id!r} was taken over (now held by {holder})")

    def renew_if_due(self) -> None:
        """Renew when a third of the ttl has passed since the last renewal (cheap to call often)."""
        if self.remaining() < self.ttl_s * 2 / 3:
            self.renew()

    def release(self) -> bool:
        """Give the video up (also after ``lost``, if the file is still ours). Returns whether
        this call removed our lease; False (and ``lost``) if another process holds it now."""
        with self._lock:
            if self.released or self._taken_over:
                return False
            self.released = True
            current = _read(self.path)
            if current is None or current.get("token") != self.token:
                self.lost = self._taken_over = True
                return False
            moved = self.path.with_name(f".{self.path.name}.released-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, moved)
            except FileNotFoundError:
                self.lost = self._taken_over = True
                return False
            record = _read(moved)
            if record is not None and record.get("token") == self.token:
                _unlink(moved)
                return True
            self.lost = self._taken_over = True  # stolen just now: put the thief's lease back
            _restore(moved, self.path)
            return False

    @contextmanager
    def keep_alive(self, interval_s: float | None = None) -> Iterator[Lease]:
        """Renew from a background thread every ``interval_s`` (default ttl/3) inside the block.

        A failed renewal sets ``lost``; check it (or rely on the final check of
        ``write_video(..., lease=...)``) before publishing anything.
        """
        interval = self.ttl_s / 3 if interval_s is None else interval_s
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self.renew()
                except LeaseLost:
                    return  # renew() set ``lost``
                except OSError:
                    continue  # a transient filesystem error: try again next time

        thread = threading.Thread(target=beat, name=f"lease-{self.video_id}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_claim(
    store_path: str | Path, video_id: str, owner: str, ttl_s: float, *, grace_s: float = DEFAULT_GRACE_S,
    kind: str = "video",
) -> Lease | None:
    """Claim ``video_id`` for ``owner`` for ``ttl_s`` seconds; None if someone else holds it.

    A lease whose expiry passed more than ``grace_s`` seconds ago is stolen; when several
    processes try to steal the same lease at once exactly one succeeds (the others get
    None). Claiming a video says nothing about whether it is complete: check the store after
    claiming.
    """
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    path = lease_path(store_path, video_id, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    record = {
        "video_id": video_id,
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "claimed": now,
        "renewed": now,
        "ttl_s": float(ttl_s),
        "expires": now + ttl_s,
    }
    if _publish(path, record):
        return Lease(path, record)
    if not _steal_if_expired(path, ttl_s, grace_s):
        return None
    now = time.time()
    record.update(claimed=now, renewed=now, expires=now + ttl_s)
    return Lease(path, record) if _publish(path, record) else None


def break_lease(store_path: str | Path, video_id: str, owner: str, kind: str = "video") -> bool:
    """Remove ``owner``'s lease on ``video_id`` on behalf of a holder known to be dead.

    For a run whose worker process died (Dask's ``KilledWorker``): the run retries that
    worker's videos at once instead of waiting out their leases. A lease of any other owner
    is left alone (returns False). If the holder was not dead after all, its final lease
    check before publishing (``write_video(..., lease=...)``) fails and it gives up.
    """
    path = lease_path(store_path, video_id, kind)
    current = _read(path)
    if current is None or current.get("owner") != owner:
        return False
    moved = path.with_name(f".{path.name}.broken-{uuid.uuid4().hex}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return False
    record = _read(moved)
    if record is not None and record.get("owner") == owner:
        _unlink(moved)
        return True
    _restore(moved, path)  # replaced by another owner's lease in between: put it back
    return False


def read_lease(store_path: str | Path, video_id: str) -> dict[str, Any] | None:
    """The current lease record of ``video_id`` (possibly expired), or None."""
    return _read(lease_path(store_path, video_id))


def active_leases(
    store_path: str | Path, *, grace_s: float = DEFAULT_GRACE_S, kind: str = "video"
) -> dict[str, dict[str, Any]]:
    """``{video_id: record}`` of every lease of ``kind`` not yet stealable."""
    folder = lease_path(store_path, "x", kind).parent
    if not folder.is_dir():
        return {}
    now = time.time()
    active = {}
    for path in folder.glob("*.json"):
        if path.name.startswith("."):
            continue
        record = _read(path)
        if record is not None and now <= record.get("expires", 0) + grace_s:
            active[record.get("video_id") or path.stem] = record
    return active


def remove_if_expired(path: Path, grace_s: float = DEFAULT_GRACE_S, unreadable_ttl_s: float = 600.0) -> bool:
    """Remove the lease file at ``path`` if it is stealable (``vqa-cache gc``), by the steal
    protocol: a live holder's lease, or one renewed meanwhile, is never removed. A torn file
    counts as expired ``unreadable_ttl_s`` after its modification. True when removed."""
    record = _read(path)
    if record is None:
        return False
    ttl = unreadable_ttl_s if record.get("unreadable") else float(record.get("ttl_s", 0.0))
    return _steal_if_expired(path, ttl, grace_s)


def is_expired(record: dict[str, Any], grace_s: float = DEFAULT_GRACE_S, unreadable_ttl_s: float = 600.0) -> bool:
    """Whether a lease record (from :func:`read_lease_file`) could be stolen now."""
    ttl = unreadable_ttl_s if record.get("unreadable") else float(record.get("ttl_s", 0.0))
    return _expired(record, ttl, grace_s)


def read_lease_file(path: Path) -> dict[str, Any] | None:
    """The lease record at ``path`` (None if absent; ``{"unreadable": True, ...}`` if torn)."""
    return _read(path)


# -- file operations ---------------------------------------------------------------------


def _write_file(path: Path, record: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> dict[str, Any] | None:
    """The lease at ``path``; None if absent. A file that is not a valid lease (torn by a
    crash) expires ``ttl_s`` after its modification time: see :func:`_expired`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = json.loads(text)
        if isinstance(record, dict) and isinstance(record.get("expires"), (int, float)):
            return record
    except ValueError:
        pass
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return {"unreadable": True, "mtime": st.st_mtime, "identity": f"x{st.st_ino}-{st.st_mtime_ns}"}


def _identity(record: dict[str, Any]) -> str:
    """What tells this lease from any other one under the same name."""
    return str(record.get("token") or record.get("identity"))


def _expired(record: dict[str, Any], ttl_s: float, grace_s: float) -> bool:
    """Stealable: past its expiry (plus ``grace_s``), or its holder is dead."""
    expires = record["mtime"] + ttl_s if record.get("unreadable") else record["expires"]
    return time.time() > expires + grace_s or _holder_dead(record)


def _holder_dead(record: dict[str, Any]) -> bool:
    """The lease was written on this host by a process that no longer exists."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def _publish(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` holding ``record`` unless it exists; True if this call created it.

    The content is complete before the name appears (written to a private file, then
    hard-linked). Where hard links are unsupported, falls back to ``O_CREAT | O_EXCL``.
    """
    tmp = path.with_name(f".{path.name}.{record['token']}.tmp")
    _write_file(tmp, record)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _NO_LINKS:
            return _create_exclusive(path, record)
        # NFS may report failure for a link that succeeded (lost reply): check the link count
        if os.stat(tmp).st_nlink == 2:
            return True
        raise
    finally:
        _unlink(tmp)


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask decides (group-writable roots)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _steal_if_expired(path: Path, ttl_s: float, grace_s: float) -> bool:
    """Remove the lease at ``path`` if it is expired. True when this process removed it (it
    then re-creates the name with :func:`_publish`, which still decides against a claimant
    arriving at that moment); False when the lease is live or another process got there first."""
    record = _read(path)
    if record is None or not _expired(record, ttl_s, grace_s):
        return False  # absent: released meanwhile, or being stolen by another process
    ticket = _take_ticket(path, _identity(record))
    if ticket is None:
        return False  # another process is stealing this very lease
    stolen = False
    try:
        # Holding the ticket, only this process may move this lease (same token). Re-read:
        # our first read may predate its theft and the publication of a new lease.
        again = _read(path)
        if again is None or _identity(again) != _identity(record) or not _expired(again, ttl_s, grace_s):
            return False
        moved = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return False  # released by its late holder meanwhile
        moved_record = _read(moved)
        if moved_record is None or _expired(moved_record, ttl_s, grace_s):
            _unlink(moved)
            stolen = True
            return True
        _restore(moved, path)  # renewed in the last instant by its holder: give it back
        return False
    finally:
        _unlink(ticket)
        if stolen:  # that lease is gone for good: its older, stale tickets are garbage now
            for old in path.parent.glob(f".{glob_escape(path.name)}.steal-{_identity(record)}*"):
                _unlink(old)


def _take_ticket(path: Path, identity: str) -> Path | None:
    """Take the right to steal the lease ``identity`` at ``path``; the ticket's path, or None.

    Tickets are created exclusively (``O_CREAT | O_EXCL``) under the names
    ``.<lease>.steal-<identity>``, then ``...-<identity>.1``, ``.2``, ...: a ticket older than
    :data:`TICKET_STALE_S` was left by a stealer that died mid-steal, and the next one is
    tried instead. Stale tickets are never deleted here (deleting one could delete the fresh
    ticket another stealer just created under that name): of two stealers who both find
    ticket n stale, exactly one creates ticket n+1.
    """
    record = {"host": socket.gethostname(), "pid": os.getpid()}
    base = path.with_name(f".{path.name}.steal-{identity}")
    for generation in range(1000):
        ticket = base if generation == 0 else base.with_name(f"{base.name}.{generation}")
        if _create_exclusive(ticket, record):
            return ticket
        try:
            age = time.time() - ticket.stat().st_mtime
        except FileNotFoundError:
            return None  # its holder finished just now
        if age <= TICKET_STALE_S:
            return None
    return None


def _restore(moved: Path, path: Path) -> None:
    """Put a lease moved away by mistake back under its name (unless the name was re-taken)."""
    try:
        os.link(moved, path)
    except FileExistsError:
        pass  # a third process claimed the free name; the original holder's next renew reports the loss
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        record = _read(moved)
        if record is not None and not record.get("unreadable"):
            _create_exclusive(path, record)
    _unlink(moved)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
