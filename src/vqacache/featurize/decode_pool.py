"""Decode videos in child processes, ahead of the consumer; frames come back through shared memory.

decord can hang on a broken file where no signal handler ever runs, and it segfaults when it
shares a process with CUDA torch. So the process that holds the model never decodes:
:class:`DecodePool` runs ``decode_fn`` (default :func:`~vqacache.featurize.decode.iter_decode_at_fps`)
in child processes, and :meth:`DecodePool.imap` hands out one :class:`VideoStream` per video,
in input order, while the next ``prefetch_videos`` videos are already being decoded.

How it works:

* **Children** start with the "spawn" method (fork is unsafe once torch has threads or CUDA;
  "forkserver" also works and restarts a child in milliseconds instead of a fresh interpreter
  importing torch). Spawned children get the parent's ``sys.path``, so ``decode_fn`` may live
  in any module the parent can import. Each child decodes the videos it is sent one after
  the other; the parent gives a child at most two (the one it decodes and the next), in
  input order, least busy child first.
* **Frames** travel through shared memory. Each child owns a ring of ``max_chunks_in_flight``
  blocks reused from chunk to chunk (a block is replaced by a bigger one when a chunk does not
  fit). It copies a chunk's frames into a free block and sends a small message (block, shape,
  pts, src_index, is_repeat, and the VideoInfo with the first chunk) through its pipe; the
  parent copies the frames out into an ordinary array and hands the block back. A child whose
  blocks are all taken waits: that is the backpressure, and it bounds /dev/shm use to
  ``processes * max_chunks_in_flight`` chunks whatever the consumer keeps. A block is
  reserved with ``posix_fallocate`` when created: where /dev/shm is too small (Docker's
  64 MB default) that chunk goes pickled through the pipe instead of the child dying of SIGBUS.
  Measured with 22 MB chunks (64 frames of 256x455): 12 ms per chunk end to end, of which
  5.6 ms of the consumer's CPU (one memcpy); pickled through the pipe: 109 ms and 20 ms.
* **Failures.** The parent waits on a child's pipe and its process sentinel together, with a
  deadline ``timeout_s`` after the last message exchanged with that child (no deadline while
  the child waits for the consumer to free a block). A dead child gives
  ``DecodeError("crashed")``; a silent one is killed with SIGKILL (which no hang resists) and
  gives ``"timeout"``. Either way only the video the child had started fails: a fresh child
  takes its place at once, and the videos queued on the old one move to it. Chunks the child
  sent before failing are still delivered first. The child's own exceptions come back pickled
  and are raised as they are (a ``DecodeError`` keeps its reason and message). Children are
  watched while the consumer waits on the pool (there is no background thread): a prefetching
  child that hangs is found when its video's turn comes.
* **Cleanup.** A child announces each block's name before creating it, so the parent can
  unlink the blocks of a child it killed, and every block on :meth:`DecodePool.close`. A child
  is killed when its parent dies (Linux), and Python's resource tracker unlinks what is left.

A consumer that stops reading a stream (``break``), or takes the next stream first, abandons
the video: the child is told to stop, its remaining chunks are discarded unread. The pool is
not thread-safe; one :meth:`~DecodePool.imap` runs at a time.
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import secrets
import signal
import sys
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vqacache.cache_spec.errors import UsageError, VqaCacheError
from vqacache.featurize.decode import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_FPS,
    DEFAULT_SHORT_SIDE,
    DecodedFrames,
    DecodeError,
)

DEFAULT_DECODE_FN = "vqacache.featurize.decode:iter_decode_at_fps"
SHM_PREFIX = "vqacache-"
"""Every shared-memory block of a pool is named ``vqacache-<pool token>-...``."""
STARTUP_TIMEOUT_S = 300.0
"""How long a new child may take to import its modules (torch: seconds, more on a busy node)."""
TASKS_PER_CHILD = 2
"""Videos sent to one child at a time: the one it decodes and the next."""
MAX_FRUITLESS_RESTARTS = 3
"""Children that die before starting any video, in a row, before the pool gives up."""
MP_CONTEXTS = ("spawn", "forkserver")
TRANSPORTS = ("shm", "pipe")

_MIB = 1 << 20
_JOIN_S = 5.0  # wait for a SIGKILLed child to be reaped (longer only in uninterruptible sleep)
_TERMINAL = ("end", "error", "cancelled")


class DecodePoolError(VqaCacheError, RuntimeError):
    """The pool itself cannot work: closed, or its children die before decoding anything."""


@dataclass
class PoolStats:
    """Counters since the pool was created."""

    chunks: int = 0
    """Chunks delivered to the consumer."""
    inline_chunks: int = 0
    """Of those, chunks pickled through the pipe (no shared memory, or ``transport="pipe"``)."""
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
            :func:`~vqacache.featurize.decode.iter_decode_at_fps`).
        frames_fps: source frame rate of the folders of frames among the videos (``3``,
            ``"30000/1001"``); passed to ``decode_fn`` only when set, so decode functions
            without that argument still work for video files.
        timeout_s: a child that sends nothing for this long while decoding is killed and
            its video fails with reason ``"timeout"``.
        prefetch_videos: videos decoded ahead of the one being consumed.
        max_chunks_in_flight: chunks a child may have produced that the consumer has not
            taken yet (shared-memory blocks per child).
        mp_context: "spawn" (default) or "forkserver".
        decode_fn: ``"module:function"`` with iter_decode_at_fps's signature, imported in
            the children (tests point it at misbehaving functions).
        transport: "shm" (default) or "pipe" (pickle every chunk through the pipe; slower).
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
        ctx = multiprocessing.get_context(mp_context)
        if mp_context == "forkserver":  # children fork from a server that imported these once
            ctx.set_forkserver_preload([__name__, decode_fn.partition(":")[0]])
        kwargs = dict(fps=fps, short_side=short_side, chunk_frames=chunk_frames)
        kwargs |= {} if frames_fps is None else {"frames_fps": frames_fps}
        child_args = (decode_fn, kwargs, max_chunks_in_flight, transport == "shm")
        self._spawn = lambda index: _Worker(ctx, index, self.shm_prefix, child_args)
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
        return [w.process.pid for w in self._workers]

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
            handles = [w.conn for w in waiting] + [w.process.sentinel for w in waiting]
            ready = set(multiprocessing.connection.wait(handles, remaining))
            for worker in waiting:
                if worker.conn in ready:
                    self._read(worker)
                elif worker.process.sentinel in ready:
                    self._fail(worker, "crashed")

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
            if msg[0] == "chunk":
                worker.release(msg)
        task.inbox.clear()
        worker.send(("cancel", task.id))

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
        kind = msg[0]
        if kind == "chunk":
            return self._deliver(task, msg)
        task.finished = True
        if kind == "end":
            return None
        if kind == "error":
            raise _child_error(msg, task.worker.pid)
        raise AssertionError(f"unexpected message {kind!r} for a live stream")

    def _deliver(self, task: _Task, msg: tuple) -> DecodedFrames:
        _, _, slot, payload, pts, src_index, is_repeat, info, new_info = msg
        if slot >= 0:
            frames = task.worker.copy_out(slot, *payload)  # (T, H, W, 3)
            task.worker.release(msg)
        else:
            frames = payload
            task.worker.held_msgs -= 1
            self.stats.inline_chunks += 1
        if new_info:
            task.info = info
        self.stats.chunks += 1
        return DecodedFrames(frames=frames, pts=pts, src_index=src_index, is_repeat=is_repeat, info=task.info)

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
        handles = [w.conn for w in watched] + [w.process.sentinel for w in watched]
        ready = set(multiprocessing.connection.wait(handles, timeout))
        for worker in watched:
            if worker.conn in ready:
                self._read(worker)
            elif worker.process.sentinel in ready:
                self._fail(worker, "crashed")
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
        kind = msg[0]
        if kind == "ready":
            worker.ready = True
            return
        if kind == "shm":
            _, slot, name = msg
            worker.block_names[slot] = name
            worker.all_names.add(name)
            return
        task = next((t for t in worker.tasks if t.id == msg[1]), None)
        if task is None:
            raise AssertionError(f"decode worker pid {worker.pid} sent {kind!r} for unknown video {msg[1]}")
        if kind == "start":
            worker.running = task
            self._fruitless = 0
        elif task.abandoned:
            if kind == "chunk":
                worker.count(msg)
                worker.release(msg)  # discarded unread
        else:
            if kind == "chunk":
                worker.count(msg)
            task.inbox.append(msg)
        if kind in _TERMINAL:
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
            how = f"died ({_describe_exit(worker.process.exitcode)})"
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
    inbox: deque[tuple] = field(default_factory=deque)
    """Messages read from the child, not yet taken by the consumer."""
    info: Any = None
    error: DecodeError | None = None
    abandoned: bool = False
    finished: bool = False


class _Worker:
    """One child process, its pipe and the parent's view of its shared-memory blocks."""

    def __init__(self, ctx: Any, index: int, shm_prefix: str, args: tuple) -> None:
        parent_conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(child_conn, shm_prefix, *args),
                                   name=f"vqacache-decode-{index}", daemon=True)
        self.process.start()
        child_conn.close()  # so that the child's death reads as EOF here
        self.conn = parent_conn
        self.pid: int = self.process.pid
        self.n_slots = args[2]
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

    def send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except OSError:
            pass  # dead: found when next waited on
        self.last_event = time.monotonic()

    def assign(self, task: _Task) -> None:
        task.worker = self
        self.tasks.append(task)
        self.last_task_id = task.id
        self.send(("task", task.id, task.path))

    def count(self, msg: tuple) -> None:
        self.held_msgs += 1
        self.held_slots += msg[2] >= 0

    def release(self, msg: tuple) -> None:
        """A chunk message was taken or discarded: hand its block back."""
        self.held_msgs -= 1
        if msg[2] >= 0:
            self.held_slots -= 1
            self.send(("free", msg[2]))

    def copy_out(self, slot: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        name = self.block_names[slot]
        block = self.maps.get(slot)
        if block is None or block.name != name:  # the child replaced it with a bigger one
            if block is not None:
                block.close()
            block = self.maps[slot] = SharedMemory(name)
        view = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)
        frames = view.copy()
        del view  # no view may outlive the mapping
        return frames

    def materialize(self, msg: tuple) -> tuple | None:
        """The message with its frames copied out of shared memory (before the block goes);
        None when the block is already gone (the video fails right after these chunks)."""
        if msg[0] != "chunk" or msg[2] < 0:
            return msg
        self.held_slots -= 1
        try:
            frames = self.copy_out(msg[2], *msg[3])
        except OSError:  # a child dying of an exception unlinks its blocks itself
            return None
        return (*msg[:2], -1, frames, *msg[4:])

    def shutdown(self) -> None:
        """Kill the child, unlink its blocks, close the pipe. Idempotent."""
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(_JOIN_S)
        try:  # names announced just before it died
            while self.conn.poll():
                msg = self.conn.recv()
                if msg[0] == "shm":
                    self.all_names.add(msg[2])
        except (EOFError, OSError):
            pass
        self.conn.close()
        for block in self.maps.values():
            block.close()
        self.maps.clear()
        for name in self.all_names:
            _unlink(name)
        self.all_names.clear()


