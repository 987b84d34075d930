"""InstructBLIP's Q-Former applied to frames one at a time (VLAP eq. 6), projected to the LLM.

``X' = CrossAttn(E_t(X_q), SelfAttn(E_v(X_v), q))``: Q learned queries ``q`` (32, 768) share
the self-attention layers with the question's tokens ``E_t(X_q)`` and cross-attend to ONE
frame's N tokens ``E_v(X_v)`` (N = 257 for ViT-g). Each of the K frames goes through the
same Q-Former separately (frames folded into the batch); the query outputs (not the text
positions) are projected by ``Linear(768 -> d_llm)`` and the K frames' outputs concatenated
in frame order: (B, K Q, d_llm), frame k's queries at ``[k Q, (k + 1) Q)``, as the released
code's ``torch.cat(inputs_t5, dim=1)``.

The Q-Former is transformers' :class:`~transformers.InstructBlipQFormerModel`, whose attention
mask covers the queries and the text (all queries attended: ones, then the text's mask).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FrameQFormer(nn.Module):
    """frames (B, K, N, W) + question tokens (B, L) -> (B, K Q, d_llm).

    Args:
        qformer: an ``InstructBlipQFormerModel`` (``encoder_hidden_size`` = W).
        query_tokens: (1, Q, H) initial learned queries (copied into a parameter).
        projection: ``Linear(H -> d_llm)``.
    """

    def __init__(self, qformer: nn.Module, query_tokens: Tensor, projection: nn.Linear) -> None:
        super().__init__()
        self.qformer = qformer
        self.query_tokens = nn.Parameter(query_tokens.detach().clone().reshape(1, *query_tokens.shape[-2:]))
        self.projection = projection

    @property
    def num_queries(self) -> int:
        return self.query_tokens.shape[1]

    def forward(self, frames: Tensor, input_ids: Tensor, attention_mask: Tensor, queries: Tensor | None = None,
                projection: nn.Module | None = None) -> Tensor:
        """frames (B, K, N, W), input_ids/attention_mask (B, L) -> (B, K Q, d_llm).

        ``queries`` (1, Q, H) / ``projection``: others than this module's (the released VLAP
        code runs its teacher through the student's Q-Former with the teacher's queries)."""
        B, K, N, W = frames.shape
        query_tokens = self.query_tokens if queries is None else queries
        project = self.projection if projection is None else projection
        Q = query_tokens.shape[1]
        visual = frames.reshape(B * K, N, W)  # (B K, N, W): each frame on its own
        ids = input_ids.repeat_interleave(K, dim=0)  # (B K, L), sample b's rows are b K .. b K + K - 1
        text_mask = attention_mask.repeat_interleave(K, dim=0)
        queries = query_tokens.expand(B * K, -1, -1)  # (B K, Q, H)
        mask = torch.cat([text_mask.new_ones(B * K, Q), text_mask], dim=1)  # (B K, Q + L)
        out = self.qformer(
            input_ids=ids, attention_mask=mask, query_embeds=queries,
            encoder_hidden_states=visual, encoder_attention_mask=visual.new_ones(B * K, N, dtype=torch.long),
        ).last_hidden_state  # (B K, Q + L, H)
        projected = project(out[:, :Q])  # (B K, Q, d_llm)  eq. 6, query positions only
        return projected.reshape(B, K * Q, -1)  # frames' queries concatenated in frame order
