"""Fill every encoder forward with frames, across video boundaries.

Decoded chunks of consecutive videos are queued; their *unique* frames (repeats are encoded
once, see :class:`RepeatExpander`) are cut into batches of exactly ``batch_size`` frames,
whatever video they come from. Results are scattered back to their chunks; a chunk whose
frames are all encoded is expanded to every output frame and handed to its video's sink in
order. Only the last batch of a run (``flush``) may be smaller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vqacache.featurize.decode.repeats import RepeatExpander


class ChunkSink(Protocol):
    """Receives a video's encoded chunks in order (e.g. a store's video writer)."""

    def append(self, **blocks: Any) -> None: ...


@dataclass
class _Pending:
    video: _VideoState
    chunk: Any  # DecodedFrames
    frames: np.ndarray  # (U, H, W, 3) unique frames of the chunk
    parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    done: int = 0  # unique frames already encoded

    @property
    def remaining(self) -> int:
        return len(self.frames) - self.done


@dataclass
class _VideoState:
    sink: ChunkSink
    expander: RepeatExpander = field(default_factory=RepeatExpander)
    pending: int = 0  # chunks queued, not yet delivered
    closed: bool = False  # no more chunks will come
    on_complete: Callable[[], None] | None = None
    dropped: bool = False


class FrameBatcher:
    """Queue chunks from any number of videos; encode in full batches; deliver in order.

    ``encode``: (n, H, W, 3) uint8 -> {name: (n, ...) tensor}. Frames of one batch must share
    one size: chunks of a different size than the queue's head are encoded separately.
    ``on_error(exc, sinks)``: when given, an exception of ``encode`` drops every video with
    frames in that batch and reports their sinks there, and batching goes on; without it the
    exception propagates.
    """

    def __init__(
        self, encode: Callable[[np.ndarray], dict[str, torch.Tensor]], batch_size: int,
        on_error: Callable[[Exception, list[ChunkSink]], None] | None = None,
    ) -> None:
        self.encode = encode
        self.on_error = on_error
        self.batch_size = batch_size
        self.queue: deque[_Pending] = deque()
        self.frames_encoded = 0
        self.forwards = 0

    def open_video(self, sink: ChunkSink, on_complete: Callable[[], None] | None = None) -> _VideoState:
        """Register a video; returns the handle to pass to :meth:`add` and :meth:`close_video`."""
        return _VideoState(sink=sink, on_complete=on_complete)

    def add(self, video: _VideoState, chunk: Any) -> None:
        """Queue one decoded chunk (DecodedFrames) of ``video``; encodes every full batch."""
        video.pending += 1
        self.queue.append(_Pending(video, chunk, chunk.frames[~chunk.is_repeat]))
        self._run(final=False)

    def close_video(self, video: _VideoState) -> None:
        """No more chunks for ``video``; it completes once its queued chunks are delivered."""
        video.closed = True
        self._deliver()
        self._maybe_complete(video)

    def drop_video(self, video: _VideoState) -> None:
        """Forget ``video``'s queued chunks (its decoding failed); nothing more is delivered."""
        video.dropped = True
        self.queue = deque(p for p in self.queue if p.video is not video)

    def flush(self) -> None:
        """Encode everything still queued, in a last partial batch if need be."""
        self._run(final=True)

    def _queued_frames(self) -> int:
        return sum(p.remaining for p in self.queue)

    def _run(self, final: bool) -> None:
        while self.queue and (self._queued_frames() >= self.batch_size or (final and self._queued_frames() > 0)):
            self._encode_one_batch()
        self._deliver()

    def _encode_one_batch(self) -> None:
        take: list[tuple[_Pending, int, int]] = []  # (pending, start, stop) in its unique frames
        shape = None
        room = self.batch_size
        for p in self.queue:
            if room == 0:
                break
            if p.remaining == 0:
                continue
            if shape is None:
                shape = p.frames.shape[1:]
            elif p.frames.shape[1:] != shape:
                break  # another frame size: next batch
            n = min(room, p.remaining)
            take.append((p, p.done, p.done + n))
            room -= n
        frames = np.concatenate([p.frames[a:b] for p, a, b in take])
        try:
            out = self.encode(frames)
        except Exception as exc:
            if self.on_error is None:
                raise
            videos = list({id(p.video): p.video for p, _, _ in take}.values())
            for video in videos:
                self.drop_video(video)
            self.on_error(exc, [video.sink for video in videos])
            return
        self.forwards += 1
        self.frames_encoded += len(frames)
        offset = 0
        for p, a, b in take:
            for name, value in out.items():
                p.parts.setdefault(name, []).append(value[offset : offset + b - a])
            offset += b - a
            p.done = b
        self._deliver()

    def _deliver(self) -> None:
        """Hand fully encoded chunks at the head of the queue to their sinks, in order."""
        while self.queue and self.queue[0].remaining == 0:
            p = self.queue.popleft()
            unique = {name: torch.cat(parts) for name, parts in p.parts.items()}
            features = p.video.expander.expand(unique, p.chunk.is_repeat)
            p.video.sink.append(pts=p.chunk.pts, src_index=p.chunk.src_index, is_repeat=p.chunk.is_repeat, **features)
            p.video.pending -= 1
            self._maybe_complete(p.video)

    @staticmethod
    def _maybe_complete(video: _VideoState) -> None:
        if video.closed and video.pending == 0 and not video.dropped and video.on_complete is not None:
            callback, video.on_complete = video.on_complete, None
            callback()
