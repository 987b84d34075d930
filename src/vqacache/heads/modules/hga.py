"""Heterogeneous Graph Alignment (HGA, Jiang and Han, AAAI 2020) components: masked sequence
compaction, a bidirectional GRU encoder, co-attention between question and video nodes, the
learned adjacency, the graph convolutions, attention pooling and a bilinear fusion.

Read from the NExT-QA release (doc-doc/NExT-QA ``networks/``: ``VQAModel/HGA.py``,
``gcn.py``, ``q_v_transformer.py``, ``EncoderRNN.py``), rewritten; where they differ from
that code the class says so. All masks are bool, True on real rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def compact(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, L, D), mask (B, L) -> the real rows moved to the front in their order (B, L, D)
    (zeros after) and their count (B,). A guided or single-frame input (a few clips scattered
    over the video) becomes a short sequence, as the released HGA variant with a temporal mask
    packs only the foreground clips."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real first, stable
    out = x.gather(1, order.unsqueeze(-1).expand_as(x))
    lengths = mask.sum(1)
    keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, L)
    return out * keep.unsqueeze(-1).to(out.dtype), lengths


class SequenceEncoder(nn.Module):
    """Linear + ReLU + dropout, then a bidirectional GRU over the real rows only.

    x (B, L, Din), mask (B, L) -> outputs (B, L, H) (LayerNorm without affine, zeros after the
    real rows, which are compacted to the front), last hidden (B, H) (both directions' final
    states), mask of the outputs (B, L). H is split over the two directions (H/2 each), so the
    width stays ``hidden`` (the release doubles it; only the width differs)."""

    def __init__(self, dim_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"HGA hidden width must be even (two GRU directions), got {hidden}")
        self.embed = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.rnn = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, lengths = compact(self.embed(x), mask)  # (B, L, H), (B,)
        safe = lengths.clamp_min(1)  # a row without any real input reads one zero row
        packed = pack_padded_sequence(x, safe.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)  # hidden (2, B, H/2)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, L, H)
        new_mask = torch.arange(x.shape[1], device=x.device)[None, :] < safe[:, None]
        return self.norm(out) * new_mask.unsqueeze(-1), torch.cat([hidden[0], hidden[1]], -1), new_mask


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """scores (..., K) softmax over K where mask (..., K); rows without any real entry -> zeros."""
    p = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.nan_to_num(p, nan=0.0)


class CoAttention(nn.Module):
    """One co-attention layer: each question node attends over the video nodes and each video
    node over the question nodes (scaled dot product, padded keys masked, padded queries zeroed),
    a linear map and a residual LayerNorm (no affine), as ``CoAttentionLayer`` of the release.

    q (B, Lq, H), v (B, T, H), masks -> (q', v') of the same shapes."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q_key, self.v_key = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
        self.q_val, self.v_val = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
        self.q_out, self.v_out = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)

    def forward(self, q: Tensor, v: Tensor, q_mask: Tensor, v_mask: Tensor) -> tuple[Tensor, Tensor]:
        qk, vk = self.q_key(q), self.v_key(v)
        scores = qk @ vk.transpose(1, 2) * q.shape[-1] ** -0.5  # (B, Lq, T)
        a_qv = _masked_softmax(scores, v_mask[:, None, :]) * q_mask[:, :, None]
        a_vq = _masked_softmax(scores.transpose(1, 2), q_mask[:, None, :]) * v_mask[:, :, None]  # (B, T, Lq)
        q2 = self.norm(self.q_out(a_qv @ self.v_val(v)) + q) * q_mask[..., None]
        v2 = self.norm(self.v_out(a_vq @ self.q_val(q)) + v) * v_mask[..., None]
        return q2, v2


class AdjacencyLearner(nn.Module):
    """A = h h^T with h = ReLU(W2 ReLU(W1 x)) over the joint nodes x (B, M, H) (``AdjLearner``
    of the release, without its weight normalisation); rows and columns of padded nodes are 0.
    Returns (B, M, M), unnormalised as in the release."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(hidden, hidden, bias=False), nn.ReLU(),
                                  nn.Linear(hidden, hidden, bias=False), nn.ReLU())

    def forward(self, nodes: Tensor, mask: Tensor) -> Tensor:
        h = self.edge(nodes) * mask[..., None]  # (B, M, H)
        return h @ h.transpose(1, 2)


class GraphConvolution(nn.Module):
    """X' = dropout(ReLU(LayerNorm(A X W))) per layer (the release's ``GCN``: ``num_layers=2``
    there builds three such convolutions; ``layers`` here counts convolutions)."""

    def __init__(self, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        """x (B, M, H), adj (B, M, M), mask (B, M) -> (B, M, H)."""
        for w in self.weights:
            x = self.dropout(F.relu(self.norm(adj @ w(x)))) * mask[..., None]
        return x


class AttentionPool(nn.Module):
    """sum_m a_m x_m with a = softmax over the real nodes of MLP(x): (B, M, H) -> (B, H).

    The release applies its softmax over a last axis of size 1 (every weight 1: a plain sum);
    this follows the paper's attention pooling (softmax over the nodes)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        a = _masked_softmax(self.score(x).squeeze(-1), mask)  # (B, M)
        return (a.unsqueeze(-1) * x).sum(1)


class BilinearFusion(nn.Module):
    """Low-rank bilinear fusion of two vectors: W_o (dropout(W_a a * W_b b)), (B, Ha), (B, Hb) -> (B, out).

    The release uses ``block.fusions.Block`` (block-superdiagonal tensor fusion, a package
    vqacache does not depend on); this is its rank-limited bilinear family's simplest member."""

    def __init__(self, dim_a: int, dim_b: int, out: int, rank: int, dropout: float) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(dim_a, rank), nn.Linear(dim_b, rank)
        self.out = nn.Linear(rank, out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.out(self.dropout(self.a(a) * self.b(b)))


__all__ = [
    "AdjacencyLearner", "AttentionPool", "BilinearFusion", "CoAttention", "GraphConvolution", "SequenceEncoder",
    "compact",
]
