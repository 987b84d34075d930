"""One thread that keeps a changing set of leases alive (see :mod:`vqacache.cache_spec.lease`)."""

from __future__ import annotations

import threading

from vqacache.cache_spec.lease import Lease, LeaseLost


class Heartbeat:
    """Renews every lease it holds from one background thread, so renewals never wait for
    the work between two checks (an encoder batch, a slow write).

    ``with Heartbeat() as beat: beat.add(lease) ... beat.discard(lease)``. A lease is renewed
    once a third of its ttl has passed; the thread wakes every sixth of the shortest ttl. A
    renewal that finds the lease taken over sets ``lease.lost`` (the holder drops the video); a
    transient filesystem error is retried at the next beat.
    """

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases[id(lease)] = lease

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(id(lease), None)

    def _interval(self) -> float:
        with self._lock:
            ttls = [lease.ttl_s for lease in self._leases.values()]
        return min(ttls, default=6.0) / 6

    def _beat(self) -> None:
        while not self._stop.wait(self._interval()):
            with self._lock:
                leases = list(self._leases.values())
            for lease in leases:
                if lease.lost or lease.released:
                    continue
                try:
                    lease.renew_if_due()
                except LeaseLost:
                    continue  # renew() set ``lost``
                except OSError:
                    continue  # transient: next beat

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
