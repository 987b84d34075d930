"""MCG's token-level contrast (TCL, eq. 4-7) and its saliency weights alpha and beta.

For one video-text pair with K words y^k and J patches x^j (both projected and l2-normalised):

* each word's **video response** r^k = normalise(softmax(y^k . X^T / 0.1) X) (eq. 4 as the
  released code computes it: attention with temperature 0.1; the paper's tanh memory is not
  implemented);
* L_tvc (eq. 5): sim = y . r^T / tau_2 (K, K); per word k, the cross-entropy of row k
  (y^k against every response, target r^k) and of column k (r^k against every word, target
  y^k), their mean weighted by alpha^k, summed over the words, averaged over the batch;
* L_tlc (eq. 6, absent from the paper's text: the mirror of eq. 5): the same with patches as
  queries and words as keys, weighted by beta^j;
* L_TCL = (L_tvc + L_tlc) / 2 (eq. 7).

tau_2 = 0.1 fixed (the released ``mcl_local_temperature``; the paper calls it learnable).
The weights sum to 1 per pair (the released code's normalisation), where eq. 5 writes
1/(2NK): the same up to the constant K. Padded words are masked out of every softmax (the
released code leaves them in the denominators, with weight 0). Both responses are
normalised (the released code does not normalise the patches' text response).

Saliency (no gradient): alpha from the text encoder's last-layer CLS attention (mean over
heads) with word pieces summed into words; beta from the adapter's CLS-to-patch attention;
each clipped to its row's 10% and 90% quantiles over the valid entries, then normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TCL_TEMP = 0.1
QUANTILES = (0.1, 0.9)


def word_index(tokens: list[str], specials: set[str]) -> list[int]:
    """Word number of each token (-1 for special tokens); a ``##`` piece continues the word before it."""
    out, word = [], -1
    for tok in tokens:
        if tok in specials:
            out.append(-1)
            continue
        if not (tok.startswith("##") and word >= 0):
            word += 1
        out.append(word)
    return out


def pool_words(emb: Tensor, attn: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sum word pieces into words.

    emb (B, L, D) token states, attn (B, L) CLS attention, index (B, L) word number (-1: none)
    -> words (B, K, D), word attention (B, K), mask (B, K) bool (K = most words in a row)."""
    B, L, D = emb.shape
    K = max(int(index.max()) + 1, 1)
    valid = index >= 0
    slot = index.clamp(min=0)
    words = emb.new_zeros(B, K, D).index_put_((torch.arange(B)[:, None].expand(B, L)[valid], slot[valid]),
                                              emb[valid], accumulate=True)
    word_attn = attn.new_zeros(B, K).index_put_((torch.arange(B)[:, None].expand(B, L)[valid], slot[valid]),
                                                attn[valid], accumulate=True)
    mask = torch.zeros(B, K, dtype=torch.bool, device=emb.device)
    mask[torch.arange(B)[:, None].expand(B, L)[valid], slot[valid]] = True
    return words, word_attn, mask


def saliency(raw: Tensor, mask: Tensor) -> Tensor:
    """raw (B, N), mask (B, N) bool -> weights (B, N): each row's valid entries clipped to their
    10%/90% quantiles and divided by their sum; 0 on invalid entries."""
    out = torch.zeros_like(raw)
    for b in range(raw.shape[0]):
        v = raw[b][mask[b]]
        if v.numel() == 0:
            continue
        lo, hi = torch.quantile(v, QUANTILES[0]), torch.quantile(v, QUANTILES[1])
        v = v.clamp(lo, hi)
        out[b, mask[b]] = v / v.sum().clamp_min(1e-12)
    return out


def directional_contrast(query: Tensor, keys: Tensor, query_mask: Tensor, key_mask: Tensor, weight: Tensor,
                         temp: float = TCL_TEMP) -> Tensor:
    """One direction of eq. 5/6.

    query (B, N, D), keys (B, M, D) l2-normalised; masks (B, N), (B, M) bool; weight (B, N)
    -> () the weighted loss, batch mean."""
    att = (query @ keys.transpose(1, 2)) / temp  # (B, N, M)
    att = att.masked_fill(~key_mask[:, None, :], float("-inf"))
    resp = F.normalize(att.softmax(-1) @ keys, dim=-1)  # (B, N, D): r^n
    sim = (query @ resp.transpose(1, 2)) / temp  # (B, N, N): sim[n, m] = q^n . r^m / tau_2
    pair = query_mask[:, :, None] & query_mask[:, None, :]
    sim = sim.masked_fill(~pair, float("-inf"))
    diag = torch.diagonal(sim, dim1=1, dim2=2)  # (B, N)
    q2r = torch.logsumexp(sim, dim=2) - diag  # row n: q^n against every response
    r2q = torch.logsumexp(sim, dim=1) - diag  # column n: r^n against every query
    per = ((q2r + r2q) / 2).masked_fill(~query_mask, 0.0)
    return (weight * per).sum(1).mean()


def token_contrast(words: Tensor, patches: Tensor, word_mask: Tensor, alpha: Tensor, beta: Tensor,
                   temp: float = TCL_TEMP) -> Tensor:
    """words (B, K, D), patches (B, J, D) l2-normalised, word_mask (B, K), alpha (B, K), beta (B, J)
    -> L_TCL ()."""
    patch_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
    l_tvc = directional_contrast(words, patches, word_mask, patch_mask, alpha, temp)  # eq. 5
    l_tlc = directional_contrast(patches, words, patch_mask, word_mask, beta, temp)  # eq. 6
    return (l_tvc + l_tlc) / 2  # eq. 7
