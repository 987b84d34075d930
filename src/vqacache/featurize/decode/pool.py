"""Decode videos in child processes, ahead of the consumer; frames come back through shared memory.

decord can hang on a broken file where no signal handler ever runs, and it segfaults when it
shares a process with CUDA torch. So the process that holds the model never decodes:
:class:`DecodePool` runs ``decode_fn`` (default :func:`~vqacache.featurize.decode.video.iter_decode_at_fps`)
in child processes, and :meth:`DecodePool.imap` hands out one :class:`VideoStream` per video,
in input order, while the next ``prefetch_videos`` videos are already being decoded.

How it works:

* **Children** are fresh interpreters started with :mod:`subprocess`
  (``python -m vqacache.featurize.decode.child``, see :mod:`~vqacache.featurize.decode.child`),
  not multiprocessing children: a daemonic process (a Dask worker under its nanny, the
  default of ``dask worker`` and dask-jobqueue) may start them. (fork would be unsafe once
  torch has threads or CUDA.) They get the parent's ``sys.path``, so ``decode_fn`` may live
  in any module the parent can import. Parent and child exchange the typed messages of
  :mod:`~vqacache.featurize.decode.protocol` (JSON headers, raw arrays; no pickle) over two
  pipes. Each child decodes the videos it is sent one after the other; the parent gives a
  child at most two (the one it decodes and the next), in input order, least busy child first.
* **Frames** travel through shared memory. Each child owns a ring of ``max_chunks_in_flight``
  blocks reused from chunk to chunk (a block is replaced by a bigger one when a chunk does not
  fit; see :mod:`~vqacache.featurize.decode.ring`). It copies a chunk's frames into a free
  block and sends a small :class:`~vqacache.featurize.decode.protocol.Chunk` (block, shape,
  pts, src_index, is_repeat, and the VideoInfo with the first chunk) through its pipe; the
  parent copies the frames out into an ordinary array and hands the block back. A child whose
  blocks are all taken waits: that is the backpressure, and it bounds /dev/shm use to
  ``processes * max_chunks_in_flight`` chunks whatever the consumer keeps. A block is
  reserved with ``posix_fallocate`` when created: where /dev/shm is too small (Docker's
  64 MB default) that chunk goes through the pipe instead of the child dying of SIGBUS.
  Measured with 22 MB chunks (64 frames of 256x455): 12 ms per chunk end to end, of which
  5.6 ms of the consumer's CPU (one memcpy); pickled through a pipe: 109 ms and 20 ms.
* **Failures.** The parent waits on a child's pipe (its end reads as closed when the child dies), with a
  deadline ``timeout_s`` after the last message exchanged with that child (no deadline while
  the child waits for the consumer to free a block). A dead child gives
  ``DecodeError("crashed")``; a silent one is killed with SIGKILL (which no hang resists) and
  gives ``"timeout"``. Either way only the video the child had started fails: a fresh child
  takes its place at once, and the videos queued on the old one move to it. Chunks the child
  sent before failing are still delivered first. The child's own exceptions come back as
  their type, message and traceback (a ``DecodeError`` keeps its reason and message; see
  :func:`~vqacache.featurize.decode.protocol.rebuild_error`). Children are
  watched while the consumer waits on the pool (there is no background thread): a prefetching
  child that hangs is found when its video's turn comes.
* **Cleanup.** A child announces each block's name before creating it, so the parent can
  unlink the blocks of a child it killed, and every block on :meth:`DecodePool.close`. A child
  is killed when its parent dies (Linux), and the parent's resource tracker (which the
  children share) unlinks what is left.

A consumer that stops reading a stream (``break``), or takes the next stream first, abandons
the video: the child is told to stop, its remaining chunks are discarded unread. The pool is
not thread-safe; one :meth:`~DecodePool.imap` runs at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing.connection
import os
import secrets
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vqacache.cache_spec.errors import UsageError, VqaCacheError
from vqacache.featurize.decode.frames import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_FPS,
    DEFAULT_SHORT_SIDE,
    DecodedFrames,
    DecodeError,
)
from vqacache.featurize.decode.protocol import (
    FINAL,
    Cancel,
    Channel,
    Chunk,
    End,
    Error,
    Free,
    Message,
    Ready,
    Shm,
    Start,
    Task,
    config_kwargs,
    rebuild_error,
    resolve_decode_fn,
)
from vqacache.featurize.decode.ring import SHM_PREFIX, copy_out, tracker_fd, unlink

__all__ = ["DEFAULT_DECODE_FN", "SHM_PREFIX", "DecodePool", "DecodePoolError", "PoolStats", "VideoStream",
           "resolve_decode_fn"]

DEFAULT_DECODE_FN = "vqacache.featurize.decode.video:iter_decode_at_fps"
STARTUP_TIMEOUT_S = 300.0
"""How long a new child may take to import its modules (torch: seconds, more on a busy node)."""
TASKS_PER_CHILD = 2
"""Videos sent to one child at a time: the one it decodes and the next."""
MAX_FRUITLESS_RESTARTS = 3
"""Children that die before starting any video, in a row, before the pool gives up."""
MP_CONTEXTS = ("spawn", "forkserver")
"""Accepted for compatibility; children are always fresh interpreters (see the module docstring)."""
TRANSPORTS = ("shm", "pipe")

_JOIN_S = 5.0  # wait for a SIGKILLed child to be reaped (longer only in uninterruptible sleep)


class DecodePoolError(VqaCacheError, RuntimeError):
    """The pool itself cannot work: closed, or its children die before decoding anything."""


@dataclass
class PoolStats:
    """Counters since the pool was created."""

    chunks: int = 0
    """Chunks delivered to the consumer."""
    inline_chunks: int = 0
    """Of those, chunks sent through the pipe (no shared memory, or ``transport="pipe"``)."""
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    """Children replaced (after a timeout, a crash or a death at startup)."""


class DecodePool:
    """Decode videos in ``processes`` child processes; see the module docstring.

    Use as a context manager, or call :meth:`close`::

        with DecodePool(2, timeout_s=60) as pool:
            for stream in pool.imap(videos):  # (video_id, path) pairs
                try:
                    for chunk in stream.chunks():  # DecodedFrames, as iter_decode_at_fps
                        ...
                except DecodeError as e:  # e.reason, incl. "timeout" and "crashed"
                    ...

    Args:
        processes: child processes decoding at the same time.
        fps, short_side, chunk_frames: passed to ``decode_fn`` (see
            :func:`~vqacache.featurize.decode.video.iter_decode_at_fps`).
        frames_fps: source frame rate of the folders of frames among the videos (``3``,
            ``"30000/1001"``); passed to ``decode_fn`` only when set, so decode functions
            without that argument still work for video files.
        timeout_s: a child that sends nothing for this long while decoding is killed and
            its video fails with reason ``"timeout"``.
        prefetch_videos: videos decoded ahead of the one being consumed.
        max_chunks_in_flight: chunks a child may have produced that the consumer has not
            taken yet (shared-memory blocks per child).
        mp_context: "spawn" (default) or "forkserver": accepted for compatibility, both start
            each child as a fresh interpreter with :mod:`subprocess`.
        decode_fn: ``"module:function"`` with iter_decode_at_fps's signature, imported in
            the children (tests point it at misbehaving functions).
        transport: "shm" (default) or "pipe" (every chunk's frames through the pipe; slower).
    """

    def __init__(
        self,
        processes: int = 1,
        *,
        fps: float | str | Fraction = DEFAULT_FPS,
        short_side: int | None = DEFAULT_SHORT_SIDE,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        timeout_s: float = 120.0,
        prefetch_videos: int = 2,
        max_chunks_in_flight: int = 4,
        mp_context: str = "spawn",
        decode_fn: str = DEFAULT_DECODE_FN,
        transport: Literal["shm", "pipe"] = "shm",
        frames_fps: float | str | Fraction | None = None,
    ) -> None:
        _check_options(processes, fps, short_side, chunk_frames, timeout_s, prefetch_videos,
                       max_chunks_in_flight, mp_context, transport, frames_fps)
        resolve_decode_fn(decode_fn)  # fail here, not in every child
        self.processes, self.timeout_s = processes, float(timeout_s)
        self.prefetch_videos, self.max_chunks_in_flight = prefetch_videos, max_chunks_in_flight
        self.stats = PoolStats()
        self.shm_prefix = f"{SHM_PREFIX}{secrets.token_hex(3)}-"
        """Names of this pool's blocks: ``<shm_prefix><child pid>-<slot>-<n>``."""
        kwargs = dict(fps=fps, short_side=short_side, chunk_frames=chunk_frames)
        kwargs |= {} if frames_fps is None else {"frames_fps": frames_fps}
        config = dict(shm_prefix=self.shm_prefix, decode_fn=decode_fn, kwargs=config_kwargs(kwargs),
                      n_slots=max_chunks_in_flight, use_shm=transport == "shm")
        self._spawn = lambda index: _Worker(index, config)
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        self._workers.extend(self._spawn(i) for i in range(processes))
        self._pending: deque[_Task] = deque()  # the current video, then the prefetched ones
        self._task_ids = itertools.count()
        self._fruitless = 0  # children in a row that died before starting a video
        self._in_imap = self._closed = False

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the children and unlink every shared-memory block. Idempotent."""
        self._closed = True
        self._finalizer()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current children."""
        return [w.pid for w in self._workers]

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> bool:
        """Block until every child has started (imported its decoder), at most ``timeout_s``;
        returns whether all have. Optional: without it the first video waits for its child.
        A Dask worker calls it to finish its one-off start-up before its first task."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [w for w in self._workers if not w.ready]
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                return not waiting
            ready = set(_wait([w.conn for w in waiting], remaining))
            for worker in waiting:
                if worker.conn in ready:
                    self._read(worker)

    def imap(self, videos: Iterable[tuple[str, str | os.PathLike[str]]]) -> Iterator[VideoStream]:
        """Yield one :class:`VideoStream` per ``(video_id, path)``, in input order.

        While the caller consumes video i, videos i+1..i+prefetch_videos are being decoded.
        A stream is valid until the next one is taken; one not read to its end is abandoned.
        ``videos`` is read lazily, ``prefetch_videos`` ahead.
        """
        if self._closed:
            raise DecodePoolError("the decode pool is closed")
        return self._imap(iter(videos))

    # -- scheduling ------------------------------------------------------------------------

    def _imap(self, source: Iterator[tuple[str, str | os.PathLike[str]]]) -> Iterator[VideoStream]:
        if self._in_imap:
            raise DecodePoolError("one imap at a time per DecodePool")
        self._in_imap = True
        try:
            while True:
                while len(self._pending) < 1 + self.prefetch_videos:
                    item = next(source, None)
                    if item is None:
                        break
                    video_id, path = item
                    self._pending.append(_Task(next(self._task_ids), str(video_id), path))
                if not self._pending:
                    return
                self._dispatch()
                task = self._pending[0]
                yield VideoStream(self, task)
                self._abandon(task)  # no-op when it was read to the end
                self._pending.popleft()
        finally:
            for task in self._pending:
                self._abandon(task)
            self._pending.clear()
            self._in_imap = False

    def _dispatch(self) -> None:
        """Send pending videos, in order, to the least busy children: fewest videos, then fewest
        abandoned ones (a child may be stuck on one until its timeout), ready ones, then the one
        sent a video longest ago (it will be free first)."""
        for task in self._pending:
            if task.worker is not None or task.finished:
                continue
            worker = min(self._workers, key=lambda w: (
                len(w.tasks), sum(t.abandoned for t in w.tasks), not w.ready, w.last_task_id))
            if len(worker.tasks) >= TASKS_PER_CHILD:
                return
            worker.assign(task)

    def _abandon(self, task: _Task) -> None:
        """The consumer will not read ``task`` (further): stop its child, free what it holds."""
        if task.finished or task.abandoned:
            return
        task.abandoned = True
        worker = task.worker
        if worker is None or worker not in self._workers:  # not sent, or its child failed
            task.finished = True
            return
        for msg in task.inbox:
            if isinstance(msg, Chunk):
                worker.release(msg)
        task.inbox.clear()
        worker.send(Cancel(task.id))

    # -- receiving -------------------------------------------------------------------------

    def _next_chunk(self, task: _Task) -> DecodedFrames | None:
        """The next chunk of ``task``, None at its end; raises its error."""
        if self._closed:
            raise DecodePoolError("the decode pool is closed")
        if task.abandoned:
            raise DecodePoolError(f"stream {task.video_id!r} was abandoned (imap moved on)")
        while not task.inbox:
            if task.error is not None:
                task.finished = True
                raise task.error
            if task.finished:
                return None
            self._pump(task)
        msg = task.inbox.popleft()
        if isinstance(msg, Chunk):
            return self._deliver(task, msg)
        task.finished = True
        if isinstance(msg, End):
            return None
        if isinstance(msg, Error):
            raise rebuild_error(msg, task.worker.pid)
        raise AssertionError(f"unexpected message {msg!r} for a live stream")

    def _deliver(self, task: _Task, msg: Chunk) -> DecodedFrames:
        if msg.inline:
            frames = msg.frames
            task.worker.held_msgs -= 1
            self.stats.inline_chunks += 1
        else:
            frames = task.worker.copy_out(msg)  # (T, H, W, 3)
            task.worker.release(msg)
        if msg.new_info:
            task.info = msg.info
        self.stats.chunks += 1
        return DecodedFrames(frames=frames, pts=msg.pts, src_index=msg.src_index, is_repeat=msg.is_repeat,
                             info=task.info)

    def _pump(self, task: _Task) -> None:
        """Wait for one event from ``task``'s child or a child draining an abandoned video."""
        self._dispatch()
        watched = [
            w for w in self._workers
            if w is task.worker
            or (any(t.abandoned for t in w.tasks) and w.held_msgs < self.max_chunks_in_flight)
        ]
        if not watched:
            raise AssertionError(f"video {task.video_id!r} is waiting for no child")
        deadline = min(w.deadline(self.timeout_s) for w in watched)
        timeout = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
        ready = set(_wait([w.conn for w in watched], timeout))
        for worker in watched:
            if worker.conn in ready:
                self._read(worker)
            elif time.monotonic() >= worker.deadline(self.timeout_s):
                self._fail(worker, "timeout")

    def _read(self, worker: _Worker) -> None:
        """Receive one message from ``worker`` and route it to its video."""
        try:
            msg = worker.conn.recv()
        except (EOFError, OSError):
            self._fail(worker, "crashed")
            return
        worker.last_event = time.monotonic()
        if isinstance(msg, Ready):
            worker.ready = True
            return
        if isinstance(msg, Shm):
            worker.block_names[msg.slot] = msg.name
            worker.all_names.add(msg.name)
            return
        task = next((t for t in worker.tasks if t.id == getattr(msg, "id", None)), None)
        if task is None:
            raise AssertionError(f"decode worker pid {worker.pid} sent {msg!r} for an unknown video")
        if isinstance(msg, Start):
            worker.running = task
            self._fruitless = 0
        elif task.abandoned:
            if isinstance(msg, Chunk):
                worker.count(msg)
                worker.release(msg)  # discarded unread
        else:
            if isinstance(msg, Chunk):
                worker.count(msg)
            task.inbox.append(msg)
        if isinstance(msg, FINAL):
            worker.tasks.remove(task)
            worker.running = None if worker.running is task else worker.running
            task.finished = task.finished or task.abandoned
            self._dispatch()

    def _fail(self, worker: _Worker, reason: str) -> None:
        """Replace a dead or silent child; the video it had started fails with ``reason``."""
        running, pid = worker.running, worker.pid
        for task in self._pending:  # chunks sent before the failure are still delivered
            if task.worker is worker:
                task.inbox = deque(m for m in map(worker.materialize, task.inbox) if m is not None)
        worker.shutdown()
        if reason == "crashed":
            how = f"died ({_describe_exit(worker.process.returncode)})"
        elif worker.ready:
            how = f"sent nothing for {self.timeout_s:g} s and was killed"
        else:
            how = f"did not start within {max(self.timeout_s, STARTUP_TIMEOUT_S):g} s and was killed"
        index = self._workers.index(worker)
        self._workers[index] = new = self._spawn(index)
        self.stats.restarts += 1
        for task in worker.tasks:
            if task is running or task.abandoned:
                task.finished = task.abandoned
                continue
            new.assign(task)  # not started: the new child decodes it
        if running is not None and not running.abandoned:
            running.error = DecodeError(reason, f"{running.path}: decode worker pid {pid} {how}")
            if reason == "timeout":
                self.stats.timeouts += 1
            else:
                self.stats.crashes += 1
        if running is None:
            self._fruitless += 1
            if self._fruitless >= MAX_FRUITLESS_RESTARTS:
                raise DecodePoolError(
                    f"{self._fruitless} decode workers in a row {how} before decoding anything; "
                    f"last pid {pid}"
                )


class VideoStream:
    """The decoded chunks of one video of :meth:`DecodePool.imap`.

    Valid until the next stream is taken from ``imap``.
    """

    def __init__(self, pool: DecodePool, task: _Task) -> None:
        self.video_id = task.video_id
        self.path = Path(task.path)
        self._pool, self._task = pool, task
        self._started = False

    def __repr__(self) -> str:
        return f"VideoStream({self.video_id!r}, {str(self.path)!r})"

    def chunks(self) -> Iterator[DecodedFrames]:
        """The chunks ``decode_fn`` yields (bit-identical arrays, same info), in order.

        Raises:
            DecodeError: where the decoder failed: the child's own error (same reason and
                message), ``"timeout"`` when no chunk came for ``timeout_s`` (the child was
                killed), ``"crashed"`` when the child died. Earlier chunks were delivered.
            DecodePoolError: the pool was closed, or the stream abandoned.
        """
        if self._started:
            raise DecodePoolError("VideoStream.chunks() can be iterated once")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[DecodedFrames]:
        try:
            while (chunk := self._pool._next_chunk(self._task)) is not None:
                yield chunk
        finally:
            self._pool._abandon(self._task)  # no-op when read to the end


# -- parent-side bookkeeping -----------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    id: int
    video_id: str
    path: str | os.PathLike[str]
    worker: _Worker | None = None
    inbox: deque[Message] = field(default_factory=deque)
    """Messages read from the child, not yet taken by the consumer."""
    info: Any = None
    error: DecodeError | None = None
    abandoned: bool = False
    finished: bool = False


class _Worker:
    """One child process, its pipes and the parent's view of its shared-memory blocks."""

    def __init__(self, index: int, config: dict[str, Any]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        tracker = tracker_fd()
        child_config = {**config, "read_fd": to_child_r, "write_fd": from_child_w, "tracker_fd": tracker,
                        "sys_path": list(sys.path), "parent_pid": os.getpid()}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vqacache.featurize.decode.child", json.dumps(child_config)],
                stdin=subprocess.DEVNULL, pass_fds=(to_child_r, from_child_w, tracker),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)  # so that the child's death reads as EOF here
        os.close(from_child_w)
        self.conn = Channel(from_child_r, to_child_w)
        self.name = f"vqacache-decode-{index}"
        self.pid: int = self.process.pid
        self.n_slots: int = config["n_slots"]
        self.tasks: list[_Task] = []  # sent to the child, no final message read yet
        self.last_task_id = -1
        self.running: _Task | None = None  # the one the child said it started
        self.ready = False
        self.started = self.last_event = time.monotonic()
        self.block_names: dict[int, str] = {}  # slot -> current block name
        self.all_names: set[str] = set()  # every block name the child announced
        self.maps: dict[int, SharedMemory] = {}  # slot -> our mapping of it
        self.held_slots = 0  # blocks whose chunk was read but not yet copied out and freed
        self.held_msgs = 0  # chunks read, not yet given to the consumer

    def deadline(self, timeout_s: float) -> float:
        if not self.ready:
            return self.started + max(timeout_s, STARTUP_TIMEOUT_S)
        if not self.tasks or self.held_slots >= self.n_slots:
            return math.inf  # idle, or waiting for us to free a block
        return self.last_event + timeout_s

    def send(self, msg: Message) -> None:
        try:
            self.conn.send(msg)
        except OSError:
            pass  # dead: found when next waited on
        self.last_event = time.monotonic()

    def assign(self, task: _Task) -> None:
        task.worker = self
        self.tasks.append(task)
        self.last_task_id = task.id
        self.send(Task(task.id, os.fspath(task.path)))

    def count(self, msg: Chunk) -> None:
        self.held_msgs += 1
        self.held_slots += not msg.inline

    def release(self, msg: Chunk) -> None:
        """A chunk message was taken or discarded: hand its block back."""
        self.held_msgs -= 1
        if not msg.inline:
            self.held_slots -= 1
            self.send(Free(msg.slot))

    def copy_out(self, msg: Chunk) -> np.ndarray:
        return copy_out(self.maps, msg.slot, self.block_names[msg.slot], msg.shape, msg.dtype)

    def materialize(self, msg: Message) -> Message | None:
        """The message with its frames copied out of shared memory (before the block goes);
        None when the block is already gone (the video fails right after these chunks)."""
        if not isinstance(msg, Chunk) or msg.inline:
            return msg
        self.held_slots -= 1
        try:
            frames = self.copy_out(msg)
        except OSError:  # a child dying of an exception unlinks its blocks itself
            return None
        return dataclasses.replace(msg, slot=-1, frames=frames)

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.kill()
            except OSError:
                pass

    def shutdown(self) -> None:
        """Kill the child, unlink its blocks, close the pipes. Idempotent."""
        self.kill()
        try:
            self.process.wait(_JOIN_S)
        except subprocess.TimeoutExpired:
            pass
        try:  # names announced just before it died
            while self.conn.poll():
                msg = self.conn.recv()
                if isinstance(msg, Shm):
                    self.all_names.add(msg.name)
        except (EOFError, OSError, ValueError, KeyError):
            pass
        self.conn.close()
        for block in self.maps.values():
            block.close()
        self.maps.clear()
        for name in self.all_names:
            unlink(name)
        self.all_names.clear()


def _shutdown(workers: list[_Worker]) -> None:
    for worker in workers:  # kill all first, then wait for each
        worker.kill()
    for worker in workers:
        worker.shutdown()


def _wait(conns: list[Channel], timeout: float | None) -> list[Channel]:
    """The channels with a message (or their end) to read, waiting at most ``timeout``."""
    buffered = [c for c in conns if c.buffered()]
    if buffered:
        return buffered
    return multiprocessing.connection.wait(conns, timeout)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "its pipe closed"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _check_options(processes: Any, fps: Any, short_side: Any, chunk_frames: Any, timeout_s: Any,
                   prefetch_videos: Any, max_chunks_in_flight: Any, mp_context: Any,
                   transport: Any, frames_fps: Any = None) -> None:
    def count(value: Any, minimum: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    def rate(value: Any) -> bool:
        try:
            return not isinstance(value, bool) and Fraction(str(value)) > 0
        except (ValueError, ZeroDivisionError):
            return False

    problems = [
        (count(processes, 1), f"processes must be an integer >= 1, got {processes!r}"),
        (rate(fps), f"fps must be a positive number such as 7.5 or 15/2, got {fps!r}"),
        (frames_fps is None or rate(frames_fps),
         f"frames_fps must be None or a positive number such as 3 or 30000/1001, got {frames_fps!r}"),
        (short_side is None or count(short_side, 1), f"short_side must be >= 1 or None, got {short_side!r}"),
        (count(chunk_frames, 1), f"chunk_frames must be an integer >= 1, got {chunk_frames!r}"),
        (isinstance(timeout_s, int | float) and timeout_s > 0, f"timeout_s must be > 0, got {timeout_s!r}"),
        (count(prefetch_videos, 0), f"prefetch_videos must be an integer >= 0, got {prefetch_videos!r}"),
        (count(max_chunks_in_flight, 1), f"max_chunks_in_flight must be >= 1, got {max_chunks_in_flight!r}"),
        (mp_context in MP_CONTEXTS, f"mp_context must be one of {', '.join(MP_CONTEXTS)}; "
                                    f"got {mp_context!r}"),
        (transport in TRANSPORTS, f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}"),
    ]
    for ok, message in problems:
        if not ok:
            raise UsageError(message)
