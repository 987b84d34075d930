"""Differentiable top-K frame selection by Gumbel-softmax with a straight-through mask,
VideoDistill section 3.3, equations (4)-(6).

The selector scores N frames once per slot: the paper projects the last frame-sampling
block's output with a linear layer ``W_s`` to K channels and treats each row
``x^k`` (over the N frames) as its own categorical distribution. Each of the K slots then
draws one frame independently, so the same frame may fill several slots (the paper's
appendix F: "models with K > 4 allow duplicate selection"). For each slot::

    y_soft = softmax((x^k + g) / tau),  g ~ Gumbel(0, 1)           (4)
    y_hard = onehot(argmax(y_soft))                                (5)
    mask   = y_hard + y_soft - stopgrad(y_soft)                    (6)

so the forward pass sees exact one-hot rows and the backward pass the soft probabilities.
Out of training the noise is dropped and each slot takes the argmax of its own row, which
is deterministic. :func:`select_frames` then gathers the chosen frames with the gradients of
``mask @ frames``, which carry every frame's patches back to its logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gumbel_topk(
    logits: Tensor,
    tau: float = 1.0,
    *,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick one frame per slot; logits (B, K, N) -> (index (B, K) int64, mask (B, K, N)).

    ``mask`` is one-hot in value and has the softmax's gradient. Logits of ``-inf`` (padded
    frames) are never picked as long as each row has a finite entry. With ``noise=False``
    the choice is the plain argmax of each row.
    """
    if noise:
        u = torch.empty_like(logits).exponential_(generator=generator)
        logits = logits - u.log()  # + Gumbel(0, 1) noise: -log(Exp(1))
    y_soft = (logits / tau).softmax(dim=-1)  # (B, K, N)  eq. (4)
    index = y_soft.argmax(dim=-1)  # (B, K)
    y_hard = F.one_hot(index, logits.shape[-1]).to(y_soft.dtype)  # (B, K, N)  eq. (5)
    return index, y_hard + y_soft - y_soft.detach()  # eq. (6)


class _StraightThroughSelect(torch.autograd.Function):
    """forward: gather the picked rows; backward: the gradients of ``mask @ frames``."""

    @staticmethod
    def forward(ctx, mask: Tensor, index: Tensor, frames: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(mask, index, frames)
        view = index.unsqueeze(-1).expand(-1, -1, frames.shape[-1])  # (B, K, F)
        return frames.gather(1, view)  # (B, K, F): exactly the picked rows

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:  # noqa: ANN001
        mask, index, frames = ctx.saved_tensors
        grad_mask = grad_frames = None
        if ctx.needs_input_grad[0]:
            grad_mask = grad @ frames.transpose(1, 2)  # (B, K, F) x (B, F, N) -> (B, K, N): every frame's logit
        if ctx.needs_input_grad[2]:
            grad_frames = mask.transpose(1, 2) @ grad  # (B, N, K) x (B, K, F) -> (B, N, F)
        return grad_mask, None, grad_frames


def select_frames(mask: Tensor, frames: Tensor, index: Tensor | None = None) -> Tensor:
    """Gather the selected frames: mask (B, K, N), frames (B, N, ...) -> (B, K, ...).

    Values: the frames picked by ``index`` (B, K) (the argmax of each mask row when None).
    Gradients: those of the product ``mask @ frames`` (frames flattened to F = P x D per
    frame), so every frame's selection logit gets ``<dL/d selected_k, frames[n]>``. The
    forward pass is a gather (K x F values) instead of the dense (K x N) by (N x F) product,
    and the backward pass one (K x F) by (F x N) product for the mask, never a K x N x F
    tensor. The mask's one-hot rows carry the rounding of eq. (6) (``1 + s - s``), which the
    product multiplied into the values and the gather does not (values differ by ~1e-7).
    """
    B, N = frames.shape[:2]
    if index is None:
        index = mask.argmax(dim=-1)
    flat = frames.reshape(B, N, -1)  # (B, N, F)
    return _StraightThroughSelect.apply(mask, index, flat).reshape(B, mask.shape[1], *frames.shape[2:])


class GumbelTopK(nn.Module):
    """:func:`gumbel_topk` with Gumbel noise in training mode and plain argmax in eval mode.

    Args:
        tau: softmax temperature of eq. (4); a plain attribute, so a training loop may anneal it.
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau

    def forward(
        self, logits: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """logits (B, K, N) -> (index (B, K), straight-through mask (B, K, N))."""
        return gumbel_topk(logits, self.tau, noise=self.training, generator=generator)

    def soft(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Eq. (4) alone, for soft sampling (VideoDistill Table 4 (c)): logits (B, K, N) -> weights
        (B, K, N), ``softmax((x + g) / tau)`` with Gumbel noise g in training, ``softmax(x / tau)`` else."""
        if self.training:
            u = torch.empty_like(logits).exponential_(generator=generator)
            logits = logits - u.log()
        return (logits / self.tau).softmax(dim=-1)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
