"""The messages between a :class:`~vqacache.featurize.decode.pool.DecodePool` and its decoder
children, and the pipe that carries them.

Parent -> child: :class:`Task`, :class:`Free`, :class:`Cancel`.
Child -> parent: :class:`Ready`, :class:`Shm` (before creating a block), :class:`Start`,
:class:`Chunk`, and one final message per task: :class:`End`, :class:`Error` or
:class:`Cancelled`.

On the wire a message is a JSON header (its type and fields) followed by the raw bytes of the
numpy arrays it holds (``pts``, ``src_index``, ``is_repeat``, and the frames of a chunk sent
inline): ``<u32 header length><u32 array count><header>`` then ``<u64 length><bytes>`` per
array. No pickle: a child decodes untrusted files, and nothing it sends is executed. A
:class:`~vqacache.featurize.decode.frames.VideoInfo` travels as its fields; other ``info``
values (test decoders) must be JSON values. An exception raised in a child travels as its
type's name, message and traceback: a ``DecodeError`` is rebuilt with its reason, a builtin
exception as itself, any other one as a ``RuntimeError`` naming it (:func:`rebuild_error`).

A child is started with its configuration as JSON on its command line: the decode function as
``"module:function"`` (:func:`resolve_decode_fn`) and its keyword arguments (:func:`config_kwargs`).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import struct
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.decode.frames import DecodedFrames, DecodeError, VideoInfo

_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<Q")
_READ = 1 << 20


@dataclass(frozen=True)
class Task:
    """Decode ``path`` (parent -> child)."""

    id: int
    path: str


@dataclass(frozen=True)
class Free:
    """The parent copied out the chunk in block ``slot``: it may be reused (parent -> child)."""

    slot: int


@dataclass(frozen=True)
class Cancel:
    """Stop (or never start) task ``id`` (parent -> child)."""

    id: int


@dataclass(frozen=True)
class Ready:
    """The child imported its decoder and waits for tasks."""

    pid: int


@dataclass(frozen=True)
class Shm:
    """Block ``slot`` is now the shared memory named ``name`` (sent before it is created, so
    that the parent can unlink the blocks of a child it kills)."""

    slot: int
    name: str


@dataclass(frozen=True)
class Start:
    id: int


@dataclass(frozen=True)
class Chunk:
    """One chunk of task ``id``: its frames are in block ``slot`` (``shape``, ``dtype``), or in
    ``frames`` when ``slot`` is -1 (no shared memory to be had, or the pipe transport)."""

    id: int
    slot: int
    shape: tuple[int, ...]
    dtype: str
    pts: np.ndarray
    src_index: np.ndarray
    is_repeat: np.ndarray
    info: Any
    """The VideoInfo when ``new_info``, else None (the previous chunk's holds)."""
    new_info: bool
    frames: np.ndarray | None = None

    @property
    def inline(self) -> bool:
        return self.slot < 0


@dataclass(frozen=True)
class End:
    id: int


@dataclass(frozen=True)
class Error:
    """Task ``id`` failed with an exception in the child."""

    id: int
    type: str
    """``module.qualname`` of the exception's type."""
    message: str
    trace: str
    reason: str | None = None
    """A DecodeError's reason; None for any other exception."""

    @classmethod
    def of(cls, task_id: int, error: BaseException) -> Error:
        kind = type(error)
        return cls(
            id=task_id,
            type=f"{kind.__module__}.{kind.__qualname__}",
            message=str(error),
            trace="".join(traceback.format_exception(error)),
            reason=error.reason if isinstance(error, DecodeError) else None,
        )


@dataclass(frozen=True)
class Cancelled:
    id: int


Message = Task | Free | Cancel | Ready | Shm | Start | Chunk | End | Error | Cancelled
FINAL = (End, Error, Cancelled)
"""Messages that end a task."""
_TYPES: dict[str, type] = {t.__name__: t for t in (Task, Free, Cancel, Ready, Shm, Start, Chunk, End,
                                                    Error, Cancelled)}


def rebuild_error(msg: Error, pid: int) -> BaseException:
    """The exception a child reported: a DecodeError as it was raised, a builtin exception of the
    same type, or a RuntimeError naming the type; the child's traceback is in a note."""
    if msg.reason is not None:
        return DecodeError(msg.reason, msg.message)
    module, _, name = msg.type.rpartition(".")
    builtin = __builtins__.get(name) if isinstance(__builtins__, dict) else getattr(__builtins__, name, None)
    error: BaseException | None = None
    if module == "builtins" and isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            error = builtin(msg.message)
        except Exception:  # noqa: BLE001 - a constructor that wants other arguments
            error = None
    if error is None:
        return RuntimeError(f"decode worker pid {pid}: {msg.type}: {msg.message}\n{msg.trace}")
    error.add_note(f"raised in decode worker pid {pid}:\n{msg.trace}")
    return error


# -- the child's configuration --------------------------------------------------------------


def resolve_decode_fn(spec: str) -> Callable[..., Iterable[DecodedFrames]]:
    """Import ``"module:function"``."""
    module, sep, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (module and sep and name):
        raise UsageError(f"decode_fn must be 'module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"decode_fn {spec!r} cannot be imported: {e}") from None


def config_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Decoder keyword arguments as JSON values (a Fraction as its text, "15/2")."""
    return {k: str(v) if isinstance(v, Fraction) else v for k, v in kwargs.items()}


# -- encoding ------------------------------------------------------------------------------------


def encode(msg: Message) -> list[bytes | memoryview]:
    """The wire form of ``msg``: buffers to write one after the other."""
    arrays: list[np.ndarray] = []

    def value(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            arrays.append(np.ascontiguousarray(v))
            return {"$array": len(arrays) - 1, "dtype": v.dtype.str, "shape": list(v.shape)}
        if isinstance(v, VideoInfo):
            return {"$videoinfo": asdict(v)}
        if isinstance(v, Fraction):
            return {"$fraction": str(v)}
        if isinstance(v, tuple):
            return [value(x) for x in v]
        return v

    body = {f.name: value(getattr(msg, f.name)) for f in fields(msg)}
    header = json.dumps({"$type": type(msg).__name__, **body}, separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [_HEAD.pack(len(header), len(arrays)), header]
    for array in arrays:
        data = memoryview(array).cast("B") if array.size else memoryview(b"")
        parts += [_LEN.pack(data.nbytes), data]
    return parts


def _decode(header: dict[str, Any], blobs: list[bytes]) -> Message:
    def value(v: Any) -> Any:
        if isinstance(v, dict):
            if "$array" in v:
                raw = blobs[v["$array"]]
                return np.frombuffer(raw, np.dtype(v["dtype"])).reshape(v["shape"]).copy() \
                    if raw else np.empty(v["shape"], np.dtype(v["dtype"]))
            if "$videoinfo" in v:
                return VideoInfo(**v["$videoinfo"])
            if "$fraction" in v:
                return Fraction(v["$fraction"])
        return v

    kind = _TYPES[header.pop("$type")]
    values = {k: value(v) for k, v in header.items()}
    if kind is Chunk:
        values["shape"] = tuple(values["shape"])
    return kind(**values)


class Channel:
    """One direction in, one out, over two pipe file descriptors; whole messages only.

    :meth:`fileno` is the reading end, for ``multiprocessing.connection.wait``; a message may
    already be buffered here while the descriptor reads as empty, so check :meth:`buffered`
    before waiting.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._buf = bytearray()
        self._eof = False

    def fileno(self) -> int:
        return self.read_fd

    def send(self, msg: Message) -> None:
        """Write ``msg`` whole (blocks while the pipe is full). OSError when the other end is gone."""
        for part in encode(msg):
            view = memoryview(part).cast("B")
            while view.nbytes:
                view = view[os.write(self.write_fd, view):]

    def buffered(self) -> bool:
        """A whole message (or the end of the pipe) is waiting in our buffer."""
        return self._eof or self._complete() is not None

    def poll(self) -> bool:
        """Whether :meth:`recv` would return (or raise EOFError) without waiting."""
        while not self.buffered():
            readable, _, _ = select.select([self.read_fd], [], [], 0)
            if not readable:
                return False
            self._fill()
        return True

    def recv(self) -> Message:
        """The next message, waiting for it; EOFError when the other end closed."""
        while (end := self._complete()) is None:
            if self._eof:
                raise EOFError("the pipe closed")
            self._fill()
        header_len, n_arrays = _HEAD.unpack_from(self._buf, 0)
        pos = _HEAD.size
        header = json.loads(bytes(self._buf[pos:pos + header_len]))
        pos += header_len
        blobs = []
        for _ in range(n_arrays):
            (size,) = _LEN.unpack_from(self._buf, pos)
            pos += _LEN.size
            blobs.append(bytes(self._buf[pos:pos + size]))
            pos += size
        del self._buf[:end]
        return _decode(header, blobs)

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass

    def _fill(self) -> None:
        data = os.read(self.read_fd, max(_READ, self._missing()))
        if data:
            self._buf += data
        else:
            self._eof = True

    def _missing(self) -> int:
        end = self._complete(need=True)
        return max(0, end - len(self._buf)) if end else 0

    def _complete(self, need: bool = False) -> int | None:
        """The length of the first message when it is whole in the buffer, else None (with
        ``need``: its length once known, or None)."""
        buf = self._buf
        if len(buf) < _HEAD.size:
            return None
        header_len, n_arrays = _HEAD.unpack_from(buf, 0)
        pos = _HEAD.size + header_len
        for _ in range(n_arrays):
            if len(buf) < pos + _LEN.size:
                return None
            (size,) = _LEN.unpack_from(buf, pos)
            pos += _LEN.size + size
        if len(buf) < pos:
            return pos if need else None
        return pos

