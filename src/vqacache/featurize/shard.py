"""One task's work: featurize a shard of videos into a store, in whatever process runs it.

A Dask worker (or the calling process, with ``--workers 0``) runs :func:`run_shard`. The
encoder and the decode pool are built once per process and kept (:func:`cached_encoder`),
not once per task. Each video is claimed with a lease first, so two runs on one store never
featurize the same video at once; it is written by this process and only small metadata is
returned, so no feature tensor travels through the scheduler.
"""

from __future__ import annotations

import atexit
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec import FeatureSpec, FeatureStore, SamplingSpec, StoreError, open_store, with_patch_fps
from vqacache.cache_spec.heartbeat import Heartbeat
from vqacache.cache_spec.lease import DEFAULT_GRACE_S, Lease, LeaseLost
from vqacache.cache_spec.video_writer import VideoWriter
from vqacache.featurize.batcher import FrameBatcher
from vqacache.featurize.datasets import QuestionRecord
from vqacache.featurize.decode import DecodeError
from vqacache.featurize.decode.pool import DecodePool
from vqacache.featurize.encoders import Encoder, get_encoder
from vqacache.featurize.text_features import write_question_bundles


@dataclass(frozen=True)
class EncoderArgs:
    """How to build the encoder; identical args give the identical spec in every process."""

    name: str
    weights: str | None
    device: str = "cpu"
    patches: bool = True
    patch_pool: int = 1
    decode_short_side: int | None = 256
    compute_dtype: str = "float32"
    patch_fps: str | None = None
    """Patch tokens only on the frames nearest ``j / patch_fps`` (``--patch-fps``; None: every
    frame). Not an encoder setting: it goes into the spec's ``outputs.patch_fps``, and the
    store's video writer keeps those rows (:mod:`vqacache.cache_spec.patch_frames`)."""


@dataclass(frozen=True)
class DecodeArgs:
    """How this process's decode pool decodes (see :class:`DecodePool`)."""

    fps: str
    short_side: int | None = 256
    processes: int = 1
    timeout_s: float = 300.0
    frames_fps: str | None = None
    """Source frame rate of the run's folders of frames (``"3"``, ``"30000/1001"``); None
    when every video is a file."""


@dataclass(frozen=True)
class Target:
    """One encoder and the store it writes (``--encoder a,b,c`` gives a shard several)."""

    store_path: str
    fingerprint: str
    encoder: EncoderArgs


@dataclass(frozen=True)
class ShardTask:
    targets: tuple[Target, ...]
    """Every video is decoded once and fed to each target's encoder that still needs it."""
    decode: DecodeArgs
    videos: tuple[tuple[str, str], ...]
    """(video_id, path) pairs."""
    batch_size: int | None
    owner: str
    """Identifies this run in leases and logs."""
    retry_failed: bool = False
    lease_ttl_s: float = 600.0
    progress_topic: str | None = None
    """Dask event topic that gets one event per finished or failed video (see :func:`run_shard`)."""


