"""A Dask worker preload for tests: the worker process dies (``os._exit``) when it starts
writing the video named by ``$VQACACHE_TEST_KILL_WORKER_ON``, as a segfault in an encoder or a
native library would kill it. Used with ``distributed.worker.preload``."""

from __future__ import annotations

import os


def dask_setup(worker) -> None:  # noqa: ANN001 - distributed's Worker
    poison = os.environ.get("VQACACHE_TEST_KILL_WORKER_ON")
    if not poison:
        return
    from vqacache.cache_spec.store import FeatureStore

    begin_video = FeatureStore.begin_video

    def write_or_die(self, video_id, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if video_id == poison:
            os._exit(1)
        return begin_video(self, video_id, *args, **kwargs)

    FeatureStore.begin_video = write_or_die
