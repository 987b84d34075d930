"""Rows of a store's arrays read with ``os.pread``, past zarr's per-call machinery (the
loader's hot path).

**Why.** Profiled on ``benchmarks/loader.py``'s synthetic store, one training sample made six
zarr reads (cls, patch, question text, candidates, teacher probabilities and pts) of about
1 ms each, ~7 ms a sample for ~20 KB of data: zarr v3 runs every read as a coroutine on its
I/O thread (thread hand-off, indexer and codec pipeline set-up), whatever its size. With two
DataLoader workers sharing two cores with the training step, those milliseconds were the
loader's deficit (``store_vs_memory`` 0.15 on a quiet machine).

**What.** The store writes its feature arrays uncompressed and sharded along time (codec
``sharding_indexed``: inner ``bytes`` little-endian, index ``bytes`` + ``crc32c`` at the end;
:mod:`vqacache.cache_spec.layout`) and its question-bundle arrays as one uncompressed chunk
(codec ``bytes``). For exactly these layouts, on a local store, and when a chunk spans every
axis but the first, a row's bytes sit at a computable offset of one file: :class:`RowReader`
reads a shard's index once per process (its crc32c checked, as zarr does) and then the
requested rows with one ``pread`` per run of nearby rows (rows closer than
:data:`MERGE_GAP_BYTES` are read in one slice and the gap dropped), so the N frames of a
video cost one or a few reads. A missing chunk or chunk file reads as the fill value, as in
zarr. Any other layout (compressed: the ``pts`` time arrays; other codecs; big-endian; remote
stores) falls back to zarr's ``get_orthogonal_selection``: the same values, at zarr's speed.
``tests/test_heads_row_reads.py`` compares both readers on every array kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from vqacache.cache_spec.errors import StoreError

MERGE_GAP_BYTES = 1 << 16
"""Two requested rows of one file closer than this are read in one ``pread`` (gap discarded)."""
_EMPTY = 2**64 - 1  # a shard index's offset and length of a chunk never written


class CorruptShard(StoreError):
    """A shard's index fails its crc32c (the file was damaged after it was published)."""


@dataclass(frozen=True)
class _Layout:
    """Where rows of an array live: ``directory/c/<k>/0/...`` holds rows ``[k F, (k + 1) F)``."""

    directory: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    file_rows: int  # F: rows per chunk file (shard or chunk)
    inner_rows: int | None  # rows per inner chunk of a shard; None: unsharded
    sep: str
    row_items: int  # items of one row: prod(shape[1:])
    row_bytes: int

    def file(self, k: int) -> str:
        return str(self.directory / self.sep.join(["c", str(k), *(["0"] * (len(self.shape) - 1))]))


def _little_bytes(codec: Any) -> bool:
    return type(codec).__name__ == "BytesCodec" and getattr(getattr(codec, "endian", None), "value", "little") in (
        "little", None)


def _layout(array: Any) -> _Layout | None:
    """The fast layout of a zarr v3 array, or None when it has another (then zarr reads it)."""
    try:
        meta = array.metadata
        store = array.store
        if type(store).__name__ != "LocalStore" or getattr(meta, "zarr_format", None) != 3:
            return None
        if type(meta.chunk_key_encoding).__name__ != "DefaultChunkKeyEncoding" or not meta.shape:
            return None
        outer = tuple(meta.chunk_grid.chunk_shape)
        shape = tuple(meta.shape)
        codecs = tuple(meta.codecs)
        inner_rows = None
        if len(codecs) == 1 and type(codecs[0]).__name__ == "ShardingCodec":
            shard = codecs[0]
            inner = tuple(shard.chunk_shape)
            index_ok = (len(shard.index_codecs) == 2 and _little_bytes(shard.index_codecs[0])
                        and type(shard.index_codecs[1]).__name__ == "Crc32cCodec")
            if (len(shard.codecs) != 1 or not _little_bytes(shard.codecs[0]) or not index_ok
                    or shard.index_location.value != "end" or tuple(inner[1:]) != outer[1:]):
                return None
            inner_rows = inner[0]
        elif not (len(codecs) == 1 and _little_bytes(codecs[0])):
            return None
        if tuple(outer[1:]) != shape[1:]:  # a chunk wider than the array: rows are not contiguous
            return None
        dtype = np.dtype(str(array.dtype)).newbyteorder("<")
        directory = Path(store.root) / array.path if array.path else Path(store.root)
        items = int(np.prod(shape[1:], dtype=np.int64))
        return _Layout(directory, shape, dtype, meta.fill_value, outer[0], inner_rows, meta.chunk_key_encoding.separator,
                       items, items * dtype.itemsize)
    except (AttributeError, TypeError, ValueError):
        return None


