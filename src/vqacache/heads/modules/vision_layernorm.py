"""A checkpoint's vision LayerNorm (BLIP-2's ``ln_vision``) applied to cached tokens.

BLIP-2-family checkpoints share the frozen ViT-g trunk but each trains its own LayerNorm after
it; ``vitg`` stores keep the trunk's output normalised without the affine part
(:mod:`vqacache.cache_spec.token_norm`). This module turns stored tokens ``y`` (..., W) into
what the checkpoint's Q-Former expects, with that checkpoint's (gamma', beta') as trainable
parameters (VLAP trains the vision LayerNorm):

* stored ``affine-free``: ``gamma' * y + beta'``, exactly the checkpoint's LayerNorm of the
  trunk output (up to the storage dtype's rounding of ``y``);
* stored ``affine`` with the featurizing checkpoint's (gamma, beta) known:
  ``gamma' / gamma * (y - beta) + beta'`` (``y = gamma * n + beta`` solved for ``n``), refused
  when some ``|gamma| < MIN_ABS_GAMMA``: dividing by it would blow the storage rounding up;
* stored ``affine`` with gamma unknown (stores written before the record, other encoders):
  refused; re-featurize.

A per-channel affine before a Linear layer is absorbed by that layer, so heads that start
with one (``uniform``, ``videodistill``, ``sparc``) need none of this.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import SpecMismatch
from vqacache.cache_spec.token_norm import TokenNorm

MIN_ABS_GAMMA = 1e-3
"""Smallest stored |gamma| the ``affine`` path divides by. float16 keeps about 3 decimal digits of
``y``; below this, one channel's recovered ``n`` would carry errors of the order of ``|beta|``."""


class VisionLayerNorm(nn.Module):
    """Applies a checkpoint's vision LayerNorm (gamma', beta', trainable nn.Parameters) to stored tokens, exactly:
    affine-free stored y -> gamma' * y + beta'; affine stored (gamma, beta known) -> gamma'/gamma * (y - beta) + beta',
    refusing near-zero |gamma| (one-line error); affine with unknown gamma -> refuse with a one-line error naming re-featurizing.

    Args:
        stored: the store's token form (``token_norm_of(store)``).
        gamma: (W,) the checkpoint's LayerNorm weight (copied into a float32 Parameter).
        beta: (W,) its bias.

    Shapes: ``forward`` takes tokens (..., W), any float dtype, and returns float32 (..., W).
    """

    def __init__(self, stored: TokenNorm, gamma: Tensor, beta: Tensor) -> None:
        super().__init__()
        gamma = torch.as_tensor(gamma).detach().to(torch.float32).clone()
        beta = torch.as_tensor(beta).detach().to(torch.float32).clone()
        if gamma.ndim != 1 or gamma.shape != beta.shape:
            raise ValueError(f"gamma and beta must be (W,) each, got {tuple(gamma.shape)} and {tuple(beta.shape)}")
        self.width = int(gamma.shape[0])
        self.kind = stored.kind
        if stored.kind == "affine" and not stored.known:
            raise SpecMismatch(
                "the store's tokens are a LayerNorm's full output with unrecorded gamma/beta, so another "
                "checkpoint's LayerNorm cannot be applied exactly; re-featurize the store with this vqacache (vitg stores affine-free tokens)"
            )
        if stored.known and stored.gamma.shape != (self.width,):  # type: ignore[union-attr]
            raise SpecMismatch(f"the store's tokens have width {stored.gamma.shape[0]}, the checkpoint's LayerNorm {self.width}")  # type: ignore[union-attr]
        self.gamma = nn.Parameter(gamma)
        self.beta = nn.Parameter(beta)
        if stored.kind == "affine":
            stored_gamma = torch.from_numpy(stored.gamma.copy())  # type: ignore[union-attr]
            smallest = float(stored_gamma.abs().min())
            if smallest < MIN_ABS_GAMMA:
                channel = int(stored_gamma.abs().argmin())
                raise SpecMismatch(
                    f"the store's LayerNorm gamma is near zero (|gamma[{channel}]| = {smallest:.3g} < {MIN_ABS_GAMMA}): "
                    "its tokens cannot be re-normalised exactly; re-featurize the store affine-free"
                )
            self.register_buffer("stored_gamma", stored_gamma, persistent=False)  # (W,)
            self.register_buffer("stored_beta", torch.from_numpy(stored.beta.copy()), persistent=False)  # type: ignore[union-attr]

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[-1] != self.width:
            raise ValueError(f"tokens have width {tokens.shape[-1]}, this LayerNorm {self.width}")
        y = tokens.to(torch.float32)  # (..., W)
        if self.kind == "affine-free":
            return y * self.gamma + self.beta
        return (y - self.stored_beta) * (self.gamma / self.stored_gamma) + self.beta

    def extra_repr(self) -> str:
        return f"width={self.width}, stored={self.kind}"
