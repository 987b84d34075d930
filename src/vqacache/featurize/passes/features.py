"""Pass 1: every video still to do, decoded once, encoded by each encoder, written to each store.

The videos are cut into shards, one task each (:func:`vqacache.featurize.shard.run_shard`).
A task that kills its worker is not retried as a whole: its videos that are not complete are
resubmitted one per task, so the one video that kills a worker again is recorded as
``crashed`` and everything else is done. Under ``--cluster slurm|...`` a worker lost with its
batch job is not the video's fault: its videos are retried as long as jobs are lost under them
(the job retry budget bounds that, see :mod:`vqacache.featurize.cluster`).
"""

from __future__ import annotations

from vqacache.cache_spec import FeatureStore
from vqacache.featurize.config import shard_size
from vqacache.featurize.datasets import VideoRecord
from vqacache.featurize.passes.context import RunContext
from vqacache.featurize.progress import VideoProgress
from vqacache.featurize.result import FeaturizeResult
from vqacache.featurize.shard import DecodeArgs, ShardResult, ShardTask, Target, run_shard


class Needed:
    """Whether a store still needs a video: not complete, and not failed (unless retrying)."""

    def __init__(self, store: FeatureStore, retry_failed: bool) -> None:
        self.complete = set(store.complete_videos())
        self.failed = set() if retry_failed else set(store.failures())

    def needs(self, video_id: str) -> bool:
        return video_id not in self.complete and video_id not in self.failed


def features_pass(ctx: RunContext, stores: list[FeatureStore], targets: tuple[Target, ...], decode: DecodeArgs,
                  videos: list[VideoRecord]) -> None:
    """Featurize the ``videos`` some store of ``stores`` (one per target) still needs; counts go
    to ``ctx.result`` (videos done, skipped, failed, lost; frames; stage timings)."""
    config, runner, result = ctx.config, ctx.runner, ctx.result
    needed = [Needed(s, config.retry_failed) for s in stores]
    todo = [v for v in videos if any(n.needs(v.video_id) for n in needed)]
    result.skipped = len(videos) - len(todo)
    progress = VideoProgress(ctx.reporter)

    def task(shard: list[VideoRecord]) -> ShardTask:
        return ShardTask(
            targets=targets, decode=decode, videos=tuple((v.video_id, str(v.path)) for v in shard),
            batch_size=config.batch_size, owner=ctx.run_id, retry_failed=config.retry_failed,
            lease_ttl_s=config.lease_ttl_s, progress_topic=runner.progress_topic,
        )

    size = shard_size(config, len(todo), runner.workers)
    shards = [todo[i : i + size] for i in range(0, len(todo), size)]
    ctx.reporter.start(len(todo), f"{ctx.dataset.name} / {' + '.join(s.spec.encoder for s in stores)}")
    crashed: list[list[VideoRecord]] = []
    for shard, outcome in runner.map(run_shard, [(s, task(s)) for s in shards], on_video=progress.video):
        if isinstance(outcome, ShardResult):
            result.add(outcome)
            progress.videos(shard, outcome.done, outcome.failed)
        elif len(shard) > 1 or runner.died_with_job(outcome):
            # a worker died (or its batch job was lost): retry its unfinished videos one per task
            unfinished = [v for v in shard if not _complete(stores, v)]
            for v in unfinished:  # the dead worker's leases (this run's) would block the retry
                _break_leases(stores, v, ctx.run_id)
            crashed += [[v] for v in unfinished]
            done = [v for v in shard if v not in unfinished]
            result.done += len(done)
            result.frames += sum(_frames(stores, v) for v in done)
            progress.videos(done)
        else:
            _record_crash(stores, shard[0], outcome, result, progress, ctx.run_id)
    while crashed:  # again while batch jobs are lost under them (--cluster slurm|...)
        retry, crashed = crashed, []
        for shard, outcome in runner.map(run_shard, [(s, task(s)) for s in retry], on_video=progress.video):
            if isinstance(outcome, ShardResult):
                result.add(outcome)
                progress.videos(shard, outcome.done, outcome.failed)
            elif runner.died_with_job(outcome):
                _break_leases(stores, shard[0], ctx.run_id)
                crashed.append(shard)
            else:
                _record_crash(stores, shard[0], outcome, result, progress, ctx.run_id)
    ctx.reporter.finish()


def _complete(stores: list[FeatureStore], video: VideoRecord) -> bool:
    return all(s.is_complete(video.video_id) for s in stores)


def _frames(stores: list[FeatureStore], video: VideoRecord) -> int:
    return stores[0].video_arrays(video.video_id)["pts"].shape[0]


def _break_leases(stores: list[FeatureStore], video: VideoRecord, run_id: str) -> None:
    for store in stores:
        store.break_lease(video.video_id, run_id)  # its holder (this run's) died with the worker


def _record_crash(stores: list[FeatureStore], video: VideoRecord, error: BaseException, result: FeaturizeResult,
                  progress: VideoProgress, run_id: str) -> None:
    """A single-video task killed its worker: ``crashed`` in every store that lacks the video
    (a worker that died after publishing everywhere counts the video as done)."""
    _break_leases(stores, video, run_id)
    incomplete = [s for s in stores if not s.is_complete(video.video_id)]
    if not incomplete:
        result.done += 1
        frames = _frames(stores, video)
        result.frames += frames
        progress.video(video.video_id, frames, None)
        return
    message = f"the worker process died while featurizing it ({type(error).__name__}: {error})"
    for store in incomplete:
        store.record_failure(video.video_id, "crashed", message)
    result.failed += 1
    result.failures[video.video_id] = f"crashed: {message}"
    progress.video(video.video_id, 0, f"crashed: {message}")
