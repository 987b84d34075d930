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
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec import FeatureStore, SamplingSpec, StoreError, open_store
from vqacache.cache_spec.lease import LeaseLost
from vqacache.featurize.batcher import FrameBatcher
from vqacache.featurize.datasets import QuestionRecord
from vqacache.featurize.decode import DecodeError
from vqacache.featurize.decode_pool import DecodePool
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


@dataclass(frozen=True)
class DecodeArgs:
    """How this process's decode pool decodes (see :class:`DecodePool`)."""

    fps: str
    short_side: int | None = 256
    processes: int = 1
    timeout_s: float = 300.0


@dataclass(frozen=True)
class ShardTask:
    store_path: str
    fingerprint: str
    encoder: EncoderArgs
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
    """video_id -> frames written."""
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Complete already, recorded as failed, or claimed by another run."""
    timings: dict[str, float] = field(default_factory=lambda: {"decode_wait": 0.0, "encode": 0.0, "write": 0.0})
    frames_encoded: int = 0
    forwards: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


# -- per-process resources --------------------------------------------------------------------

_ENCODERS: dict[EncoderArgs, Encoder] = {}
_POOLS: dict[DecodeArgs, DecodePool] = {}


def cached_encoder(args: EncoderArgs) -> Encoder:
    """The encoder for ``args``, built once per process."""
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
    """The FeatureSpec (JSON) this process's encoder produces; run where the encoder lives."""
    return cached_encoder(args).feature_spec(SamplingSpec(fps), dtype=dtype).to_json()


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
            decode.processes, fps=Fraction(decode.fps), short_side=decode.short_side, timeout_s=decode.timeout_s
        )
    return _POOLS[decode]


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()


# -- the shard ---------------------------------------------------------------------------------


def _open_task_store(path: str, fingerprint: str) -> FeatureStore:
    """The task's store, for writing; refuses a store that is not the one the run created."""
    store = open_store(path, "a")
    if store.fingerprint != fingerprint:
        raise StoreError(f"{path} holds fingerprint {store.fingerprint[:12]}, the task expects {fingerprint[:12]}")
    return store


VideoCallback = Callable[[str, int, "str | None"], None]
"""``(video_id, frames written, failure or None)``, called as each video of a shard ends."""


def run_shard(task: ShardTask, on_video: VideoCallback | None = None) -> ShardResult:
    """Featurize the shard's videos; see the module docstring. Returns small metadata only.

    Progress per video goes to ``on_video`` or, when ``task.progress_topic`` is set and this
    runs on a Dask worker, to that topic as a ``{"video", "frames", "failure"}`` event (the
    client subscribes to it), so a progress bar moves per video, not per shard.
    """
    on_video = on_video or _event_callback(task.progress_topic)
    result = ShardResult()
    store = _open_task_store(task.store_path, task.fingerprint)
    encoder = cached_encoder(task.encoder)
    mine = encoder.feature_spec(store.spec.sampling, dtype=store.spec.dtype)
    if mine.fingerprint() != store.fingerprint:
        raise StoreError(
            f"this worker's encoder produces another spec than the store's ({'; '.join(store.spec.diff(mine))}); "
            "check that every worker has the same weights and library versions"
        )
    pool = cached_pool(task.decode)
    batch_size = task.batch_size or encoder.batch_size_hint
    leases: dict[str, Any] = {}

    def claimed_videos():
        """Yields the videos this run holds a lease on and still has to do (read ahead by the pool)."""
        failed_before = set() if task.retry_failed else set(store.failures())
        for video_id, path in task.videos:
            if store.is_complete(video_id) or video_id in failed_before:
                result.skipped.append(video_id)
                continue
            lease = store.claim(video_id, task.owner, task.lease_ttl_s)
            if lease is None:  # another run is on it
                result.skipped.append(video_id)
                continue
            if store.is_complete(video_id):  # finished while we were claiming
                lease.release()
                result.skipped.append(video_id)
                continue
            leases[video_id] = lease
            yield video_id, path

    def encode(frames: np.ndarray) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        out = encoder.encode_frames(frames)
        result.timings["encode"] += time.perf_counter() - t0
        return out

    batcher = FrameBatcher(encode, batch_size)
    open_writers: dict[str, Any] = {}

    def finish(video_id: str) -> None:
        t0 = time.perf_counter()
        cm, writer = open_writers.pop(video_id)
        try:
            cm.__exit__(None, None, None)  # flush + completion marker (checks the lease first)
            result.done[video_id] = writer.n_frames
        except LeaseLost:  # we stalled past the lease and another run took the video over
            result.skipped.append(video_id)
        leases.pop(video_id).release()
        result.timings["write"] += time.perf_counter() - t0
        if on_video is not None and video_id in result.done:
            on_video(video_id, writer.n_frames, None)

    def fail(video_id: str, handle: Any, exc: DecodeError) -> None:
        if handle is not None:
            batcher.drop_video(handle)
        if video_id in open_writers:
            cm, _ = open_writers.pop(video_id)
            cm.__exit__(type(exc), exc, None)  # removes the partial group
        store.record_failure(video_id, exc.reason, str(exc))
        result.failed[video_id] = f"{exc.reason}: {exc}"
        leases.pop(video_id).release()
        if on_video is not None:
            on_video(video_id, 0, result.failed[video_id])

    try:
        for stream in pool.imap(claimed_videos()):
            video_id, handle = stream.video_id, None
            try:
                t0 = time.perf_counter()
                for chunk in stream.chunks():
                    result.timings["decode_wait"] += time.perf_counter() - t0
                    if handle is None:
                        cm = store.write_video(video_id, lease=leases[video_id])
                        writer = cm.__enter__()
                        writer.group.attrs.update({"source": chunk.info.to_dict()})
                        open_writers[video_id] = (cm, writer)
                        handle = batcher.open_video(writer, on_complete=lambda v=video_id: finish(v))
                    batcher.add(handle, chunk)
                    for lease in leases.values():
                        lease.renew_if_due()
                    t0 = time.perf_counter()
            except DecodeError as exc:
                fail(video_id, handle, exc)
                continue
            batcher.close_video(handle)
        batcher.flush()
    finally:
        for video_id, (cm, _) in list(open_writers.items()):  # interrupted: leave nothing half-written
            cm.__exit__(RuntimeError, RuntimeError("task interrupted"), None)
        for lease in leases.values():
            lease.release()
    result.frames_encoded, result.forwards = batcher.frames_encoded, batcher.forwards
    return result


def _event_callback(topic: str | None) -> VideoCallback | None:
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
    store = _open_task_store(task.store_path, task.fingerprint)
    return write_question_bundles(store, cached_encoder(task.encoder), task.split, list(task.questions))
