"""Where a featurize run's tasks execute: :class:`InlineRunner` (this process, ``--workers 0``)
or :class:`DaskRunner` (a Dask cluster: local, an existing scheduler, or batch jobs).

Both satisfy :class:`Runner`; the passes (:mod:`vqacache.featurize.passes`) only see that.
``map`` yields ``(key, outcome)`` pairs as tasks complete, where ``outcome`` is the task's
return value, or the :class:`BaseException` that killed its worker (a ``KilledWorker``):
any other task error propagates.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from vqacache.cache_spec import StoreError
from vqacache.featurize.shard import VideoCallback

K = TypeVar("K")
T = TypeVar("T")


class Runner(Protocol):
    workers: int
    """Workers there are now (at least 1): sizes the tasks."""
    dashboard: str | None
    progress_topic: str | None
    """The Dask event topic tasks send per-video progress to (None: the callback is called directly)."""

    def died_with_job(self, error: BaseException) -> bool:
        """Whether a worker death means its batch job was lost (retry its videos, not "crashed")."""
        ...

    def setup(self, fn: Callable[..., T], *args: Any) -> T: ...

    def map(self, fn: Callable[..., T], items: Iterable[tuple[K, Any]],
            on_video: VideoCallback | None = None) -> Iterator[tuple[K, T | BaseException]]: ...


def never(error: BaseException) -> bool:
    return False


class InlineRunner:
    """Runs tasks in this process, one after the other (``--workers 0``)."""

    workers = 1
    dashboard = None
    progress_topic = None
    died_with_job = staticmethod(never)

    def setup(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def map(self, fn: Callable[..., T], items: Iterable[tuple[K, Any]],
            on_video: VideoCallback | None = None) -> Iterator[tuple[K, T | BaseException]]:
        """``fn(item)`` for each item; ``fn(item, on_video)`` when a per-video callback is given."""
        for key, item in items:
            yield key, (fn(item) if on_video is None else fn(item, on_video))


class DaskRunner:
    """Submits tasks to a Dask cluster; yields (key, result or the task's worker death) as they complete."""

    def __init__(self, client: Any, died_with_job: Callable[[BaseException], bool] = never) -> None:
        self.client = client
        self.died_with_job = died_with_job
        """Whether a task's error means its worker's batch job was lost (``--cluster slurm|...``):
        its videos are then retried, not recorded as crashed."""
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.dashboard = client.dashboard_link
        self.progress_topic = f"vqacache-progress-{uuid.uuid4().hex[:8]}"

    def setup(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` once on every worker there is now, at the same time (each worker's
        one-off start-up), and return its result, which must be the same everywhere: workers
        that would produce another spec are refused before any video is touched. Workers that
        join later do the same on their first shard (``run_shard`` checks the spec)."""
        workers = list(self.client.scheduler_info().get("workers", {})) or [None]
        futures = [self.client.submit(fn, *args, pure=False, workers=None if w is None else [w],
                                      allow_other_workers=w is None) for w in workers]
        results = self.client.gather(futures)
        if len(set(results)) > 1:
            raise StoreError(
                "the Dask workers produce different specs (different weights or library versions?); "
                "featurize with workers that agree, or one at a time"
            )
        return results[0]

    @contextlib.contextmanager
    def _events(self, on_video: VideoCallback | None) -> Iterator[None]:
        """Per-video progress events from the workers (see ``run_shard``) while the block runs;
        ``on_video`` is called on the client's event-loop thread."""
        if on_video is None:
            yield
            return

        def handler(event: tuple[float, dict[str, Any]]) -> None:  # (timestamp, message)
            message = event[1]
            on_video(message["video"], message["frames"], message["failure"])

        self.client.subscribe_topic(self.progress_topic, handler)
        try:
            yield
        finally:
            self.client.unsubscribe_topic(self.progress_topic)

    def map(self, fn: Callable[..., T], items: Iterable[tuple[K, Any]],
            on_video: VideoCallback | None = None) -> Iterator[tuple[K, T | BaseException]]:
        """Submit ``fn(item)`` for each item; yield (key, result or worker death) as they complete.
        ``on_video`` gets the tasks' per-video events (``ShardTask.progress_topic``)."""
        from distributed import as_completed

        with self._events(on_video):
            futures = {}
            for key, item in items:
                futures[self.client.submit(fn, item, pure=False)] = key
            for future in as_completed(futures):
                key = futures.pop(future)
                if future.status == "error":
                    error = future.exception()
                    if not is_worker_death(error):
                        raise error
                    yield key, error
                else:
                    yield key, future.result()
                future.release()


def is_worker_death(error: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)
