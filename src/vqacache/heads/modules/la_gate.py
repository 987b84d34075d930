"""Language-aware gate (LA-Gate), VideoDistill section 3.2, equations (1)-(3).

The question never enters the visual tokens: it only decides, per head, how much of each
token's value passes. With ``H`` heads of width ``d = D / H`` and the sentence-level text
vector ``t`` (the paper's ``t_cls``), token ``v_i`` becomes::

    v_i + w_o(concat over heads h of  cos(w_q(v_i)^h, w_k(t)^h) * w_v(v_i)^h)

* the key comes from the text, queries and values from the visual tokens (1);
* the gate is the raw cosine between a token's query and the key, one scalar per token and
  head, broadcast ("repeat") over the head's ``d`` channels (2). There is no sigmoid or
  softmax: the paper uses the cosine itself as the importance coefficient, so a token can
  be excited, depressed or flipped;
* the gated values go through the output projection ``w_o`` (3), and the input skip
  connection the paper adds "on v_distill" gives the leading ``v_i +``.

Heads follow "a standard multi-head attention setting" on ``w_q, w_k, w_v, w_o``. Only one
text vector is used (the paper's L = 1 case), so there is no sum over text tokens.

:class:`CrossAttentionFusion` is Table 4 (e)'s replacement ("we replace LA-Gates in both
modules with cross-attention layers"); :data:`FUSIONS` names both for the blocks' ``fusion``
argument.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LAGate(nn.Module):
    """Multi-head language-aware gate over a token sequence.

    Args:
        dim: D, width of the visual tokens (and of the output).
        num_heads: H; must divide ``dim``.
        text_dim: width of the text vector; defaults to ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, text_dim: int | None = None) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} is not divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(text_dim or dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, dim)

    def forward(self, v: Tensor, text: Tensor) -> Tensor:
        """v (B, M, D) visual tokens, text (B, Dt) sentence vector -> (B, M, D)."""
        return self.forward_with_gates(v, text)[0]

    def forward_with_gates(self, v: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward`, also returning the gates (B, H, M) for inspection."""
        B, M, D = v.shape
        H = self.num_heads
        # eq. (1): the key from the text, queries and values from the visual tokens
        key = self.w_k(text).view(B, 1, H, D // H)  # (B, 1, H, d)
        query = self.w_q(v).view(B, M, H, D // H)  # (B, M, H, d)
        value = self.w_v(v).view(B, M, H, D // H)  # (B, M, H, d)
        dist = F.cosine_similarity(query, key, dim=-1).unsqueeze(-1)  # (B, M, H, 1)  eq. (2)
        out = v + self.w_o((dist * value).reshape(B, M, D))  # (B, M, D)  eq. (3) + input skip
        return out, dist.squeeze(-1).transpose(1, 2)


class CrossAttentionFusion(nn.Module):
    """V2T cross-attention in place of an LA-Gate (VideoDistill Table 4 (e)):
    ``v_i + W_o(sum_j softmax_j(q_i . k_j / sqrt(d)) W_v t_j)`` with queries from the visual
    tokens and keys/values from the text, multi-head, with the input skip the gate also has.

    With the single sentence vector the gates read (one key), the softmax over one key is 1:
    every token receives the same ``W_o W_v t``, the text added into the visual stream, which
    is the "direct fusion" the paper's LA-Gate is designed to avoid (section 3.2). Same
    interface as :class:`LAGate`: v (B, M, D), text (B, Dt) or text tokens (B, L, Dt) -> (B, M, D).
    """

    def __init__(self, dim: int, num_heads: int, text_dim: int | None = None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, kdim=text_dim or dim, vdim=text_dim or dim, batch_first=True)

    def forward(self, v: Tensor, text: Tensor) -> Tensor:
        t = text.unsqueeze(1) if text.dim() == 2 else text  # (B, L, Dt)
        return v + self.attn(v, t, t, need_weights=False)[0]  # (B, M, D)


FUSIONS: dict[str, type[nn.Module]] = {"la_gate": LAGate, "cross_attention": CrossAttentionFusion}
"""How the question meets the visual tokens in the frame sampling and refinement blocks."""
