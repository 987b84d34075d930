"""Checksums of a video's arrays, computed from the exact bytes stored.

A video's checksum is the sha256 of one line per array, in name order::

    <name> <dtype> <shape> <sha256 of the C-order bytes>

It is computed incrementally while writing (arrays arrive in chunks along time) and
recomputed from disk by ``verify``; both must agree bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np


class ArrayHasher:
    """Incremental hash of arrays that grow along their first axis."""

    def __init__(self) -> None:
        self._hash: dict[str, "hashlib._Hash"] = {}
        self._dtype: dict[str, str] = {}
        self._shape: dict[str, list[int]] = {}

    def update(self, name: str, block: np.ndarray) -> None:
        """Append ``block`` (already in its storage dtype) to array ``name``."""
        block = np.ascontiguousarray(block)
        if name not in self._hash:
            self._hash[name] = hashlib.sha256()
            self._dtype[name] = block.dtype.str
            self._shape[name] = [0, *block.shape[1:]]
        elif block.dtype.str != self._dtype[name] or list(block.shape[1:]) != self._shape[name][1:]:
            raise ValueError(f"array {name!r} changed dtype or frame shape between blocks")
        self._hash[name].update(block.tobytes())
        self._shape[name][0] += block.shape[0]

    def hexdigest(self) -> str:
        lines = [
            f"{name} {self._dtype[name]} {tuple(self._shape[name])} {self._hash[name].hexdigest()}"
            for name in sorted(self._hash)
        ]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def checksum_arrays(arrays: dict[str, np.ndarray], block_frames: int = 256) -> str:
    """Checksum of whole arrays, identical to feeding them to :class:`ArrayHasher` in blocks."""
    hasher = ArrayHasher()
    for name, array in arrays.items():
        for start in range(0, max(array.shape[0], 1), block_frames):
            hasher.update(name, np.asarray(array[start : start + block_frames]))
    return hasher.hexdigest()
