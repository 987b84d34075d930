"""Samples -> one padded batch (:func:`collate`), built so that a DataLoader worker hands it to
the training process as **one** shared-memory buffer.

**Layout** (a batch of B samples of :class:`~vqacache.heads.data.QADataset`): ``cls``
(B, N, E) + ``frame_mask`` (B, N); ``patch`` (B, N', P, W) + ``patch_mask`` (B, N');
``cand`` (B, C, E) + ``cand_mask`` (B, C); ``text_tokens`` (B, L, W) + ``text_token_mask``
(B, L); ``imageqa`` (B, N, C) + ``has_imageqa`` (B,); ``answer`` (B,) int64; ``text`` (B, E);
``index`` (B,); lists ``qid``, ``video_id``, ``qtype`` (and ``question``, ``candidates`` when
the samples carry them). Padding is zeros; a mask is True on a sample's real rows.

**Why one buffer.** A DataLoader worker sends a batch to the training process through shared
memory, one file descriptor per distinct tensor storage, and the training process fetches
each descriptor over a socket from a thread of the worker (``multiprocessing``'s resource
sharer: connect, HMAC challenge, ``sendmsg``), a thread that must first win the worker's GIL
from the worker reading the next batch. With each of a batch's 11 tensors in its own storage
that cost, profiled on ``benchmarks/loader.py``'s stores with the workers idle and their
queue full, 2.5-3 ms of the training process's CPU and 7-13 ms of its wall time per batch
(against a 17 ms training step): the loader's remaining deficit. In a worker
(:func:`torch.utils.data.get_worker_info` is not None, the test torch's own
``default_collate`` uses), :func:`collate` therefore allocates every tensor of the batch as
a view of one zeroed shared-memory buffer (each field at an offset aligned to :data:`ALIGN`
bytes); torch pickles views of one storage as that storage once, so the batch costs one
descriptor (0.4-1.2 ms CPU and 1-4 ms wall per batch, same profile). The training process
receives the same dict: same keys in the same order, tensors of the same dtypes, shapes and
values (views of the one buffer, which lives as long as any of them). Outside a worker each
tensor is allocated on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

ALIGN = 64
"""Byte alignment of each field inside a worker's shared buffer (any dtype's view is legal)."""
PADDED = (("cls", "frame_mask"), ("patch", "patch_mask"), ("cand", "cand_mask"), ("text_tokens", "text_token_mask"))
"""Per-sample tensors of varying first length, and the mask that marks their real rows."""



@dataclass(frozen=True)
class Field:
    """One tensor of a batch, before it is allocated."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def _view(buffer: Tensor, dtype: torch.dtype, shape: tuple[int, ...], offset: int) -> Tensor:
    """The tensor ``shape`` of ``dtype`` at byte ``offset`` of ``buffer`` (uint8, 1-D)."""
    return buffer[offset: offset + _nbytes(shape, dtype)].view(dtype).view(shape)


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    numel = 1
    for n in shape:
        numel *= n
    return numel * dtype.itemsize


def _allocate(fields: list[Field], shared: bool) -> dict[str, Tensor]:
    """Zeroed tensors for ``fields``: each on its own, or (``shared``) views of one zeroed
    shared-memory buffer, each at an offset rounded up to :data:`ALIGN` bytes."""
    if not shared:
        return {f.name: torch.zeros(f.shape, dtype=f.dtype) for f in fields}
    offsets: dict[str, int] = {}
    total = 0
    for f in fields:
        offsets[f.name] = total
        total += -(-_nbytes(f.shape, f.dtype) // ALIGN) * ALIGN
    storage = torch.UntypedStorage._new_shared(max(total, 1))  # fd (or file_system) shared memory
    buffer = torch.empty(0, dtype=torch.uint8).set_(storage).zero_()  # (total,)
    return {f.name: _view(buffer, f.dtype, f.shape, offsets[f.name]) for f in fields}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of samples into a batch with masks (the module doc gives the layout); in a
    DataLoader worker its tensors are views of one shared-memory buffer."""
    B, first = len(samples), samples[0]
    padded = [(name, mask) for name, mask in PADDED if name in first]
    length = {name: max(s[name].shape[0] for s in samples) for name, _ in padded}
    has_teacher = [("imageqa" in s) for s in samples]
    fields = [Field("index", (B,), torch.int64), Field("text", (B, *first["text"].shape), first["text"].dtype),
              Field("answer", (B,), torch.int64)]
    for name, mask in padded:
        fields += [Field(name, (B, length[name], *first[name].shape[1:]), first[name].dtype),
                   Field(mask, (B, length[name]), torch.bool)]
    if any(has_teacher):
        C = max(length.get("cand", 0), max(s["imageqa"].shape[1] for s in samples if "imageqa" in s))
        fields += [Field("imageqa", (B, length["cls"], C), torch.get_default_dtype()), Field("has_imageqa", (B,), torch.bool)]
    out = _allocate(fields, shared=get_worker_info() is not None)
    out["index"].copy_(torch.tensor([s["index"] for s in samples]))
    torch.stack([s["text"] for s in samples], out=out["text"])  # (B, E); refuses unequal widths
    out["answer"].copy_(torch.tensor([s["answer"] for s in samples], dtype=torch.int64))
    batch: dict[str, Any] = {
        "index": out["index"],
        "qid": [s["qid"] for s in samples],
        "video_id": [s["video_id"] for s in samples],
        "qtype": [s["qtype"] for s in samples],
        "text": out["text"],
        "answer": out["answer"],
    }
    for name in ("question", "candidates"):
        if name in first:
            batch[name] = [s[name] for s in samples]
    for name, mask in padded:
        for b, s in enumerate(samples):
            rows = s[name]  # (n_b, ...) -> rows [0, n_b) of sample b
            out[name][b, : rows.shape[0]] = rows
            out[mask][b, : rows.shape[0]] = True
        batch[name], batch[mask] = out[name], out[mask]
    if any(has_teacher):
        for b, s in enumerate(samples):
            if has_teacher[b]:
                t = s["imageqa"]  # (n_b, C_b)
                out["imageqa"][b, : t.shape[0], : t.shape[1]] = t
        out["has_imageqa"].copy_(torch.tensor(has_teacher))
        batch["imageqa"], batch["has_imageqa"] = out["imageqa"], out["has_imageqa"]
    return batch


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Tensors of a batch moved to ``device``; lists left alone."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
