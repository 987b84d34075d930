"""RowReader (heads/row_reads.py) against zarr's own reads of the same arrays.

Every expected value is zarr's ``get_orthogonal_selection`` (an independent reader of the
format) or the numpy array written. Mutations tried (each fails a test here):

1. ``_locate`` without ``within * row_bytes`` (every row of an inner chunk reads its first row):
   ``test_matches_zarr_on_every_store_array`` and ``test_sharded_edges_and_missing_chunks`` fail.
2. the shard number from ``inner_rows`` instead of ``file_rows`` (rows past the first inner
   chunk read from a non-existent file, as fill): ``test_sharded_edges_and_missing_chunks`` fails.
3. ``data[inverse]`` replaced by ``data`` (unsorted or repeated requests out of order):
   ``test_matches_zarr_on_every_store_array`` fails.
4. the crc32c check removed: ``test_damaged_shard_index_is_refused`` fails.
5. a run not cut when the next row lies before the previous one's end (``gap < 0`` dropped):
   ``test_merge_gap_does_not_change_values`` fails (rows of two inner chunks stored out of order).
6. ``_one_row`` without ``within * row_bytes``: ``test_sharded_edges_and_missing_chunks`` fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vqacache.heads import row_reads
from vqacache.heads.row_reads import CorruptShard, RowReader
from vqacache.heads.synthetic import make_temporal_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_temporal_store(tmp_path_factory.mktemp("rr") / "s.zarr", {"train": 2}, n_frames=70, dim=8, n_patches=3)


def _zarr_rows(array, idx):
    return np.asarray(array.get_orthogonal_selection((np.asarray(idx), *[slice(None)] * (array.ndim - 1))))


def test_matches_zarr_on_every_store_array(store):
    """cls (64-row inner chunks), patch (8-row inner chunks, two 64-row shards for 70 frames),
    question-bundle arrays (one chunk) and the compressed pts (zarr fallback)."""
    rng = np.random.default_rng(0)
    root = store.root
    names = ["videos/train00000/cls", "videos/train00000/patch", "videos/train00000/pts",
             "questions/train/train00000/text", "questions/train/train00000/cand",
             "questions/train/train00000/imageqa"]
    fast = {}
    for name in names:
        array = root[name]
        reader = RowReader(array)
        fast[name.rsplit("/", 1)[1]] = reader.fast
        n = array.shape[0]
        for idx in (rng.integers(0, n, size=7), np.arange(n)[::-1], np.array([n - 1, 0, n - 1])):
            np.testing.assert_array_equal(reader.rows(idx), _zarr_rows(array, idx))
        np.testing.assert_array_equal(reader[n - 1], _zarr_rows(array, [n - 1])[0])
    assert fast == {"cls": True, "patch": True, "pts": False, "text": True, "cand": True, "imageqa": True}


def _sharded(path, rows, written):
    a = zarr.create_array(str(path), shape=(rows, 2, 3), chunks=(4, 2, 3), shards=(8, 2, 3), dtype="float16",
                          compressors=None, fill_value=7.0)
    data = np.arange(rows * 6, dtype=np.float16).reshape(rows, 2, 3)
    for lo, hi in written:
        a[lo:hi] = data[lo:hi]
    return zarr.open_array(str(path), mode="r"), data


def test_sharded_edges_and_missing_chunks(tmp_path):
    """A partial last inner chunk, a missing inner chunk and a missing shard read as zarr does."""
    array, data = _sharded(tmp_path / "a", 21, [(0, 4), (8, 12), (16, 21)])  # rows 4-7 (inner) and 12-15 unwritten
    reader = RowReader(array)
    assert reader.fast
    idx = np.arange(21)
    np.testing.assert_array_equal(reader.rows(idx), _zarr_rows(array, idx))
    assert (reader.rows([5])[0] == 7).all() and np.array_equal(reader.rows([9, 20]), data[[9, 20]])
    for row in (5, 9, 13, 20):  # one row: its own path
        np.testing.assert_array_equal(reader.rows(row), _zarr_rows(array, [row])[0])
    empty, _ = _sharded(tmp_path / "b", 21, [(0, 8)])  # shards 1 and 2 never written: no file
    np.testing.assert_array_equal(RowReader(empty).rows([3, 10, 20]), _zarr_rows(empty, [3, 10, 20]))


def test_damaged_shard_index_is_refused(tmp_path):
    array, _ = _sharded(tmp_path / "a", 8, [(0, 8)])
    shard = tmp_path / "a" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-6] ^= 0xFF  # inside the index, before its crc32c
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptShard, match="crc32c"):
        RowReader(array).rows([0])


def test_merge_gap_does_not_change_values(tmp_path, monkeypatch):
    """One read per run or one per row: the same rows, also when a shard stores its inner chunks
    in reverse order (the format allows any order; rebuilt here by hand with a fresh index)."""
    import google_crc32c

    a = zarr.create_array(str(tmp_path / "a"), shape=(16, 5), chunks=(4, 5), shards=(16, 5), dtype="int64",
                          compressors=None)
    data = np.arange(80).reshape(16, 5)
    a[:] = data
    shard = tmp_path / "a" / "c" / "0" / "0"
    chunk = 4 * 5 * 8
    body = b"".join(data[lo:lo + 4].astype("<i8").tobytes() for lo in (12, 8, 4, 0))  # chunks 3, 2, 1, 0
    index = np.array([[(3 - j) * chunk, chunk] for j in range(4)], dtype="<u8").tobytes()
    shard.write_bytes(body + index + google_crc32c.value(index).to_bytes(4, "little"))
    array = zarr.open_array(str(tmp_path / "a"), mode="r")
    idx = np.array([15, 0, 3, 4, 9, 12])
    np.testing.assert_array_equal(_zarr_rows(array, idx), data[idx])  # zarr reads the rebuilt shard
    for gap in (0, 10**9):
        monkeypatch.setattr(row_reads, "MERGE_GAP_BYTES", gap)
        np.testing.assert_array_equal(RowReader(array).rows(idx), data[idx])


def test_compressed_array_falls_back_to_zarr(tmp_path):
    a = zarr.create_array(str(tmp_path / "z"), shape=(10, 3), chunks=(4, 3), dtype="float32")  # zstd by default
    a[:] = np.arange(30, dtype=np.float32).reshape(10, 3)
    reader = RowReader(zarr.open_array(str(tmp_path / "z"), mode="r"))
    assert not reader.fast
    np.testing.assert_array_equal(reader.rows([9, 1, 1]), np.arange(30, dtype=np.float32).reshape(10, 3)[[9, 1, 1]])
