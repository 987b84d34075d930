"""MCG's answer generator (AGor, eq. 10): the language-modelling loss of a causal text decoder
with cross-attention (label smoothing 0.1, as BLIP's decoder, whose design MCG follows), and
beam search (beam 3, at most 10 tokens with the start token, as the released code's
``generate(max_length=10, num_beams=3)``).

The decoder itself is the text model (:mod:`.bert_family`); these functions only need its
logits. The loss follows the released code: each answer's token losses summed, then the mean
over the batch (``loss.sum() / B``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LABEL_SMOOTHING = 0.1
NUM_BEAMS, MAX_LENGTH = 3, 10


def lm_loss(logits: Tensor, ids: Tensor, mask: Tensor, smoothing: float = LABEL_SMOOTHING) -> Tensor:
    """logits (B, L, V) of the decoder fed ids (B, L) ([GEN] answer [SEP], mask (B, L)) -> ()

    token l + 1 is predicted from the logits at l; padded targets are ignored  # eq. 10"""
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, L-1)
    tok = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100,
                          label_smoothing=smoothing, reduction="none")
    return tok.view(target.shape).sum(1).mean()


def beam_search(step: Callable[[Tensor], Tensor], bos: int, eos: int, num_beams: int = NUM_BEAMS,
                max_length: int = MAX_LENGTH, length_penalty: float = 1.0) -> list[int]:
    """The best sequence of one input by beam search.

    ``step(ids (n, L)) -> next-token log-probabilities (n, V)`` for n prefixes (all starting
    with ``bos``). A hypothesis ends at ``eos`` or at ``max_length`` tokens (``bos``
    included); its score is the sum of its log-probabilities over (generated tokens) **
    ``length_penalty`` (Hugging Face's rule; 0 ranks by the plain sum). The search stops when
    ``num_beams`` hypotheses have ended and no live beam's score so far beats the worst of them
    (Hugging Face's ``early_stopping=False`` test). Returns the generated ids without ``bos`` and
    ``eos``.
    """
    beams: list[tuple[list[int], float]] = [([bos], 0.0)]
    finished: list[tuple[list[int], float]] = []
    while beams and len(beams[0][0]) < max_length:
        ids = torch.tensor([b[0] for b in beams])
        logp = step(ids).float()  # (n, V)
        total = logp + torch.tensor([b[1] for b in beams])[:, None]
        top = total.flatten().topk(min(2 * num_beams, total.numel()))
        nxt: list[tuple[list[int], float]] = []
        V = logp.shape[1]
        for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            seq = [*beams[flat // V][0], flat % V]
            if flat % V == eos:
                finished.append((seq, score / (len(seq) - 1) ** length_penalty))
            else:
                nxt.append((seq, score))
            if len(nxt) == num_beams:
                break
        beams = nxt
        finished = sorted(finished, key=lambda h: -h[1])[:num_beams]
        if beams and len(finished) == num_beams:  # Hugging Face's test: no live beam can still win
            live = max(sc for _, sc in beams) / (len(beams[0][0]) - 1) ** length_penalty
            if live <= finished[-1][1]:
                break
    finished += [(s, sc / (len(s) - 1) ** length_penalty) for s, sc in beams]
    best = max(finished, key=lambda h: h[1])[0]
    return [t for t in best[1:] if t != eos]
