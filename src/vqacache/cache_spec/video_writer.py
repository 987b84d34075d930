"""Writing one video: frames appended to a private temporary group, published by rename.

Obtain a writer with :meth:`FeatureStore.begin_video`::

    writer = store.begin_video(video_id, attrs, lease=lease)
    try:
        writer.append(cls=..., pts=..., src_index=..., is_repeat=..., patch=...)
        writer.commit()          # flush, checksum, completion marker, lease check, rename
    except BaseException:
        writer.abort()           # removes the temporary group only
        raise

With ``outputs.patch_fps`` in the spec, ``append`` still takes ``patch`` for every frame; the
writer keeps the rows of the sub-grid (:mod:`~vqacache.cache_spec.patch_frames`) and writes
them as ``patch`` (M, P, W) with their times ``patch_pts`` (M,).

``commit`` writes the completion marker into the temporary group, checks the lease once more
and renames the group onto ``videos/<key>``. If the lease was lost, or another writer
published the video first, nothing of this writer's reaches the final key: its temporary is
removed and :class:`LeaseLost` is raised. A stalled writer can therefore never mix its rows
into, or delete, a video another writer completed.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import ArrayHasher
from vqacache.cache_spec.errors import StoreError
from vqacache.cache_spec.lease import Lease, LeaseLost
from vqacache.cache_spec.patch_frames import SubgridSelector
from vqacache.cache_spec.publish import publish, remove_tree, replace, temp_key
from vqacache.cache_spec.spec import FeatureSpec


PATCH_PTS = "patch_pts"
"""Times (M,) float64 of the frames holding patch tokens, in a store with ``outputs.patch_fps``."""


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class VideoWriter:
    """Appends one video's frames in time order to a temporary group; flushes whole shards
    only. ``commit()`` publishes it, ``abort()`` removes it. Created by
    :meth:`FeatureStore.begin_video`; not for direct use."""

    def __init__(
        self, videos: zarr.Group, videos_dir: Path, video_id: str, key: str, spec: FeatureSpec,
        attrs: dict[str, Any], lease: Lease | None, on_published: Callable[[], None],
    ) -> None:
        self.video_id = video_id
        self.spec = spec
        self.lease = lease
        self._final = videos_dir / key
        self._tmp_key = temp_key(key, lease.token if lease is not None else None)
        self._tmp = videos_dir / self._tmp_key
        self._on_published = on_published
        self.state = "open"  # -> "committed" | "aborted"
        base = {"video_id": video_id, "complete": False, "started": utcnow(), **attrs}
        self.group = videos.create_group(self._tmp_key, attributes=base)
        self.n_frames = 0
        self._hasher = ArrayHasher()
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._written: dict[str, int] = {}
        self._expected = {"cls"} | set(layout.TIME_ARRAYS)  # what append() takes
        if spec.outputs.cls_hidden is not None:
            self._expected.add("cls_hidden")
        if spec.outputs.patches:
            self._expected.add("patch")
        self._stored = set(self._expected)  # what is written
        self._subgrid: SubgridSelector | None = None
        self._carry: tuple[int, np.ndarray, float] | None = None  # (row, patch (P, W), pts): maybe chosen later
        if spec.outputs.patch_fps is not None:
            self._subgrid = SubgridSelector(spec.outputs.patch_fps_fraction)
            self._stored.add(PATCH_PTS)

    def update_attrs(self, attrs: dict[str, Any]) -> None:
        """Add attributes (e.g. the decoded source's description) before committing."""
        self._require_open()
        self.group.attrs.update(attrs)

    def append(self, **blocks: Any) -> None:
        """Append a block of frames: ``cls`` (n, E), ``pts``/``src_index``/``is_repeat`` (n,),
        ``cls_hidden`` (n, W) and ``patch`` (n, P, W) when the spec asks for them. Arrays may
        be numpy arrays or CPU torch tensors; features are cast to the spec's storage dtype."""
        self._require_open()
        names = set(blocks)
        if names != self._expected:
            missing, extra = self._expected - names, names - self._expected
            raise ValueError(f"append() needs exactly {sorted(self._expected)}; missing {sorted(missing)}, unexpected {sorted(extra)}")
        sizes = {name: len(block) for name, block in blocks.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"append() blocks disagree on the number of frames: {sizes}")
        arrays = {}
        for name, block in blocks.items():  # check everything before buffering anything
            dtype = layout.TIME_ARRAYS.get(name, self.spec.dtype)
            array = np.asarray(block).astype(dtype, copy=False)
            if dtype.startswith("float") and not np.isfinite(array).all():
                raise ValueError(f"refusing to store non-finite values in {name!r} of video {self.video_id!r}")
            arrays[name] = array
        if self._subgrid is not None:
            arrays["patch"], arrays[PATCH_PTS] = self._subgrid_rows(arrays["patch"], arrays["pts"])
        for name, array in arrays.items():
            self._hasher.update(name, array)
            self._buffers.setdefault(name, []).append(array)
            self._flush(name, final=False)
        self.n_frames += next(iter(sizes.values()))

    def _subgrid_rows(self, patch: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The block's patch rows on the sub-grid, (m, P, W) and their pts (m,); a row decided
        only by a later block is carried (one frame at most) and written with that block."""
        assert self._subgrid is not None
        start = self.n_frames
        chosen = self._subgrid.push(pts)
        rows, times = [], []
        for row in chosen:
            if row >= start:
                rows.append(patch[row - start]); times.append(float(pts[row - start]))
            elif self._carry is not None and self._carry[0] == row:
                rows.append(self._carry[1]); times.append(self._carry[2])
            else:  # the selector only looks back at the row it left undecided
                raise AssertionError(f"sub-grid row {row} was neither carried nor in this block")
        undecided = self._subgrid.undecided_from
        end = start + len(pts)
        if start <= undecided < end:
            self._carry = (undecided, patch[undecided - start].copy(), float(pts[undecided - start]))
        elif undecided < start and self._carry is not None and self._carry[0] == undecided:
            pass  # still undecided: keep carrying it
        else:
            self._carry = None
        block = np.stack(rows) if rows else np.empty((0, *patch.shape[1:]), dtype=patch.dtype)
        return block, np.asarray(times, dtype=np.float64)

    def commit(self) -> str:
        """Flush, write the completion marker, check the lease, publish. Returns the checksum.

        Raises :class:`LeaseLost` (after removing the temporary) when the lease was lost or
        another writer published this video first; any other error also removes the
        temporary before propagating."""
        self._require_open()
        try:
            if self.n_frames == 0:
                raise ValueError(f"refusing to complete video {self.video_id!r} with zero frames")
            for name in self._stored:
                self._flush(name, final=True)
            checksum = self._hasher.hexdigest()
            self.group.attrs.update({"n_frames": self.n_frames, "checksum": checksum, "finished": utcnow(), "complete": True})
            if self.lease is not None:
                self.lease.renew()  # LeaseLost: someone else has the video now
            if not publish(self._tmp, self._final):
                if _marked_complete(self._final):
                    raise LeaseLost(f"video {self.video_id!r} was published by another writer first")
                replace(self._tmp, self._final)  # a partial group an older vqacache wrote in place
        except BaseException:
            self.abort()
            raise
        self.state = "committed"
        self._on_published()
        return checksum

    def abort(self) -> None:
        """Remove this writer's temporary group (nothing else). Idempotent."""
        if self.state == "open":
            self.state = "aborted"
            remove_tree(self._tmp)

    def _require_open(self) -> None:
        if self.state != "open":
            raise StoreError(f"the writer of video {self.video_id!r} is {self.state}")

    def _array(self, name: str, first: np.ndarray) -> zarr.Array:
        if name in self._written:
            return self.group[name]
        frame_shape = first.shape[1:]
        if name in layout.TIME_ARRAYS or name == PATCH_PTS:
            return self.group.create_array(name, shape=(0,), dtype=first.dtype, chunks=(layout.TIME_CHUNK,))
        chunks, shards = layout.chunk_shapes(name, frame_shape)
        return self.group.create_array(
            name, shape=(0, *frame_shape), dtype=first.dtype, chunks=chunks, shards=shards, compressors=None
        )

    def _flush(self, name: str, final: bool) -> None:
        pending = self._buffers.get(name)
        if not pending:
            return
        step = layout.TIME_CHUNK if name in layout.TIME_ARRAYS or name == PATCH_PTS else layout.shard_frames(name)
        buffered = sum(len(b) for b in pending)
        n_out = buffered if final else (buffered // step) * step
        if n_out == 0:
            return
        data = np.concatenate(pending)
        self._buffers[name] = [data[n_out:]] if n_out < len(data) else []
        array = self._array(name, data)
        start = self._written.get(name, 0)
        array.resize((start + n_out, *data.shape[1:]))
        array[start : start + n_out] = data[:n_out]
        self._written[name] = start + n_out


def _marked_complete(group_dir: Path) -> bool:
    """Whether the published group at ``group_dir`` carries its completion marker."""
    try:
        meta = json.loads((group_dir / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("complete") is True
