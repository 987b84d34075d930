"""FrameBatcher: full batches across videos, in-order delivery, repeats, failures, sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from vqacache.featurize.batcher import FrameBatcher


@dataclass
class Chunk:
    frames: np.ndarray
    pts: np.ndarray
    src_index: np.ndarray
    is_repeat: np.ndarray


def chunk(ids: list[int], repeat: list[bool] | None = None, size: int = 4) -> Chunk:
    """Frames whose pixels hold their id; repeats carry the previous frame's id."""
    frames = np.stack([np.full((size, size, 3), i % 256, np.uint8) for i in ids])
    rep = np.array(repeat if repeat is not None else [False] * len(ids))
    return Chunk(frames, np.arange(len(ids)) / 7.5, np.array(ids), rep)


class Sink:
    def __init__(self) -> None:
        self.blocks: list[dict] = []
        self.completed = False

    def append(self, **blocks) -> None:
        assert not self.completed
        self.blocks.append(blocks)

    def ids(self) -> list[int]:
        return [int(x) for b in self.blocks for x in b["cls"][:, 0]]


def make(batch: int):
    sizes: list[int] = []

    def encode(frames: np.ndarray) -> dict[str, torch.Tensor]:
        sizes.append(len(frames))
        ident = torch.from_numpy(frames[:, 0, 0, :1].astype(np.float32))  # (n, 1): the id
        return {"cls": ident, "patch": ident[:, None, :].repeat(1, 2, 1)}

    return FrameBatcher(encode, batch), sizes


def open_video(b: FrameBatcher, sink: Sink):
    def done() -> None:
        sink.completed = True

    return b.open_video(sink, on_complete=done)


def test_batches_are_full_across_videos_and_delivery_is_ordered():
    b, sizes = make(batch=4)
    s1, s2, s3 = Sink(), Sink(), Sink()
    v1, v2, v3 = open_video(b, s1), open_video(b, s2), open_video(b, s3)
    b.add(v1, chunk([1, 2, 3]))
    b.add(v1, chunk([4, 5]))
    b.close_video(v1)
    assert s1.ids() == [1, 2, 3] and not s1.completed  # frames 4 and 5 wait for a full batch
    b.add(v2, chunk([10, 11, 12]))
    assert s1.completed and s1.ids() == [1, 2, 3, 4, 5]
    b.add(v3, chunk([20]))
    b.close_video(v2)
    b.close_video(v3)
    assert not s3.completed
    b.flush()
    assert s2.completed and s3.completed and s2.ids() == [10, 11, 12] and s3.ids() == [20]
    assert sizes == [4, 4, 1] and b.frames_encoded == 9


def test_repeats_are_encoded_once_and_expanded():
    b, sizes = make(batch=8)
    s = Sink()
    v = open_video(b, s)
    b.add(v, chunk([1, 1, 2, 2], [False, True, False, True]))
    b.add(v, chunk([2, 3], [True, False]))  # repeats the previous chunk's last frame
    b.close_video(v)
    b.flush()
    assert s.ids() == [1, 1, 2, 2, 2, 3] and sum(sizes) == 3
    assert all(blk["patch"].shape[1:] == (2, 1) for blk in s.blocks)
    assert np.concatenate([blk["is_repeat"] for blk in s.blocks]).tolist() == [False, True, False, True, True, False]


def test_dropped_video_delivers_nothing_and_others_continue():
    b, _ = make(batch=3)
    s1, s2 = Sink(), Sink()
    v1, v2 = open_video(b, s1), open_video(b, s2)
    b.add(v1, chunk([1, 2]))
    b.drop_video(v1)
    b.add(v2, chunk([5, 6, 7]))
    b.close_video(v2)
    assert s1.blocks == [] and not s1.completed
    assert s2.completed and s2.ids() == [5, 6, 7]


def test_different_frame_sizes_never_share_a_batch():
    seen: list[tuple] = []

    def encode(frames):
        seen.append(frames.shape)
        return {"cls": torch.from_numpy(frames[:, 0, 0, :1].astype(np.float32))}

    b = FrameBatcher(encode, 4)
    s1, s2 = Sink(), Sink()
    v1, v2 = open_video(b, s1), open_video(b, s2)
    b.add(v1, chunk([1, 2], size=4))
    b.add(v2, chunk([3, 4, 5], size=6))
    b.close_video(v1)
    b.close_video(v2)
    b.flush()
    assert seen == [(2, 4, 4, 3), (3, 6, 6, 3)]
    assert s1.ids() == [1, 2] and s2.ids() == [3, 4, 5]


@pytest.mark.parametrize("batch", [1, 2, 5, 64])
def test_any_batch_size_gives_the_same_features(batch):
    b, _ = make(batch)
    sinks = [Sink() for _ in range(3)]
    handles = [open_video(b, s) for s in sinks]
    for i, h in enumerate(handles):
        for c in range(3):
            b.add(h, chunk([100 * i + 10 * c + k for k in range(c + 1)]))
        b.close_video(h)
    b.flush()
    for i, s in enumerate(sinks):
        assert s.completed and s.ids() == [100 * i + 10 * c + k for c in range(3) for k in range(c + 1)]
