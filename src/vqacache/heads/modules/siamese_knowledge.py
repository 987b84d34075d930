"""Siamese knowledge (SiaSamRea section 3.3): generation (eq. 1-2) and reasoning (eq. 3-5)
over the N clips of one question (clip 0 the anchor).

* :func:`siamese_affinity` (SKG): ``A(i, j) = <F(f_i)/|F(f_i)|, F(f_j)/|F(f_j)|>``, the
  diagonal removed, then a softmax over j != i of each row. F is the network under training
  itself (F(f) = f, the backbone's pooled clip-question feature), as in BAKE, whose affinities
  are the cosines of the network's own features: the affinities are detached (as in BAKE),
  so a separate projection would never receive a gradient. ``temperature`` divides A before
  the softmax; the paper gives none (default 1).
* :func:`average_affinity`: the "w/ SKR" ablation (SKG replaced by plain averaging):
  A_hat(i, j) = 1 / (N - 1) for j != i.
* :class:`SiameseKnowledgeReasoning` (SKR): ``p_hat_i = sum_{j != i} A_hat(i, j) p_j``, then
  one soft label per question ``Q = w W1 A_hat P + (1 - w) W2 P``. W1 and W2 (1 x N) are
  learnable weightings over the N clips kept on the simplex by a softmax over logits that
  start at 0 (uniform); the paper says only "trainable weights" with Q summing to 1. Without
  W1 (or W2) the weighting is the anchor's one-hot row, i.e. eq. 3's ``p_hat_anchor`` (or the
  anchor's own prediction), BAKE's per-sample form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SiameseKnowledgeReasoning", "average_affinity", "siamese_affinity"]


def siamese_affinity(features: Tensor, temperature: float = 1.0) -> Tensor:
    """features (Q, N, D), N >= 2 -> A_hat (Q, N, N): rows sum to 1 over j != i, zero diagonal."""
    N = features.shape[1]
    if N < 2:
        raise ValueError("siamese knowledge needs at least two clips")
    z = F.normalize(features, dim=-1)  # (Q, N, D)
    A = z @ z.transpose(1, 2)  # eq. 1: (Q, N, N) cosines
    self_loop = torch.eye(N, dtype=torch.bool, device=features.device)
    return (A / temperature).masked_fill(self_loop, float("-inf")).softmax(-1)  # eq. 2: softmax over j != i


def average_affinity(features: Tensor, temperature: float = 1.0) -> Tensor:
    """features (Q, N, D) (only the shape is used) -> A_hat (Q, N, N) = 1/(N-1) off the diagonal."""
    Q, N = features.shape[:2]
    if N < 2:
        raise ValueError("siamese knowledge needs at least two clips")
    off = 1.0 - torch.eye(N, device=features.device, dtype=features.dtype)
    return (off / (N - 1)).expand(Q, N, N)


class SiameseKnowledgeReasoning(nn.Module):
    """A_hat (Q, N, N), P (Q, N, K) -> soft label Q (Q, K) on the simplex.

    Args:
        num_clips: N (clip 0 is the anchor).
        omega: w in eq. 5 (0.5 in the paper).
        learn_w1: W1 learnable; else the anchor's one-hot row (the "without W1" ablation).
        learn_w2: W2 learnable; else the anchor's one-hot row (the "without W2" ablation).
    """

    def __init__(self, num_clips: int, omega: float = 0.5, learn_w1: bool = True, learn_w2: bool = True) -> None:
        super().__init__()
        self.omega = omega
        self.w1_logits = nn.Parameter(torch.zeros(num_clips)) if learn_w1 else None  # (N,)
        self.w2_logits = nn.Parameter(torch.zeros(num_clips)) if learn_w2 else None
        self.register_buffer("anchor", F.one_hot(torch.tensor(0), num_clips).float(), persistent=False)  # (N,)

    def weights(self) -> tuple[Tensor, Tensor]:
        """(W1, W2), each (N,) on the simplex."""
        w1 = self.anchor if self.w1_logits is None else self.w1_logits.softmax(0)
        w2 = self.anchor if self.w2_logits is None else self.w2_logits.softmax(0)
        return w1, w2

    def forward(self, affinity: Tensor, probs: Tensor) -> Tensor:
        w1, w2 = self.weights()
        propagated = affinity @ probs  # eq. 3: (Q, N, K), row i = sum_{j != i} A_hat(i, j) p_j
        p_hat = torch.einsum("n,qnk->qk", w1, propagated)  # eq. 4: W A_hat P, (Q, K)
        return self.omega * p_hat + (1 - self.omega) * torch.einsum("n,qnk->qk", w2, probs)  # eq. 5