class RowReader:
    """Rows (axis 0) of one zarr array: ``reader.rows(index)`` -> ``array[index]`` as numpy.

    Fast (``pread``) for the store's uncompressed layouts, zarr otherwise; see the module doc.
    ``fast`` says which. Holds no open file (nor, when fast, the zarr array); pickles
    (DataLoader workers) without its caches.
    """

    def __init__(self, array: Any) -> None:
        self.layout = _layout(array)
        self.fast = self.layout is not None
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.array = None if self.fast else array  # zarr's objects are heavy: kept only to fall back
        self._indexes: dict[int, np.ndarray] = {}  # shard -> (inner chunks, 2) offsets and lengths
        self._files: dict[int, str] = {}  # chunk file k -> its path

    def rows(self, index: np.ndarray | int) -> np.ndarray:
        """``array[index]`` for an int (one row, shape[1:]) or int array (n,) -> (n, *shape[1:])."""
        scalar = np.ndim(index) == 0
        if scalar and self.layout is not None:  # one row (a question's text, candidates, teacher rows)
            return self._one_row(int(index))
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"rows {idx.min()}..{idx.max()} outside an array of {self.shape[0]} rows")
        if self.layout is None:
            out = np.asarray(self.array.get_orthogonal_selection((idx, *[slice(None)] * (len(self.shape) - 1))))
            return out[0] if scalar else out
        return self._fast_rows(idx)

    def _one_row(self, row: int) -> np.ndarray:
        """``array[row]`` with one ``pread`` and plain integer arithmetic (no numpy bookkeeping)."""
        lay = self.layout
        assert lay is not None
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} outside an array of {self.shape[0]} rows")
        out = np.empty(lay.shape[1:], dtype=lay.dtype)
        k, local = divmod(row, lay.file_rows)
        offset = local * lay.row_bytes
        if lay.inner_rows is not None:
            j, within = divmod(local, lay.inner_rows)
            index = self._shard_index(k)
            if index is None or (int(index[j, 0]) == _EMPTY and int(index[j, 1]) == _EMPTY):
                out[...] = lay.fill
                return out
            offset = int(index[j, 0]) + within * lay.row_bytes
        if not _pread_into(self._file(k), offset, out):
            out[...] = lay.fill
        return out.astype(lay.dtype.newbyteorder("="), copy=False)

    def __getitem__(self, index: np.ndarray | int) -> np.ndarray:
        """``reader[i]``: :meth:`rows` (axis 0 only), so a reader stands in for an array there."""
        return self.rows(index)

    # -- fast path ---------------------------------------------------------------------------

    def _fast_rows(self, idx: np.ndarray) -> np.ndarray:
        lay = self.layout
        assert lay is not None
        if len(idx) == 1 or bool((idx[1:] > idx[:-1]).all()):  # sorted, distinct: read in place
            uniq, inverse = idx, None
        else:
            uniq, inverse = np.unique(idx, return_inverse=True)  # sorted rows, read once each
        data = np.empty((len(uniq), lay.row_items), dtype=lay.dtype)  # (n, row items)
        files, offsets = self._locate(uniq)  # (n,), (n,); file -1: a chunk never written
        gap = np.diff(offsets) - lay.row_bytes  # bytes between consecutive rows
        cut = (np.diff(files) != 0) | (gap < 0) | (gap > MERGE_GAP_BYTES)
        bounds = [0, *(np.flatnonzero(cut) + 1).tolist(), len(uniq)]
        for i, j in zip(bounds[:-1], bounds[1:]):  # a run: one file, nearby rows
            k, start = int(files[i]), int(offsets[i])
            stop = int(offsets[j - 1]) + lay.row_bytes
            if k < 0:
                data[i:j] = lay.fill
            elif stop - start == (j - i) * lay.row_bytes:  # contiguous: straight into the output
                if not _pread_into(self._file(k), start, data[i:j]):
                    data[i:j] = lay.fill
            else:  # nearby rows with gaps: one read, the gaps dropped
                buf = np.empty((stop - start) // lay.dtype.itemsize, dtype=lay.dtype)
                if _pread_into(self._file(k), start, buf):
                    first = (offsets[i:j] - start) // lay.dtype.itemsize  # (j - i,) each row's first item
                    data[i:j] = buf[first[:, None] + np.arange(lay.row_items)]
                else:
                    data[i:j] = lay.fill
        if inverse is not None:
            data = data[inverse.reshape(-1)]
        return data.reshape(len(idx), *lay.shape[1:]).astype(lay.dtype.newbyteorder("="), copy=False)

    def _file(self, k: int) -> str:
        if k not in self._files:
            assert self.layout is not None
            self._files[k] = self.layout.file(k)
        return self._files[k]

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunk file k (n,) and byte offset (n,) of each of ``rows`` (n,) sorted; k -1 where
        the row's chunk (or its whole shard) was never written."""
        lay = self.layout
        assert lay is not None
        files, local = np.divmod(rows, lay.file_rows)
        if lay.inner_rows is None:
            return files, local * lay.row_bytes
        inner, within = np.divmod(local, lay.inner_rows)
        offsets = np.zeros(len(rows), np.int64)
        for k in np.unique(files).tolist():
            sel = files == k
            index = self._shard_index(k)  # (inner chunks, 2) uint64 or None
            if index is None:
                files[sel] = -1
                continue
            start, length = index[inner[sel], 0], index[inner[sel], 1]
            empty = (start == _EMPTY) & (length == _EMPTY)
            offsets[sel] = np.where(empty, 0, start).astype(np.int64) + within[sel] * lay.row_bytes
            files[np.flatnonzero(sel)[empty]] = -1
        return files, offsets

    def _shard_index(self, k: int) -> np.ndarray | None:
        if k not in self._indexes:
            lay = self.layout
            assert lay is not None and lay.inner_rows is not None
            n_inner = -(-lay.file_rows // lay.inner_rows)
            size = n_inner * 16 + 4
            path = lay.file(k)
            try:
                with open(path, "rb") as f:
                    f.seek(-size, os.SEEK_END)
                    raw = f.read(size)
            except FileNotFoundError:
                return None
            except OSError as exc:  # shorter than an index
                raise CorruptShard(f"{path}: cannot read its shard index ({exc})") from None
            if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise CorruptShard(f"{path}: its shard index fails its crc32c (damaged file)")
            self._indexes[k] = np.frombuffer(raw[:-4], dtype="<u8").reshape(n_inner, 2)
        return self._indexes[k]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_indexes": {}, "_files": {}}


def _pread_into(path: str, offset: int, out: np.ndarray) -> bool:
    """Fill ``out`` (C-contiguous) with its size in bytes of ``path`` from ``offset``; False when the
    file does not exist (never written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        got = os.preadv(fd, [memoryview(out).cast("B")], offset)
    finally:
        os.close(fd)
    if got != out.nbytes:
        raise StoreError(f"{path}: {got} bytes at offset {offset}, expected {out.nbytes} (truncated chunk)")
    return True
