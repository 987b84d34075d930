"""Vision refinement blocks and the video representation they produce, VideoDistill
section 3.4.

Input: the patch tokens of the K selected frames (the paper's ``v_patch^K``, K x P x D) and
the sentence vector ``t``. A learnable temporal embedding (by slot k of the K selected
frames) and spatial embedding (by patch position) are added once, before the first block
(appendix B.1), and a learnable video CLS token (the paper's ``v_cls^*``) is prepended::

    x = [cls, patches[0, 0..P-1] + ..., ..., patches[K-1, ...] + ...]    # (B, 1 + K*P, D)

Each of the L blocks is an LA-Gate over all 1 + K*P tokens (the paper's figure 4 gates
"frame patches from K selected frames and a video-level CLS token") followed by Frozen in
Time's divided space-time block, whose time attention feeds its space attention while the
residual skips both. As in the frame sampling blocks, the gate's output (with its own input
skip) is what the attentions read, and the residual carries the block input::

    g = LAGate(x, t)
    h = g + TimeAttn(LN(g))
    x = x + SpaceAttn(LN(h))
    x = x + MLP(LN(x))

Only the CLS token of the last block is used ("we empirically adopt only the v_cls^* from
the last vision refinement block"), after a final LayerNorm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqacache.heads.modules.la_gate import FUSIONS
from vqacache.heads.modules.space_time_attention import DividedAttention


class VisionRefinementBlock(nn.Module):
    """LA-Gate + divided space-time attention + MLP; (B, 1 + K*P, D) -> same shape.

    Args:
        dim: D.
        num_heads: H for the gate and both attentions.
        text_dim: width of the text vector; defaults to ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
    """

    def __init__(
        self, dim: int, num_heads: int, text_dim: int | None = None, mlp_ratio: float = 4.0, fusion: str = "la_gate"
    ) -> None:
        super().__init__()
        self.gate = FUSIONS[fusion](dim, num_heads, text_dim)
        self.norm_time = nn.LayerNorm(dim)
        self.time_attn = DividedAttention(dim, num_heads, "time")
        self.norm_space = nn.LayerNorm(dim)
        self.space_attn = DividedAttention(dim, num_heads, "space")
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, text: Tensor, num_frames: int) -> Tensor:
        """x (B, 1 + K*P, D) = [cls, frame-major patches], text (B, Dt), K = num_frames."""
        g = self.gate(x, text)  # (B, M, D)
        h = g + self.time_attn(self.norm_time(g), num_frames)
        x = x + self.space_attn(self.norm_space(h), num_frames)
        return x + self.mlp(self.norm_mlp(x))


class VisionRefinement(nn.Module):
    """Selected frames' patches and the question -> the video representation (B, D).

    Args:
        dim: D, width of the patch tokens.
        num_frames: K, the number of selected frames (rows of the temporal embedding).
        num_patches: P, patches per frame (rows of the spatial embedding).
        num_layers: L.
        num_heads: H.
        text_dim: width of the text vector; defaults to ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        fusion: the blocks' :data:`~vqacache.heads.modules.la_gate.FUSIONS` name.
    """

    def __init__(
        self,
        dim: int,
        num_frames: int,
        num_patches: int,
        num_layers: int = 3,
        num_heads: int = 8,
        text_dim: int | None = None,
        mlp_ratio: float = 4.0,
        fusion: str = "la_gate",
    ) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)  # (D,)
        self.temporal_embed = nn.Parameter(torch.randn(num_frames, 1, dim) * 0.02)  # (K, 1, D)
        self.spatial_embed = nn.Parameter(torch.randn(num_patches, dim) * 0.02)  # (P, D)
        self.blocks = nn.ModuleList(
            VisionRefinementBlock(dim, num_heads, text_dim, mlp_ratio, fusion) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, patches: Tensor, text: Tensor) -> Tensor:
        """patches (B, K, P, D) of the selected frames, text (B, Dt) -> video vector (B, D)."""
        B, K, P, D = patches.shape
        expected = (len(self.temporal_embed), len(self.spatial_embed))
        assert (K, P) == expected, f"{K} frames x {P} patches; the embeddings expect {expected}"
        x = patches + self.temporal_embed + self.spatial_embed  # (B, K, P, D)
        x = torch.cat([self.cls.expand(B, 1, D), x.flatten(1, 2)], dim=1)  # (B, 1 + K*P, D)
        for block in self.blocks:
            x = block(x, text, K)
        return self.norm(x[:, 0])  # (B, D)


class FusionTransformer(nn.Module):
    """Table 4 (d), "remove vision refinement and apply a 3-layer transformer to fuse the
    vision and language": the same inputs as :class:`VisionRefinement` -> (B, D).

    Tokens: a learnable CLS, the text vector projected to D (one token), and the K x P patch
    tokens with the same temporal and spatial embeddings; L pre-norm transformer encoder
    layers with full attention over all of them (no LA-Gate, no divided space-time
    attention); the CLS token of the last layer after a LayerNorm. The paper does not give
    the layer's details; this is PyTorch's standard encoder layer (GELU MLP, no dropout).
    """

    def __init__(self, dim: int, num_frames: int, num_patches: int, num_layers: int = 3, num_heads: int = 8,
                 text_dim: int | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)  # (D,)
        self.text_in = nn.Linear(text_dim or dim, dim)
        self.temporal_embed = nn.Parameter(torch.randn(num_frames, 1, dim) * 0.02)  # (K, 1, D)
        self.spatial_embed = nn.Parameter(torch.randn(num_patches, dim) * 0.02)  # (P, D)
        layer = nn.TransformerEncoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, patches: Tensor, text: Tensor) -> Tensor:
        """patches (B, K, P, D), text (B, Dt) -> (B, D)."""
        B, K, P, D = patches.shape
        x = (patches + self.temporal_embed + self.spatial_embed).flatten(1, 2)  # (B, K*P, D)
        x = torch.cat([self.cls.expand(B, 1, D), self.text_in(text).unsqueeze(1), x], dim=1)  # (B, 2 + K*P, D)
        return self.norm(self.encoder(x)[:, 0])  # (B, D)
