"""Frame sampling blocks (FS-Blocks) and the selection logits they feed, VideoDistill
section 3.3.

The N frame vectors (the paper's ``v_cls``) get a learnable temporal embedding by frame
index, then L blocks each "first distill v_cls conditioned on t_cls by LA-Gate ... then
perform an inter-frame interaction through standard multi-head attention", with "the form
of skip connections from the divided block in [6]" (Frozen in Time). In that block the
first sub-layer (there, time attention) only feeds the second and the residual skips it::

    g = LAGate(x, t)               # the gate's own input skip is inside: g = x + ...
    x = x + Attn(LN(g))            # Frozen in Time: space_residual = x + space_out
    x = x + MLP(LN(x))

So the gate steers which frames the attention sees, without writing text-conditioned
values into the residual stream. A final LayerNorm and the linear layer ``W_s`` map each
frame to K numbers, and the K rows over frames are the selection logits for
:func:`~vqacache.heads.modules.gumbel_topk.gumbel_topk`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqacache.heads.modules.la_gate import FUSIONS


class FrameSamplingBlock(nn.Module):
    """LA-Gate, then self-attention across frames, then an MLP; (B, N, D) -> (B, N, D).

    Args:
        dim: D.
        num_heads: H for both the gate and the attention.
        text_dim: width of the text vector; defaults to ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        fusion: a :data:`~vqacache.heads.modules.la_gate.FUSIONS` name (``la_gate``; ``cross_attention``: Table 4 (e)).
    """

    def __init__(
        self, dim: int, num_heads: int, text_dim: int | None = None, mlp_ratio: float = 4.0, fusion: str = "la_gate"
    ) -> None:
        super().__init__()
        self.gate = FUSIONS[fusion](dim, num_heads, text_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, text: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """x (B, N, D) frames, text (B, Dt), frame_mask (B, N) bool, True = real frame."""
        g = self.norm1(self.gate(x, text))  # (B, N, D)
        padding = None if frame_mask is None else ~frame_mask
        x = x + self.attn(g, g, g, key_padding_mask=padding, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class FrameSampler(nn.Module):
    """Temporal embedding, L frame sampling blocks and ``W_s``: frames -> logits (B, K, N).

    Args:
        dim: D, width of the frame vectors.
        num_select: K, the number of frames to select (rows of the logits).
        max_frames: the largest N; the temporal embedding has one row per frame index.
        num_layers: L.
        num_heads: H.
        text_dim: width of the text vector; defaults to ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        fusion: the blocks' :data:`~vqacache.heads.modules.la_gate.FUSIONS` name.
    """

    def __init__(
        self,
        dim: int,
        num_select: int,
        max_frames: int,
        num_layers: int = 3,
        num_heads: int = 8,
        text_dim: int | None = None,
        mlp_ratio: float = 4.0,
        fusion: str = "la_gate",
    ) -> None:
        super().__init__()
        self.temporal_embed = nn.Parameter(torch.randn(max_frames, dim) * 0.02)  # (N_max, D)
        self.blocks = nn.ModuleList(
            FrameSamplingBlock(dim, num_heads, text_dim, mlp_ratio, fusion) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.w_s = nn.Linear(dim, num_select)

    def forward(self, frames: Tensor, text: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """frames (B, N, D), text (B, Dt), frame_mask (B, N) bool -> logits (B, K, N).

        Padded frames (``frame_mask`` False) get logit ``-inf`` and are never selected.
        """
        N = frames.shape[1]
        assert N <= len(self.temporal_embed), f"{N} frames > max_frames {len(self.temporal_embed)}"
        x = frames + self.temporal_embed[:N]  # (B, N, D)
        for block in self.blocks:
            x = block(x, text, frame_mask)
        logits = self.w_s(self.norm(x)).transpose(1, 2)  # (B, K, N)
        if frame_mask is not None:
            logits = logits.masked_fill(~frame_mask.unsqueeze(1), float("-inf"))
        return logits
