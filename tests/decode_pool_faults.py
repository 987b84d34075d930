"""Misbehaving decode functions for tests/test_decode_pool.py, run inside DecodePool children.

:func:`decode` has iter_decode_at_fps's signature and picks a behaviour from the first word
of the file name (such files need not exist):

- ``hang-*``: sleeps forever before the first chunk; ``stall-*``: one chunk, then forever.
- ``segv-*``: kills itself with SIGSEGV; ``exit-*``: ``os._exit(139)``.
- ``raise-*``: one chunk, then ``DecodeError("decode-error", RAISED_MESSAGE)``.
- ``value-*``: ``ValueError(RAISED_MESSAGE)``; ``odd-*``: :class:`OddError` (a type of its own).
- ``drip-*``: a chunk every DRIP_S seconds until ``<path>.release`` exists, then ends.
- ``meet-<n>-*``: creates ``<path>.started``, waits until its folder holds n ``*.started``
  files (n videos decoded at the same time), then one chunk.
- ``fake-<n>-*``: n chunks at once.
- ``grow-*``: 3 chunks, each bigger than the last (the child must replace its blocks).
- ``count-<n>``: n chunks; before yielding chunk k it writes k + 1 to ``<path>.progress``.
- anything else: the real :func:`~vqacache.featurize.decode.iter_decode_at_fps`.

Files named ``<path>.<event>`` hold the pid of the child that created them (written whole,
then renamed into place), so a test can wait for an event instead of sleeping. A ``stall-*``
path with a folder part also creates ``<path>.stalled`` once its child is hanging for good: the
child looks at its pipe (for a cancel) before asking the decoder for the next chunk, so after
that file exists nothing the parent sends can stop the hang.

Fake chunks are deterministic (see :func:`fake_chunk`), so a test can compare what comes out
of the pool with ``list(decode(name))`` run in the test process.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vqacache.featurize.decode import DEFAULT_FPS, DecodedFrames, DecodeError, iter_decode_at_fps

DRIP_S = 0.05
POLL_S = 0.005
RAISED_MESSAGE = "broke after one chunk (injected)"


def decode(path, fps=DEFAULT_FPS, short_side=256, chunk_frames=64) -> Iterator[DecodedFrames]:
    name = Path(path).name
    kind, _, rest = name.partition("-")
    if kind == "hang":
        _sleep_forever()
    elif kind == "stall":
        yield fake_chunk(name, 0)
        if os.path.dirname(os.fspath(path)):  # bare names (no folder) leave no file behind
            _announce(path, "stalled")
        _sleep_forever()
    elif kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "exit":
        os._exit(139)
    elif kind == "raise":
        yield fake_chunk(name, 0)
        raise DecodeError("decode-error", RAISED_MESSAGE)
    elif kind == "value":
        raise ValueError(RAISED_MESSAGE)
    elif kind == "odd":
        raise OddError(RAISED_MESSAGE)
    elif kind == "drip":
        for k in itertools.count():
            yield fake_chunk(name, k)
            if Path(f"{path}.release").exists():
                return
            time.sleep(DRIP_S)
    elif kind == "meet":
        n = int(rest.partition("-")[0])
        _announce(path, "started")
        while len(list(Path(path).parent.glob("*.started"))) < n:
            time.sleep(POLL_S)
        yield fake_chunk(name, 0)
    elif kind == "fake":
        for k in range(int(rest.partition("-")[0])):
            yield fake_chunk(name, k)
    elif kind == "count":
        for k in range(int(rest)):
            Path(f"{path}.progress").write_text(str(k + 1))
            yield fake_chunk(name, k)
    elif kind == "grow":
        for k in range(3):
            yield fake_chunk(name, k, size=(1 + k) * 320)
    else:
        yield from iter_decode_at_fps(path, fps, short_side, chunk_frames)


class OddError(Exception):
    """An exception type only this module knows."""


def fake_chunk(name: str, k: int, size: int = 8) -> DecodedFrames:
    """Chunk k of a fake video: 2 frames of (size, size + 2, 3) uint8 depending on name and k."""
    seed = sum(name.encode()) + 1000 * k
    frames = np.random.default_rng(seed).integers(0, 256, (2, size, size + 2, 3), dtype=np.uint8)
    return DecodedFrames(
        frames=frames,
        pts=np.array([2 * k, 2 * k + 1], dtype=np.float64) / 7.5,
        src_index=np.array([2 * k, 2 * k + 1], dtype=np.int64),
        is_repeat=np.array([False, k % 2 == 1]),
        info=f"fake info of {name}",
    )


def _announce(path, event: str) -> None:
    """Create ``<path>.<event>`` holding this process's pid, whole or not at all."""
    tmp = Path(f"{path}.{event}.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, f"{path}.{event}")


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)
