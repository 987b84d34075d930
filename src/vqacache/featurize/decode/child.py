"""The decoder child: ``python -m vqacache.featurize.decode.child <config JSON>``.

Started by :class:`~vqacache.featurize.decode.pool.DecodePool` with :mod:`subprocess`, not
:mod:`multiprocessing`: a plain subprocess may be started by a daemonic process (a Dask
worker under its nanny, dask-jobqueue's default), which multiprocessing refuses. It speaks
:mod:`~vqacache.featurize.decode.protocol` messages over two pipes whose descriptors the
config names, and puts frames in its :class:`~vqacache.featurize.decode.ring.Ring`.
It decodes the videos it is sent one after the other.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import numpy as np

from vqacache.featurize.decode.protocol import (
    Cancel,
    Cancelled,
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
    resolve_decode_fn,
)
from vqacache.featurize.decode.ring import Ring, use_tracker


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(config["parent_pid"])
    sys.path[:] = config["sys_path"]  # decode_fn may live in any module the parent can import
    use_tracker(config["tracker_fd"])
    conn = Channel(config["read_fd"], config["write_fd"])
    import torch  # the decoder resizes with torch; one thread per child, the encoder needs the cores

    torch.set_num_threads(1)
    kwargs = {k: Fraction(v) if k in ("fps", "frames_fps") and isinstance(v, str) else v
              for k, v in config["kwargs"].items()}
    ring = Ring(lambda slot, name: conn.send(Shm(slot, name)),
                f"{config['shm_prefix']}{os.getpid()}-", config["n_slots"], config["use_shm"])
    child = Child(conn, resolve_decode_fn(config["decode_fn"]), kwargs, ring)
    try:
        conn.send(Ready(os.getpid()))
        child.serve()
    except (EOFError, OSError):  # the parent closed the pipe or died
        pass
    finally:
        ring.unlink_all()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (a hung decode would
    otherwise outlive it)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)


class Child:
    """The child's loop: take tasks, decode them in turn, honour frees and cancels."""

    def __init__(self, conn: Channel, decode_fn: Callable[..., Iterable[Any]], kwargs: dict[str, Any],
                 ring: Ring) -> None:
        self.conn, self.decode_fn, self.kwargs, self.ring = conn, decode_fn, kwargs, ring
        self.queue: deque[Task] = deque()  # not started
        self.current: int | None = None
        self.cancelled = False

    def serve(self) -> None:
        while True:
            while not self.queue:
                self.handle(self.conn.recv())
            self.run(self.queue.popleft())

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Task):
            self.queue.append(msg)
        elif isinstance(msg, Free):
            self.ring.release(msg.slot)
        elif isinstance(msg, Cancel):
            if msg.id == self.current:
                self.cancelled = True
            elif any(task.id == msg.id for task in self.queue):
                self.queue = deque(t for t in self.queue if t.id != msg.id)
                self.conn.send(Cancelled(msg.id))
            # else: it ended before the cancel came; the parent reads that ending instead
        else:
            raise AssertionError(f"unexpected message {msg!r}")

    def poll(self) -> None:
        while self.conn.poll():
            self.handle(self.conn.recv())

    def run(self, task: Task) -> None:
        self.current, self.cancelled = task.id, False
        self.conn.send(Start(task.id))
        chunks: Any = None
        try:
            try:
                chunks = iter(self.decode_fn(task.path, **self.kwargs))
            except Exception as e:
                return self.conn.send(Error.of(task.id, e))
            sent_info: Any = _NO_INFO
            while True:
                self.poll()
                if self.cancelled:
                    return self.conn.send(Cancelled(task.id))
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as e:
                    return self.conn.send(Error.of(task.id, e))
                slot = self.acquire()
                if slot is None:
                    return self.conn.send(Cancelled(task.id))
                frames: np.ndarray | None = None
                if not self.ring.write(slot, chunk.frames):
                    self.ring.release(slot)
                    slot, frames = -1, np.ascontiguousarray(chunk.frames)
                new_info = chunk.info is not sent_info
                self.conn.send(Chunk(
                    id=task.id, slot=slot, shape=tuple(chunk.frames.shape), dtype=chunk.frames.dtype.str,
                    pts=chunk.pts, src_index=chunk.src_index, is_repeat=chunk.is_repeat,
                    info=chunk.info if new_info else None, new_info=new_info, frames=frames,
                ))
                sent_info = chunk.info
            self.conn.send(End(task.id))
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


_NO_INFO = object()

if __name__ == "__main__":
    main(sys.argv[1:])
