"""Divided space-time self-attention (TimeSformer's "divided" scheme as Frozen in Time,
VideoDistill's reference [6], implements it).

The tokens are one video CLS token followed by K frames of P patches, frame-major:
``x = [cls, (frame 0: patch 0..P-1), (frame 1: ...), ...]``, shape (B, 1 + K*P, D).

* time attention: each patch token attends to the CLS token and to the tokens at the same
  patch position in every frame (K + 1 keys);
* space attention: each patch token attends to the CLS token and to the tokens of its own
  frame (P + 1 keys);
* in both, the CLS token attends to every token.

Nothing else mixes: a patch at position p of frame f can only influence, in one time
attention, the CLS token and position p of the other frames; in one space attention, the
CLS token and frame f. There is no positional information inside, so permuting the frames
permutes the output.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DividedAttention(nn.Module):
    """Multi-head self-attention restricted to one axis of a (CLS + K x P) token grid.

    Args:
        dim: D.
        num_heads: H; must divide ``dim``.
        axis: ``"time"`` (same patch position across frames) or ``"space"`` (within a frame).
    """

    def __init__(self, dim: int, num_heads: int, axis: Literal["time", "space"]) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} is not divisible by num_heads {num_heads}"
        assert axis in ("time", "space"), f"axis must be 'time' or 'space', not {axis!r}"
        self.num_heads = num_heads
        self.axis = axis
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """x (B, 1 + K*P, D) with K = ``num_frames`` -> (B, 1 + K*P, D)."""
        B, M, D = x.shape
        H, K = self.num_heads, num_frames
        P = (M - 1) // K
        assert 1 + K * P == M, f"{M} tokens are not 1 CLS + {K} frames of equal patch count"
        q, k, v = self.qkv(x).view(B, M, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, M, d)

        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (B, H, 1, d)

        def grouped(t: Tensor) -> Tensor:  # (B, H, K*P, d) -> (B, H, groups, group_len, d)
            t = t.unflatten(2, (K, P))  # (B, H, K, P, d): groups are frames (space)
            return t.transpose(2, 3) if self.axis == "time" else t  # (B, H, P, K, d) for time

        qg, kg, vg = grouped(q[:, :, 1:]), grouped(k[:, :, 1:]), grouped(v[:, :, 1:])
        G = qg.shape[2]
        cls_k = k[:, :, :1].unsqueeze(2).expand(-1, -1, G, -1, -1)  # (B, H, G, 1, d)
        cls_v = v[:, :, :1].unsqueeze(2).expand(-1, -1, G, -1, -1)  # (B, H, G, 1, d)
        kg, vg = torch.cat([cls_k, kg], dim=3), torch.cat([cls_v, vg], dim=3)
        out = F.scaled_dot_product_attention(qg, kg, vg)  # (B, H, G, group_len, d)
        if self.axis == "time":
            out = out.transpose(2, 3)  # (B, H, K, P, d)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # (B, H, M, d)
        return self.proj(out.transpose(1, 2).reshape(B, M, D))