@dataclass
class ShardResult:
    done: dict[str, int] = field(default_factory=dict)
    """video_id -> frames written (a video is done when every target that needed it is)."""
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Complete already, recorded as failed, or claimed by another run, in every target."""
    lost: list[str] = field(default_factory=list)
    """Videos whose lease another run took over mid-way (it stalled): left to that run."""
    written: dict[str, int] = field(default_factory=dict)
    """store path -> videos this task completed in it."""
    timings: dict[str, float] = field(default_factory=lambda: {"decode_wait": 0.0, "encode": 0.0, "write": 0.0})
    frames_encoded: int = 0
    forwards: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


# -- per-process resources --------------------------------------------------------------------

_ENCODERS: dict[EncoderArgs, Encoder] = {}
_POOLS: dict[DecodeArgs, DecodePool] = {}


def cached_encoder(args: EncoderArgs) -> Encoder:
    """The encoder for ``args``, built once per process (``patch_fps`` does not rebuild it)."""
    args = replace(args, patch_fps=None)
    if args not in _ENCODERS:
        _ENCODERS[args] = get_encoder(
            args.name,
            args.weights,
            device=args.device,
            patches=args.patches,
            patch_pool=args.patch_pool,
            decode_short_side=args.decode_short_side,
            compute_dtype=args.compute_dtype,
        )
    return _ENCODERS[args]


def encoder_spec(args: EncoderArgs, fps: str, dtype: str) -> str:
    """The FeatureSpec (JSON) this process's encoder produces, with ``args.patch_fps``; run where
    the encoder lives."""
    return target_spec(args, cached_encoder(args).feature_spec(SamplingSpec(fps), dtype=dtype)).to_json()


def target_spec(args: EncoderArgs, spec: FeatureSpec) -> FeatureSpec:
    """The encoder's ``spec`` as a target with ``args`` stores it: patch tokens on the
    ``args.patch_fps`` sub-grid (ignored without patch tokens, like ``patch_pool``)."""
    return with_patch_fps(spec, args.patch_fps) if args.patch_fps is not None else spec


def prepare_worker(args: EncoderArgs, decode: DecodeArgs, dtype: str) -> str:
    """Start this process's decode pool, then build its encoder; returns the spec (JSON).

    The one-off start-up of a worker, done before its first shard. The pool comes first: its
    children spawn and import (numpy, PyAV, torch: seconds) while this process imports
    open_clip and builds the model, instead of after, when the encoder would wait for them;
    it returns once both are ready.
    """
    pool = cached_pool(decode)
    spec = encoder_spec(args, decode.fps, dtype)
    pool.wait_ready()
    return spec


def cached_pool(decode: DecodeArgs) -> DecodePool:
    """The decode pool for ``decode``, started once per process (children spawn at once)."""
    if decode not in _POOLS:
        _POOLS[decode] = DecodePool(
            decode.processes, fps=Fraction(decode.fps), short_side=decode.short_side, timeout_s=decode.timeout_s,
            frames_fps=None if decode.frames_fps is None else Fraction(decode.frames_fps),
        )
    return _POOLS[decode]


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()


# -- the shard ---------------------------------------------------------------------------------


def open_task_store(path: str, fingerprint: str) -> FeatureStore:
    """The task's store, for writing; refuses a store that is not the one the run created."""
    store = open_store(path, "a")
    if store.fingerprint != fingerprint:
        raise StoreError(f"{path} holds fingerprint {store.fingerprint[:12]}, the task expects {fingerprint[:12]}")
    return store


VideoCallback = Callable[[str, int, "str | None"], None]
"""``(video_id, frames written, failure or None)``, called as each video of a shard ends."""


def run_shard(task: ShardTask, on_video: VideoCallback | None = None) -> ShardResult:
    """Featurize the shard's videos into every target; see the module docstring. Returns small
    metadata only.

    Each video is decoded once (in the decode children, read ahead) and its frames go to the
    targets that still need it, each claimed with a lease in that target's store and kept
    alive by one heartbeat thread. Every video is isolated: any exception while featurizing it
    (decode, encoder, out of memory, non-finite output, a failed write) is recorded for that
    video with its class and the shard goes on; a lease lost to another run drops the video
    silently (counted in ``lost``). Progress per video goes to ``on_video`` or, when
    ``task.progress_topic`` is set and this runs on a Dask worker, to that topic as a
    ``{"video", "frames", "failure"}`` event (the client subscribes to it), so a progress bar
    moves per video, not per shard.
    """
    on_video = on_video or event_callback(task.progress_topic)
    result = ShardResult()
    pending: dict[str, set[int]] = {}  # video -> targets still writing it
    outcomes: dict[str, dict[int, Outcome]] = {}

    def target_done(video_id: str, index: int, outcome: Outcome) -> None:
        """Target ``index`` is through with ``video_id``; report the video once all are."""
        if index not in pending.get(video_id, ()):
            return
        pending[video_id].discard(index)
        outcomes.setdefault(video_id, {})[index] = outcome
        if pending[video_id]:
            return
        del pending[video_id]
        ends = outcomes.pop(video_id).values()
        failures = [o.failure for o in ends if o.failure is not None]
        frames = [o.frames for o in ends if o.frames is not None]
        if failures:
            result.failed[video_id] = failures[0]
        elif frames:
            result.done[video_id] = frames[0]
        elif any(o.lost for o in ends):
            result.lost.append(video_id)
        else:
            result.skipped.append(video_id)
        if on_video is not None and (failures or frames):
            on_video(video_id, frames[0] if frames and not failures else 0, failures[0] if failures else None)

    heartbeat = Heartbeat()
    sinks = [_Sink(i, t, task, result, target_done, heartbeat) for i, t in enumerate(task.targets)]
    pool = cached_pool(task.decode)

    def claimed_videos():
        """Yields the videos some target claimed and still has to do (read ahead by the pool)."""
        for video_id, path in task.videos:
            claimed = {sink.index for sink in sinks if sink.claim(video_id)}
            if not claimed:
                result.skipped.append(video_id)
                continue
            pending[video_id] = claimed
            yield video_id, path

    try:
        with heartbeat:
            for stream in pool.imap(claimed_videos()):
                video_id = stream.video_id
                mine = [sink for sink in sinks if sink.index in pending.get(video_id, ())]
                try:
                    t0 = time.perf_counter()
                    for chunk in stream.chunks():
                        result.timings["decode_wait"] += time.perf_counter() - t0
                        for sink in mine:
                            sink.add(video_id, chunk)
                        t0 = time.perf_counter()
                except DecodeError as exc:
                    for sink in mine:
                        sink.fail(video_id, exc.reason, str(exc))
                    continue
                for sink in mine:
                    sink.close(video_id)
            for sink in sinks:
                sink.flush()
    finally:
        for sink in sinks:
            sink.abort()  # interrupted: remove our temporaries only, free the leases
    result.frames_encoded = sum(sink.batcher.frames_encoded for sink in sinks)
    result.forwards = sum(sink.batcher.forwards for sink in sinks)
    return result


