"""Patch tokens on their grid: checking and applying ``--patch-pool``, for every ViT family.

Shapes: N frames, (gh, gw) patch grid, W token width, k the pooling factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqacache.cache_spec.errors import UsageError


def check_patch_pool(k: int, grid: tuple[int, ...], model_name: str) -> None:
    """``k`` must divide both sides of the patch grid (a one-line UsageError otherwise)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"--patch-pool must be an integer >= 1, got {k!r}")
    if any(g % k for g in grid):
        raise UsageError(f"--patch-pool {k} does not divide the {grid[0]}x{grid[1]} patch grid of {model_name}")


def pool_patches(tokens: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """(N, gh * gw, W) row-major -> (N, (gh / k) * (gw / k), W) by k x k average pooling."""
    if k == 1:
        return tokens
    n, _, width = tokens.shape
    gh, gw = grid
    planes = tokens.float().reshape(n, gh, gw, width).permute(0, 3, 1, 2)  # (N, W, gh, gw)
    pooled = F.avg_pool2d(planes, kernel_size=k, stride=k)  # (N, W, gh / k, gw / k)
    return pooled.flatten(2).transpose(1, 2)  # (N, P, W)
