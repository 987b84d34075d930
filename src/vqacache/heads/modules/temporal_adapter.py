"""MCG's video side from the cache: a trainable temporal adapter over cached per-frame patch
tokens, in place of MCG's end-to-end TimeSformer (the image encoder is frozen in the cache).

Input: the T frames' patch tokens (B, T, P, W). Each token goes through Linear(W -> D) plus a
learned spatial (P, D) and temporal (T, D) embedding; a learned CLS token is prepended and
``num_layers`` TimeSformer "divided" blocks (time attention, then space attention, then an
MLP; pre-norm, residual) run over the (1 + T*P) tokens with
:class:`~vqacache.heads.modules.space_time_attention.DividedAttention`. The output is MCG's
X = {x_cls, x_1..x_P} (B, 1 + P, D): the CLS token followed by the P patch positions
**averaged over time** (as MCG's TimeSformer ``forward_features(return_all_tokens=True)``).

``beta`` (B, P): the last block's CLS-to-patch attention (its space attention, mean over
heads), summed over the T frames of each patch position: the released code's
``attention_map[:, :, 0, 1:]`` saliency, read here from the queries and keys the block
computes (the attention itself runs through ``scaled_dot_product_attention``, which returns
no weights).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vqacache.heads.modules.space_time_attention import DividedAttention


class AdapterOutput(NamedTuple):
    tokens: Tensor  # (B, 1 + P, D): X = CLS + patches averaged over time
    beta: Tensor  # (B, P): CLS-to-patch attention of the last block, summed over time


class _DividedBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_t, self.norm_s, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.time = DividedAttention(dim, num_heads, "time")
        self.space = DividedAttention(dim, num_heads, "space")
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
        """x (B, 1 + T*P, D) -> (x', the space attention's normalised input (B, 1 + T*P, D))."""
        x = x + self.time(self.norm_t(x), num_frames)
        s = self.norm_s(x)
        x = x + self.space(s, num_frames)
        return x + self.mlp(self.norm_m(x)), s


def cls_attention(attn: DividedAttention, x: Tensor) -> Tensor:
    """The CLS query's attention over all tokens of ``attn`` (CLS attends to every token):
    x (B, M, D) -> (B, M), mean over heads."""
    B, M, D = x.shape
    H = attn.num_heads
    q, k, _ = attn.qkv(x).view(B, M, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, M, d)
    scores = (q[:, :, :1] @ k.transpose(-1, -2)) / math.sqrt(D // H)  # (B, H, 1, M)
    return scores.softmax(-1).mean(1).squeeze(1)  # (B, M)


class TemporalAdapter(nn.Module):
    """patch (B, T, P, W) -> :class:`AdapterOutput` (X (B, 1 + P, D), beta (B, P)).

    Args:
        in_dim: W, the cached tokens' width.
        dim: D, the video width the text side's cross-attention reads.
        num_frames: T; num_patches: P.
        num_layers, num_heads, mlp_ratio: the divided blocks.
    """

    def __init__(self, in_dim: int, dim: int, num_frames: int, num_patches: int, num_layers: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.space_pos = nn.Parameter(torch.randn(num_patches, dim) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(num_frames, dim) * 0.02)
        self.blocks = nn.ModuleList([_DividedBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, patch: Tensor) -> AdapterOutput:
        B, T, P, _ = patch.shape
        x = self.proj(patch) + self.space_pos[None, None, :P] + self.time_pos[None, :T, None]  # (B, T, P, D)
        x = torch.cat([self.cls.expand(B, -1, -1), x.flatten(1, 2)], dim=1)  # (B, 1 + T*P, D)
        s = x
        for block in self.blocks:
            x, s = block(x, T)
        with torch.no_grad():
            beta = cls_attention(self.blocks[-1].space, s)[:, 1:].view(B, T, P).sum(1)  # (B, P)
        x = self.norm(x)
        tokens = torch.cat([x[:, :1], x[:, 1:].view(B, T, P, -1).mean(1)], dim=1)  # (B, 1 + P, D)
        return AdapterOutput(tokens, beta)