def _shutdown(workers: list[_Worker]) -> None:
    for worker in workers:  # kill all first, then wait for each
        if worker.process.exitcode is None:
            worker.process.kill()
    for worker in workers:
        worker.shutdown()


def _unlink(name: str) -> None:
    try:
        block = SharedMemory(name)  # registers with the resource tracker; unlink() unregisters
    except FileNotFoundError:
        return
    except ValueError:  # created but not sized yet (killed in between): nothing registered
        import _posixshmem

        _posixshmem.shm_unlink("/" + name)
        return
    block.close()
    block.unlink()


def _child_error(msg: tuple, pid: int) -> BaseException:
    """The exception a child sent: itself when it unpickles, else a RuntimeError with its text."""
    _, _, data, text, trace = msg
    try:
        error = pickle.loads(data) if data is not None else None
    except Exception:
        error = None
    if error is None:
        return RuntimeError(f"decode worker pid {pid}: {text}\n{trace}")
    if not isinstance(error, DecodeError):
        error.add_note(f"raised in decode worker pid {pid}:\n{trace}")
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "its pipe closed"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def resolve_decode_fn(spec: str) -> Callable[..., Iterable[DecodedFrames]]:
    """Import ``"module:function"``."""
    module, sep, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (module and sep and name):
        raise UsageError(f"decode_fn must be 'module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"decode_fn {spec!r} cannot be imported: {e}") from None


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


# -- the child process -------------------------------------------------------------------------
#
# Parent -> child: ("task", id, path), ("free", slot), ("cancel", id).
# Child -> parent: ("ready", pid), ("shm", slot, name) before creating a block, ("start", id),
# ("chunk", id, slot, (shape, dtype) | frames when slot == -1, pts, src_index, is_repeat, info,
# info_is_new), and one final message per task: ("end", id), ("error", id, pickled exception
# or None, text, traceback) or ("cancelled", id).


def _child_main(conn: Any, shm_prefix: str, decode_fn: str, kwargs: dict[str, Any], n_slots: int,
                use_shm: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    import torch  # the decoder resizes with torch; one thread per child, the encoder needs the cores

    torch.set_num_threads(1)
    ring = _Ring(conn, f"{shm_prefix}{os.getpid()}-", n_slots, use_shm)
    child = _Child(conn, resolve_decode_fn(decode_fn), kwargs, ring)
    try:
        conn.send(("ready", os.getpid()))
        child.serve()
    except (EOFError, OSError):  # the parent closed the pipe or died
        pass
    finally:
        child.ring.unlink_all()


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (a hung decode would
    otherwise outlive it)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class _Child:
    def __init__(self, conn: Any, decode_fn: Callable[..., Iterable[Any]], kwargs: dict[str, Any],
                 ring: _Ring) -> None:
        self.conn, self.decode_fn, self.kwargs, self.ring = conn, decode_fn, kwargs, ring
        self.queue: deque[tuple[int, Any]] = deque()  # (task id, path) not started
        self.current: int | None = None
        self.cancelled = False

    def serve(self) -> None:
        while True:
            while not self.queue:
                self.handle(self.conn.recv())
            self.run(*self.queue.popleft())

    def handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "task":
            self.queue.append((msg[1], msg[2]))
        elif kind == "free":
            self.ring.release(msg[1])
        elif kind == "cancel":
            if msg[1] == self.current:
                self.cancelled = True
            elif any(task_id == msg[1] for task_id, _ in self.queue):
                self.queue = deque(t for t in self.queue if t[0] != msg[1])
                self.conn.send(("cancelled", msg[1]))
            # else: it ended before the cancel came; the parent reads that ending instead

    def poll(self) -> None:
        while self.conn.poll():
            self.handle(self.conn.recv())

    def run(self, task_id: int, path: Any) -> None:
        self.current, self.cancelled = task_id, False
        self.conn.send(("start", task_id))
        chunks: Any = None
        try:
            try:
                chunks = iter(self.decode_fn(path, **self.kwargs))
            except Exception as e:
                return self.send_error(task_id, e)
            sent_info: Any = _NO_INFO
            while True:
                self.poll()
                if self.cancelled:
                    return self.conn.send(("cancelled", task_id))
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as e:
                    return self.send_error(task_id, e)
                slot = self.acquire()
                if slot is None:
                    return self.conn.send(("cancelled", task_id))
                if self.ring.write(slot, chunk.frames):
                    payload: Any = (chunk.frames.shape, chunk.frames.dtype.str)
                else:
                    self.ring.release(slot)
                    slot, payload = -1, np.ascontiguousarray(chunk.frames)
                new_info = chunk.info is not sent_info
                self.conn.send(("chunk", task_id, slot, payload, chunk.pts, chunk.src_index,
                                chunk.is_repeat, chunk.info if new_info else None, new_info))
                sent_info = chunk.info
            self.conn.send(("end", task_id))
        finally:
            self.current = None
            if hasattr(chunks, "close"):
                try:
                    chunks.close()
                except Exception:
                    pass

    def acquire(self) -> int | None:
        """A free block, waiting for the parent to free one; None when cancelled meanwhile."""
        self.poll()  # a cancel that came while the chunk was decoded spares copying it
        while not self.cancelled:
            slot = self.ring.acquire()
            if slot is not None:
                return slot
            self.handle(self.conn.recv())
        return None

    def send_error(self, task_id: int, error: Exception) -> None:
        trace = "".join(traceback.format_exception(error))
        try:
            data: bytes | None = pickle.dumps(error)
        except Exception:
            data = None
        self.conn.send(("error", task_id, data, f"{type(error).__name__}: {error}", trace))


_NO_INFO = object()


class _Ring:
    """A child's shared-memory blocks, one per chunk in flight, reused and grown as needed."""

    def __init__(self, conn: Any, prefix: str, n_slots: int, enabled: bool) -> None:
        self.conn, self.prefix, self.enabled = conn, prefix, enabled
        self.blocks: list[SharedMemory | None] = [None] * n_slots
        self.free: deque[int] = deque(range(n_slots))
        self.n_created = 0

    def acquire(self) -> int | None:
        return self.free.popleft() if self.free else None

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def write(self, slot: int, frames: np.ndarray) -> bool:
        """Copy ``frames`` into block ``slot``; False when no block can be had (send inline)."""
        if not self.enabled:
            return False
        block = self.blocks[slot]
        if block is None or block.size < frames.nbytes:
            self.drop(slot)
            block = self.create(slot, frames.nbytes)
            if block is None:
                return False
        np.ndarray(frames.shape, frames.dtype, buffer=block.buf)[...] = frames
        return True

    def create(self, slot: int, nbytes: int) -> SharedMemory | None:
        size = max(1, -(-nbytes // _MIB)) * _MIB  # whole MiB: fewer regrowths
        name = f"{self.prefix}{slot}-{self.n_created}"
        self.n_created += 1
        self.conn.send(("shm", slot, name))  # before it exists: a killed child's blocks are known
        try:
            block = SharedMemory(name, create=True, size=size)
        except OSError:
            return None
        self.blocks[slot] = block
        try:  # back it with pages now: ENOSPC here rather than SIGBUS on a full /dev/shm
            if hasattr(os, "posix_fallocate") and getattr(block, "_fd", -1) >= 0:
                os.posix_fallocate(block._fd, 0, size)
        except OSError:
            self.drop(slot)
            return None
        return block

    def drop(self, slot: int) -> None:
        block, self.blocks[slot] = self.blocks[slot], None
        if block is not None:
            block.close()
            block.unlink()

    def unlink_all(self) -> None:
        for slot in range(len(self.blocks)):
            try:
                self.drop(slot)
            except OSError:
                pass
