"""Answer heads on top of the video representation (VideoDistill appendix B.2).

* :class:`VideoTextMatching`: multiple choice as the paper does it: "we concatenate five
  answers with the question into five sentences, then choose the answer with the maximum
  logit over the VTM head" (a "linear projection head on the top of v_cls^*" giving two
  matching logits, eq. 7). The caller encodes the video once per candidate sentence;
  :class:`QuestionAnswerPair` makes that sentence's vector from the cached ones.

* :class:`AnswerClassifier`: open-ended questions, "a two-layer MLP classification head over
  all answer candidates ... on the top of visual representation v_cls^*".
* :class:`CandidateScorer`: multiple choice, one logit per candidate answer. The paper
  instead re-encodes the video once per question+answer sentence and reads a binary
  video-text-matching head; this head scores a single video vector (or one per candidate,
  if the caller did re-encode) against each candidate's text vector by the cosine of
  learned projections over a learnable temperature, the similarity ``s(v, t) / tau`` the
  paper's contrastive loss uses (``tau`` starts at its 0.07).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AnswerClassifier(nn.Module):
    """Two-layer MLP: video vector (B, D) -> answer logits (B, A).

    Args:
        dim: D.
        num_answers: A, the size of the answer vocabulary.
        hidden_dim: hidden width; defaults to ``dim``.
        dropout: dropout on the hidden layer.
    """

    def __init__(
        self, dim: int, num_answers: int, hidden_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_answers)
        )

    def forward(self, video: Tensor) -> Tensor:
        """video (B, D) -> logits (B, A)."""
        return self.mlp(video)


class CandidateScorer(nn.Module):
    """Video-text matching over candidate answers: -> logits (B, C), padding at ``-inf``.

    Args:
        video_dim: width of the video vector.
        text_dim: width of a candidate's text vector.
        embed_dim: width of the shared space both are projected into.
        temperature: initial temperature; learned (as a log scale, capped at 1/100).
    """

    def __init__(
        self, video_dim: int, text_dim: int, embed_dim: int, temperature: float = 0.07
    ) -> None:
        super().__init__()
        self.video_proj = nn.Linear(video_dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, video: Tensor, candidates: Tensor, candidate_mask: Tensor) -> Tensor:
        """video (B, Dv) or (B, C, Dv), candidates (B, C, Dt), candidate_mask (B, C) bool.

        ``candidate_mask`` is True for real candidates; every row needs at least one, or
        its softmax is NaN. Returns (B, C) logits, ``-inf`` where the mask is False.
        """
        if video.dim() == 2:
            video = video.unsqueeze(1)  # (B, 1, Dv): one vector for all candidates
        v = F.normalize(self.video_proj(video), dim=-1)  # (B, 1 or C, E)
        c = F.normalize(self.text_proj(candidates), dim=-1)  # (B, C, E)
        scale = self.log_scale.exp().clamp(max=100.0)
        logits = scale * (v * c).sum(dim=-1)  # (B, C)
        return logits.masked_fill(~candidate_mask, float("-inf"))


class QuestionAnswerPair(nn.Module):
    """The vector of "question + candidate" from their cached sentence vectors:
    ``W [t_q ; t_a] + b`` -> (..., Dt). The paper encodes the concatenated sentence with CLIP's
    text tower; a store caches the question's and each candidate's vectors separately (a frozen
    tower), so a learned linear map of the pair stands in for the joint encoding.
    """

    def __init__(self, text_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * text_dim, text_dim)

    def forward(self, question: Tensor, candidates: Tensor) -> Tensor:
        """question (B, Dt), candidates (B, C, Dt) -> (B, C, Dt)."""
        q = question.unsqueeze(1).expand(-1, candidates.shape[1], -1)  # (B, C, Dt)
        return self.proj(torch.cat([q, candidates], dim=-1))


class VideoTextMatching(nn.Module):
    """VTM head: ``Linear(D, 2)`` on each candidate's video vector; the candidate's logit is the
    log-odds of "matched", ``y_1 - y_0`` (the softmax of eq. 7's two logits ranks candidates
    as this difference does). video (B, C, D), candidate_mask (B, C) -> (B, C), ``-inf`` on padding.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, video: Tensor, candidate_mask: Tensor) -> Tensor:
        y = self.proj(video)  # (B, C, 2)
        return (y[..., 1] - y[..., 0]).masked_fill(~candidate_mask, float("-inf"))