@dataclass(frozen=True)
class Outcome:
    """How one target ended one video: written (``frames``), failed, lost, or none of these
    (it was not needed after all)."""

    frames: int | None = None
    failure: str | None = None
    lost: bool = False


def failure_reason(exc: BaseException) -> str:
    """The reason recorded for a video: a decoder's own reason, else the exception's class."""
    return getattr(exc, "reason", None) or type(exc).__name__


class _VideoSink:
    """The batcher's sink for one video in one target: appends to its writer; an exception
    there fails this video only."""

    def __init__(self, owner: _Sink, video_id: str) -> None:
        self.owner, self.video_id = owner, video_id

    def append(self, **blocks: Any) -> None:
        writer = self.owner.writers.get(self.video_id)
        if writer is None:
            return  # failed or dropped meanwhile
        try:
            writer.append(**blocks)
        except Exception as exc:  # noqa: BLE001 - isolate the video (e.g. non-finite output)
            self.owner.fail(self.video_id, failure_reason(exc), str(exc))


class _Sink:
    """One target inside a shard: its store, encoder, batcher, open writers and leases."""

    def __init__(self, index: int, target: Target, task: ShardTask, result: ShardResult,
                 done: Callable[[str, int, Outcome], None], heartbeat: Heartbeat) -> None:
        self.index, self.task, self.result, self.done, self.heartbeat = index, task, result, done, heartbeat
        self.store = open_task_store(target.store_path, target.fingerprint)
        self.encoder = cached_encoder(target.encoder)
        mine = target_spec(target.encoder, self.encoder.feature_spec(self.store.spec.sampling, dtype=self.store.spec.dtype))
        if mine.fingerprint() != self.store.fingerprint:
            raise StoreError(
                f"this worker's encoder produces another spec than the store's ({'; '.join(self.store.spec.diff(mine))}); "
                "check that every worker has the same weights and library versions"
            )
        self.batcher = FrameBatcher(self._encode, task.batch_size or self.encoder.batch_size_hint,
                                    on_error=self._batch_failed)
        self.failed_before = set() if task.retry_failed else set(self.store.failures())
        self.leases: dict[str, Lease] = {}
        self.writers: dict[str, VideoWriter] = {}
        self.handles: dict[str, Any] = {}

    def claim(self, video_id: str) -> bool:
        """Whether this target takes ``video_id``: not complete, not failed before, and leased."""
        if self.store.is_complete(video_id) or video_id in self.failed_before:
            return False
        lease = self.store.claim(video_id, self.task.owner, self.task.lease_ttl_s,
                                 grace_s=lease_grace(self.task.lease_ttl_s))
        if lease is None:  # another run is on it
            return False
        if self.store.is_complete(video_id):  # finished while we were claiming
            lease.release()
            return False
        self.leases[video_id] = lease
        self.heartbeat.add(lease)
        return True

    def _encode(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        out = self.encoder.encode_frames(frames)
        self.result.timings["encode"] += time.perf_counter() - t0
        return out

    def add(self, video_id: str, chunk: Any) -> None:
        """Queue one decoded chunk of ``video_id`` (ignored once the video failed or was lost)."""
        lease = self.leases.get(video_id)
        if lease is None:
            return  # failed or lost earlier in this video
        if lease.lost:
            self._drop_lost(video_id)
            return
        if video_id not in self.handles:
            try:
                writer = self.store.begin_video(video_id, {"source": chunk.info.to_dict()}, lease=lease)
            except LeaseLost:
                self._drop_lost(video_id)
                return
            except Exception as exc:  # noqa: BLE001
                self.fail(video_id, failure_reason(exc), str(exc))
                return
            self.writers[video_id] = writer
            self.handles[video_id] = self.batcher.open_video(_VideoSink(self, video_id),
                                                             on_complete=lambda v=video_id: self._finish(v))
        self.batcher.add(self.handles[video_id], chunk)

    def close(self, video_id: str) -> None:
        if video_id in self.handles:
            self.batcher.close_video(self.handles[video_id])

    def _finish(self, video_id: str) -> None:
        """All of the video's frames are written: publish it (checks the lease once more)."""
        t0 = time.perf_counter()
        self.handles.pop(video_id, None)
        writer = self.writers.pop(video_id, None)
        if writer is None:
            return
        try:
            writer.commit()
        except LeaseLost:  # we stalled past the lease and another run took the video over
            self._release(video_id)
            self.done(video_id, self.index, Outcome(lost=True))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: this video only
            self.fail(video_id, failure_reason(exc), str(exc))
            return
        finally:
            self.result.timings["write"] += time.perf_counter() - t0
        self.result.written[str(self.store.path)] = self.result.written.get(str(self.store.path), 0) + 1
        self._release(video_id)
        self.done(video_id, self.index, Outcome(frames=writer.n_frames))

    def _batch_failed(self, exc: Exception, sinks: list[Any]) -> None:
        """The encoder raised on a batch: fail every video with frames in it."""
        for sink in sinks:
            self.fail(sink.video_id, failure_reason(exc), f"encoder: {exc}")

    def _forget(self, video_id: str) -> None:
        """Stop feeding ``video_id``: drop its queued frames, remove its temporary group."""
        handle = self.handles.pop(video_id, None)
        if handle is not None:
            self.batcher.drop_video(handle)
        writer = self.writers.pop(video_id, None)
        if writer is not None:
            writer.abort()

    def _drop_lost(self, video_id: str) -> None:
        """Another run has the video now: drop it silently (counted as lost)."""
        self._forget(video_id)
        self._release(video_id)
        self.done(video_id, self.index, Outcome(lost=True))

    def fail(self, video_id: str, reason: str, message: str) -> None:
        """Record ``video_id`` as failed in this target (its temporary removed) and go on."""
        if video_id not in self.leases:
            return  # already failed or dropped
        self._forget(video_id)
        lease = self.leases[video_id]
        if lease.lost:
            self._release(video_id)
            self.done(video_id, self.index, Outcome(lost=True))
            return
        self.store.record_failure(video_id, reason, squash(message))
        self._release(video_id)
        self.done(video_id, self.index, Outcome(failure=f"{reason}: {squash(message)}"))

    def _release(self, video_id: str) -> None:
        lease = self.leases.pop(video_id, None)
        if lease is not None:
            self.heartbeat.discard(lease)
            lease.release()

    def flush(self) -> None:
        self.batcher.flush()

    def abort(self) -> None:
        for writer in list(self.writers.values()):
            writer.abort()
        self.writers.clear()
        for video_id in list(self.leases):
            self._release(video_id)


def lease_grace(ttl_s: float) -> float:
    """Seconds past a lease's expiry before another run may take it over: the clock-skew
    allowance (:data:`DEFAULT_GRACE_S`), but no more than the ttl itself, so a short
    ``--lease-ttl`` hands a stalled writer's videos over within about two ttls."""
    return min(DEFAULT_GRACE_S, ttl_s)


def squash(message: str, limit: int = 500) -> str:
    """A failure message as one line (records and summaries are line-based)."""
    return " ".join(message.split())[:limit]


def event_callback(topic: str | None) -> VideoCallback | None:
    """Per-video events to ``topic`` through the Dask worker running this task, if any."""
    if topic is None:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a Dask worker
        return None

    def send(video_id: str, frames: int, failure: str | None) -> None:
        worker.log_event(topic, {"video": video_id, "frames": frames, "failure": failure})

    return send


@dataclass(frozen=True)
class TextTask:
    store_path: str
    fingerprint: str
    encoder: EncoderArgs
    split: str
    questions: tuple[QuestionRecord, ...]


def run_text(task: TextTask) -> int:
    """Write the question bundles of ``task.questions`` (one split); returns questions written."""
    store = open_task_store(task.store_path, task.fingerprint)
    return write_question_bundles(store, cached_encoder(task.encoder), task.split, list(task.questions))
