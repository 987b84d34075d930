"""MCG's video-text matching (VTM, eq. 9) with in-batch hard negatives (as ALBEF/BLIP, whose
fusor MCG follows): for each video a negative question drawn from the batch with
probability softmax(sim_v2t) over the other questions, for each question a negative video
likewise; the fusor's [FUS] output of the B positive and 2B negative pairs goes through
Linear(H -> 2) and a cross-entropy against match (1) / no match (0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hard_negatives(sim: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """sim (B, B) video-to-text similarities -> (negative text of each video (B,), negative video
    of each text (B,)), drawn from the softmax of each row (column) with the positive excluded.
    B = 1 has no negative: returns empty indices."""
    B = sim.shape[0]
    if B < 2:
        empty = torch.zeros(0, dtype=torch.long, device=sim.device)
        return empty, empty
    eye = torch.eye(B, dtype=torch.bool, device=sim.device)
    with torch.no_grad():
        w_v2t = sim.float().softmax(1).masked_fill(eye, 0.0) + 1e-8 * ~eye
        w_t2v = sim.float().t().softmax(1).masked_fill(eye, 0.0) + 1e-8 * ~eye
        neg_text = torch.multinomial(w_v2t, 1, generator=generator).squeeze(1)
        neg_video = torch.multinomial(w_t2v, 1, generator=generator).squeeze(1)
    return neg_text, neg_video


def matching_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """pos (B, 2), neg (B', 2) VTM logits -> H(q^vtm, p^vtm), mean over the pairs  # eq. 9"""
    logits = torch.cat([pos_logits, neg_logits])
    target = torch.cat([torch.ones(len(pos_logits)), torch.zeros(len(neg_logits))]).long().to(logits.device)
    return F.cross_entropy(logits, target)
