"""Shared-memory blocks that carry decoded frames from a decoder child to its parent.

A child owns a :class:`Ring` of ``max_chunks_in_flight`` blocks reused from chunk to chunk (a
block is replaced by a bigger one when a chunk does not fit); the parent copies frames out
with :func:`copy_out` and hands the block back. Every block of a pool is named
``<shm_prefix><child pid>-<slot>-<n>`` (see :data:`SHM_PREFIX`).

Blocks are registered with the *parent's* resource tracker: the parent passes its tracker's
pipe to each child (:func:`tracker_fd`, :func:`use_tracker`), as multiprocessing does for
its own children. So a block is unlinked by whoever unlinks it first (the child when it ends,
the parent when it kills a child or closes), never early by a tracker of a child that died
while the parent still copies out the chunks it sent, and by the tracker at the latest when
every process of the pool is gone, however they ended.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

SHM_PREFIX = "vqacache-"
"""Every shared-memory block of a pool is named ``vqacache-<pool token>-...``."""
_MIB = 1 << 20


def tracker_fd() -> int:
    """The write end of this process's resource tracker pipe (starting the tracker if needed),
    for :func:`use_tracker` in a child."""
    resource_tracker.ensure_running()
    return resource_tracker.getfd()


def use_tracker(fd: int) -> None:
    """In a child: register blocks with the parent's tracker (``fd`` from :func:`tracker_fd`)."""
    resource_tracker._resource_tracker._fd = fd  # what multiprocessing's spawn does


class Ring:
    """A child's shared-memory blocks, one per chunk in flight, reused and grown as needed.

    ``announce(slot, name)`` is called before a block is created, so that the parent knows the
    names of a child it has to kill.
    """

    def __init__(self, announce: Callable[[int, str], None], prefix: str, n_slots: int,
                 enabled: bool) -> None:
        self.announce, self.prefix, self.enabled = announce, prefix, enabled
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
        self.announce(slot, name)  # before it exists: a killed child's blocks are known
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


def copy_out(maps: dict[int, SharedMemory], slot: int, name: str, shape: tuple[int, ...],
             dtype: str) -> np.ndarray:
    """The parent's side: copy a chunk out of block ``slot`` (now named ``name``), keeping the
    mapping in ``maps`` for the next chunk in that slot."""
    block = maps.get(slot)
    if block is None or block.name != name:  # the child replaced it with a bigger one
        if block is not None:
            block.close()
        block = maps[slot] = SharedMemory(name)
    view = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)
    frames = view.copy()
    del view  # no view may outlive the mapping
    return frames


def unlink(name: str) -> None:
    """Unlink a block by name, whether or not it still exists."""
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
