"""Decoding videos into frames at a fixed rate, in child processes beside the model.

- :mod:`~vqacache.featurize.decode.frames`: the output types, :class:`DecodeError`, the resize.
- :mod:`~vqacache.featurize.decode.frame_plan`: which source frame each output frame shows.
- :mod:`~vqacache.featurize.decode.video`: decoding a file (or a folder of frames, through
  :mod:`~vqacache.featurize.decode.frame_folder`).
- :mod:`~vqacache.featurize.decode.repeats`: repeated frames encoded once.
- :mod:`~vqacache.featurize.decode.pool`: :class:`DecodePool`, the parent's scheduler of
  decoder children; :mod:`~vqacache.featurize.decode.child` their loop,
  :mod:`~vqacache.featurize.decode.protocol` their messages,
  :mod:`~vqacache.featurize.decode.ring` the shared memory that carries the frames.

The names most callers need are importable from here (``from vqacache.featurize.decode
import DecodeError, decode_at_fps``).
"""

from vqacache.featurize.decode.frames import (
    DECODE_ERROR_REASONS,
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_FPS,
    DEFAULT_SHORT_SIDE,
    DecodedFrames,
    DecodeError,
    VideoInfo,
    output_size,
    resize_short_side,
)
from vqacache.featurize.decode.pool import DecodePool, DecodePoolError, PoolStats, VideoStream
from vqacache.featurize.decode.video import BACKENDS, Orientation, decode_at_fps, iter_decode_at_fps

__all__ = [
    "BACKENDS",
    "DECODE_ERROR_REASONS",
    "DEFAULT_CHUNK_FRAMES",
    "DEFAULT_FPS",
    "DEFAULT_SHORT_SIDE",
    "DecodePool",
    "DecodePoolError",
    "DecodedFrames",
    "DecodeError",
    "Orientation",
    "PoolStats",
    "VideoInfo",
    "VideoStream",
    "decode_at_fps",
    "iter_decode_at_fps",
    "output_size",
    "resize_short_side",
]
