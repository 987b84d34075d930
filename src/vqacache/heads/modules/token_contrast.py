"""MCG's token-level contrast (TCL, eq. 4-7) and its saliency weights alpha and beta.

For one video-text pair with K words y^k and J patches x^j (both projected and l2-normalised):

* each word's **video response** r^k (eq. 4), one of two ``response`` rules:

  - ``softmax`` (default, the released code): r^k = normalise(softmax(y^k . X^T / 0.1) X),
    attention over the patches at temperature 0.1;
  - ``tanh`` (the paper's memory read-out, eq. 4): r^k = normalise(M^T softmax(tanh(M)
    tanh(u^k))), the memory M = the projected patches X (J x 256), the internal state u^k = the
    projected word y^k (``g_y``'s output is the map to the memory dimension d_m = 256; no
    further parameters), no temperature; the normalisation makes sim() a cosine as in eq. 5;

* L_tvc (eq. 5): sim = y . r^T / tau_2 (K, K); per word k, the cross-entropy of row k
  (y^k against every response, target r^k) and of column k (r^k against every word, target
  y^k), their mean weighted by alpha^k, summed over the words, averaged over the batch;
* L_tlc (eq. 6, absent from the paper's text: the mirror of eq. 5): the same with patches as
  queries and words as keys (memory = the words), weighted by beta^j;
* L_TCL = (L_tvc + L_tlc) / 2 (eq. 7).

tau_2 = 0.1 (the released ``mcl_local_temperature``), fixed, or a learnable tensor (the paper
calls it learnable: the caller passes it, :class:`TokenTemperature`); the ``softmax`` rule's
attention temperature stays 0.1 either way (the released code uses one constant for both).
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
from torch import Tensor, nn

TCL_TEMP = 0.1
TEMP_MIN, TEMP_MAX = 0.001, 0.5
QUANTILES = (0.1, 0.9)
RESPONSES = ("softmax", "tanh")


class TokenTemperature(nn.Module):
    """A learnable tau_2 (start 0.1), clamped to [0.001, 0.5] in place before every use (as
    ICL's tau_1)."""

    def __init__(self, init: float = TCL_TEMP) -> None:
        super().__init__()
        self.temp = nn.Parameter(torch.tensor(init))

    def forward(self) -> Tensor:
        with torch.no_grad():
            self.temp.clamp_(TEMP_MIN, TEMP_MAX)
        return self.temp


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


def responses(query: Tensor, keys: Tensor, key_mask: Tensor, response: str = "softmax") -> Tensor:
    """eq. 4: query (B, N, D), keys (B, M, D), key_mask (B, M) bool -> the l2-normalised responses
    (B, N, D) of each query over the keys (``softmax``: attention at temperature 0.1;
    ``tanh``: softmax(tanh(keys) tanh(query)) over the keys, the paper's memory read-out)."""
    if response == "softmax":
        att = (query @ keys.transpose(1, 2)) / TCL_TEMP  # (B, N, M)
    elif response == "tanh":
        att = torch.tanh(query) @ torch.tanh(keys).transpose(1, 2)  # (B, N, M): tanh(M) tanh(u^n)
    else:
        raise ValueError(f"unknown TCL response {response!r}; valid: {', '.join(RESPONSES)}")
    att = att.masked_fill(~key_mask[:, None, :], float("-inf"))
    return F.normalize(att.softmax(-1) @ keys, dim=-1)  # r^n = M^T rho^n


def directional_contrast(query: Tensor, keys: Tensor, query_mask: Tensor, key_mask: Tensor, weight: Tensor,
                         temp: float | Tensor = TCL_TEMP, response: str = "softmax") -> Tensor:
    """One direction of eq. 5/6.

    query (B, N, D), keys (B, M, D) l2-normalised; masks (B, N), (B, M) bool; weight (B, N);
    ``temp`` tau_2 -> () the weighted loss, batch mean."""
    resp = responses(query, keys, key_mask, response)  # (B, N, D): r^n
    sim = (query @ resp.transpose(1, 2)) / temp  # (B, N, N): sim[n, m] = q^n . r^m / tau_2
    pair = query_mask[:, :, None] & query_mask[:, None, :]
    sim = sim.masked_fill(~pair, float("-inf"))
    diag = torch.diagonal(sim, dim1=1, dim2=2)  # (B, N)
    q2r = torch.logsumexp(sim, dim=2) - diag  # row n: q^n against every response
    r2q = torch.logsumexp(sim, dim=1) - diag  # column n: r^n against every query
    per = ((q2r + r2q) / 2).masked_fill(~query_mask, 0.0)
    return (weight * per).sum(1).mean()


def token_contrast(words: Tensor, patches: Tensor, word_mask: Tensor, alpha: Tensor, beta: Tensor,
                   temp: float | Tensor = TCL_TEMP, response: str = "softmax") -> Tensor:
    """words (B, K, D), patches (B, J, D) l2-normalised, word_mask (B, K), alpha (B, K), beta (B, J),
    tau_2, the response rule -> L_TCL ()."""
    patch_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
    l_tvc = directional_contrast(words, patches, word_mask, patch_mask, alpha, temp, response)  # eq. 5
    l_tlc = directional_contrast(patches, words, patch_mask, word_mask, beta, temp, response)  # eq. 6
    return (l_tvc + l_tlc) / 2  # eq. 7
