"""Siamese sampling (SiaSamRea section 3.2): an anchor clip and N-1 siamese clips cut from a
question's dense frames, every clip B frames at the same interval.

For a question with L valid dense frames (the rows its ``frame_mask`` marks) and clips of B
frames, all indices are positions among those L frames:

* interval I = max(1, floor(2L / (3B))), or a fixed ``interval`` (the paper gives no rule;
  this default makes a clip span at most two thirds of the video, so an anchor starting in
  the first third always fits);
* anchor start s drawn uniformly in the first third, s in {0, ..., ceil(L/3) - 1}
  ("it should be in the first third of the video");
* clip frames s, s + I, ..., s + (B - 1) I;
* siamese clip m = 1..N-1 starts at s + o_m u, offsets o = +1, -1, +2, -2, ... and unit u = 1
  frame (``unit="frame"``, the default) or u = I (``unit="interval"``). The paper's siamese
  clips start "next to the index of the anchor clip", "consecutive before or after the anchor
  index": adjacent start frames. With whole-interval offsets a clip at +1 interval shares
  B - 1 of the anchor's frames and never sees a frame between two of the anchor's, which is
  nearly the copies ablation; it is kept as an option;
* clamping (the paper is silent): a start is clamped into [0, L - 1 - (B - 1) I], so every
  clip keeps B frames at the same interval inside the video (near an end, clamped clips may
  coincide); a clip longer than the video (L <= (B - 1) I) starts at 0 and its indices are
  clamped to L - 1 (frames repeat);
* ``mode="copies"`` (the paper's ablation): every siamese clip is the anchor itself.

Evaluation uses the anchor alone, placed without randomness (:func:`eval_anchor_clip`):
``"rule"`` (default) puts it where training anchors are on average, start
floor((ceil(L/3) - 1) / 2) with the training interval, so the backbone sees the frame spacing
it was trained with; ``"uniform"`` spreads the B frames over the whole video, round(linspace(0,
L - 1, B)), as the backbone alone would see it (a wider spacing than in training).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vqacache.cache_spec.errors import UnknownName

__all__ = [
    "EVAL_ANCHORS", "OFFSET_UNITS", "SIAMESE_MODES", "anchor_starts", "clip_indices", "clip_interval",
    "eval_anchor_clip", "siamese_clips", "siamese_offsets",
]


def _adjacent(n: int) -> list[int]:
    """+1, -1, +2, -2, ... (n of them)."""
    return [(k // 2 + 1) * (1 if k % 2 == 0 else -1) for k in range(n)]


SIAMESE_MODES: dict[str, Callable[[int], list[int]]] = {"adjacent": _adjacent, "copies": lambda n: [0] * n}
"""How the N-1 siamese clips' offsets (in units) are chosen."""

OFFSET_UNITS: dict[str, Callable[[Tensor], Tensor]] = {"frame": torch.ones_like, "interval": lambda i: i}
"""interval (Q,) -> the length of one offset unit (Q,) in frames."""


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise UnknownName(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]


def siamese_offsets(num_siamese: int, mode: str = "adjacent") -> list[int]:
    """The N-1 siamese clips' start offsets from the anchor's, in units."""
    return _lookup(SIAMESE_MODES, mode, "siamese mode")(num_siamese)


def clip_interval(lengths: Tensor, clip_frames: int, interval: int = 0) -> Tensor:
    """lengths (Q,) valid frames -> interval I (Q,) int64: ``interval`` if > 0, else
    max(1, floor(2L / (3B)))."""
    if interval > 0:
        return torch.full_like(lengths, interval)
    return (2 * lengths // (3 * clip_frames)).clamp_min(1)


def anchor_starts(lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """lengths (Q,) -> anchor starts (Q,) int64, uniform in {0, ..., ceil(L/3) - 1}."""
    third = ((lengths + 2) // 3).clamp_min(1)  # (Q,) ceil(L/3)
    u = torch.rand(lengths.shape, generator=generator, device=lengths.device)
    return (u * third).long().clamp_max(third - 1)


def clip_indices(starts: Tensor, interval: Tensor, lengths: Tensor, clip_frames: int) -> Tensor:
    """starts (Q, N), interval (Q,), lengths (Q,) -> frame indices (Q, N, B) of clips clamped
    into the video (see the module docstring)."""
    last = (lengths - 1 - (clip_frames - 1) * interval).clamp_min(0)  # (Q,) latest start that fits
    s = torch.minimum(starts.clamp_min(0), last[:, None])  # (Q, N)
    steps = torch.arange(clip_frames, device=starts.device)  # (B,)
    idx = s[..., None] + steps * interval[:, None, None]  # (Q, N, B)
    return torch.minimum(idx, (lengths - 1)[:, None, None])


def siamese_clips(
    lengths: Tensor,
    clip_frames: int,
    num_siamese: int,
    interval: int = 0,
    unit: str = "frame",
    mode: str = "adjacent",
    generator: torch.Generator | None = None,
) -> Tensor:
    """lengths (Q,) valid frames per question -> indices (Q, N, B), N = 1 + num_siamese;
    clip 0 is the anchor, clip m its m-th siamese clip (offsets +1, -1, +2, ...)."""
    step = clip_interval(lengths, clip_frames, interval)  # (Q,)
    start = anchor_starts(lengths, generator)  # (Q,)
    offsets = torch.tensor([0, *siamese_offsets(num_siamese, mode)], device=lengths.device)  # (N,)
    unit_len = _lookup(OFFSET_UNITS, unit, "offset unit")(step)  # (Q,)
    starts = start[:, None] + offsets[None, :] * unit_len[:, None]  # (Q, N)
    return clip_indices(starts, step, lengths, clip_frames)


def _rule_anchor(lengths: Tensor, clip_frames: int, interval: int) -> Tensor:
    third = ((lengths + 2) // 3).clamp_min(1)
    start = (third - 1) // 2  # (Q,) the middle of the training anchors' start range
    return clip_indices(start[:, None], clip_interval(lengths, clip_frames, interval), lengths, clip_frames)[:, 0]


def _uniform_anchor(lengths: Tensor, clip_frames: int, interval: int) -> Tensor:
    u = torch.linspace(0, 1, clip_frames, device=lengths.device)  # (B,)
    return (u[None, :] * (lengths - 1)[:, None]).round().long()  # (Q, B)


EVAL_ANCHORS: dict[str, Callable[[Tensor, int, int], Tensor]] = {"rule": _rule_anchor, "uniform": _uniform_anchor}


def eval_anchor_clip(lengths: Tensor, clip_frames: int, interval: int = 0, placement: str = "rule") -> Tensor:
    """lengths (Q,) -> the evaluation anchor's indices (Q, B), without randomness."""
    return _lookup(EVAL_ANCHORS, placement, "eval anchor placement")(lengths, clip_frames, interval)
