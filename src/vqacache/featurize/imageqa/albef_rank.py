"""ALBEF's answer ranking (``models/model_vqa.py`` ``rank_answer``), chunked to bound memory.

For one question and F frames f, with q_f the question's states fused with frame f by the
text encoder, and an answer a tokenized ``[CLS] a_1 .. a_m`` (a_m = ``[SEP]``):

* (1) first-token probability: p1(a | f) = softmax(decoder([CLS]; q_f))[a_1], one decoder
  step shared by every answer (only needed to choose the top k);
* (2) answer log-likelihood: ll(a | f) = sum_{t=1..m} log p(a_t | a_<t, q_f), padding
  excluded (the decoder's LM loss with reduction ``none``, negated and summed);
* (3) score: s(a | f) = log p1(a | f) + ll(a | f). ALBEF concatenates the top-k first-token
  log-probabilities with the answer log-likelihoods before summing, so a_1 counts twice
  (``score="albef"``, the default, reproduces that); ``score="loglik"`` uses ll alone.
  log p1 is read off the full pass (its first term): position 0 sees only ``[CLS]``, so it
  is the number ALBEF's separate start step gives;
* (4) K_f = the k answers with the largest p1(a | f) (all of them for multiple choice), and
  P(a | f) = softmax over a in K_f of s(a | f); answers outside K_f get 0.

Several questions about the same frames are ranked in one batch by
:meth:`~vqacache.featurize.imageqa.albef.AlbefTeacher.rank_many`: :func:`questions_states`
fuses Q questions with F frames as Q x F rows, and :func:`score_pairs` scores any list of
(row, answer) pairs, so the equations below stay the only place the maths lives.

Shapes: F frames, Lq question tokens, D text width, A answers, La answer tokens, V wordpiece
vocabulary, R = F x k (frame, answer) rows scored in chunks of at most ``chunk`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqacache.featurize.encoders.albef_model import AlbefModel

SCORES = ("albef", "loglik")


@dataclass(frozen=True)
class AnswerTokens:
    """Tokenized answers ``[CLS] a_1 .. a_m [SEP]``: ``ids`` (A, La) and ``mask`` (A, La)."""

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def question_states(
    model: AlbefModel, image_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Image tokens (F, T, W) and one question's ids/mask (1, Lq) -> fused states (F, Lq, D).

    The text layers do not see the image: they run once and their states are shared by
    the F frames; the fusion layers then attend to each frame."""
    n = image_tokens.shape[0]
    text = model.encode_text(ids, mask)  # (1, Lq, D)
    return model.fuse(text.expand(n, -1, -1), mask.expand(n, -1), image_tokens)  # (F, Lq, D)


def questions_states(
    model: AlbefModel, image_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Image tokens (F, T, W) and Q questions' ids/mask (Q, Lq) (right-padded) -> fused states
    (Q * F, Lq, D), row q * F + f = question q on frame f; fusion in chunks of ``chunk`` rows.
    Padded positions are masked in the text and fusion self-attention; their states are
    meaningless and must not be attended to afterwards."""
    n = image_tokens.shape[0]
    text = model.encode_text(ids, mask)  # (Q, Lq, D): the text layers do not see the image
    question = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(n)  # (Q * F,)
    frame = torch.arange(n, device=ids.device).repeat(ids.shape[0])  # (Q * F,)
    out = []
    for s in range(0, question.shape[0], chunk):
        q, f = question[s : s + chunk], frame[s : s + chunk]
        out.append(model.fuse(text[q], mask[q], image_tokens[f]))  # (r, Lq, D)
    return torch.cat(out)


def first_token_logprobs(model: AlbefModel, states: torch.Tensor, mask: torch.Tensor, start_id: int) -> torch.Tensor:
    """Eq. (1): fused states (F, Lq, D), mask (F, Lq) -> log-softmax (F, V) of the decoder's
    first step from the start token."""
    n = states.shape[0]
    start = torch.full((n, 1), start_id, dtype=torch.int64, device=states.device)  # (F, 1)
    logits = model.decode(start, torch.ones_like(start), states, mask)[:, 0]  # (F, V)
    return F.log_softmax(logits.float(), dim=-1)


def answer_loglik(
    model: AlbefModel,
    states: torch.Tensor,
    mask: torch.Tensor,
    frame: torch.Tensor,
    answers: AnswerTokens,
    rows: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2) for R (frame, answer) pairs: ``frame`` (R,) indexes ``states`` (F, Lq, D),
    ``rows`` (R,) indexes ``answers`` -> ll (R,) float32, and log p1 (R,), the first term of
    the sum (position 0 sees only ``[CLS]``: eq. (1) again), in chunks of ``chunk`` rows."""
    ll = torch.empty(rows.shape[0], dtype=torch.float32, device=states.device)
    first = torch.empty_like(ll)
    for start in range(0, rows.shape[0], chunk):
        f, a = frame[start : start + chunk], rows[start : start + chunk]
        length = int(answers.mask[a].sum(dim=1).max())  # drop columns that are padding in every row
        ids, amask = answers.ids[a, :length], answers.mask[a, :length]  # (r, l)
        logits = model.decode(ids, amask, states[f], mask[f])  # (r, l, V)
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (r, l - 1, V) predicts tokens 1..l-1
        token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (r, l - 1)
        keep = amask[:, 1:].bool()
        ll[start : start + chunk] = torch.where(keep, token, torch.zeros_like(token)).sum(dim=1)
        first[start : start + chunk] = token[:, 0]
    return ll, first


def score_pairs(
    model: AlbefModel,
    states: torch.Tensor,
    mask: torch.Tensor,
    row: torch.Tensor,
    answers: AnswerTokens,
    answer: torch.Tensor,
    *,
    chunk: int,
    score: str,
) -> torch.Tensor:
    """Eq. (3) for R (row, answer) pairs: ``row`` (R,) into ``states`` (N, Lq, D), ``answer``
    (R,) into ``answers`` -> s (R,) float32."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    ll, p1 = answer_loglik(model, states, mask, row, answers, answer, chunk)  # (R,), (R,)
    return ll + p1 if score == "albef" else ll


def rank_answers(
    model: AlbefModel,
    states: torch.Tensor,
    mask: torch.Tensor,
    answers: AnswerTokens,
    k: int,
    *,
    start_id: int,
    chunk: int,
    score: str = "albef",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. (1)-(4): fused states (F, Lq, D), mask (F, Lq), A answers, k -> ``probs`` (F, k')
    and ``index`` (F, k') int64 into the answers, k' = min(k, A). With k' = A the answers
    keep their order (multiple choice); otherwise each frame's top k' by first-token
    probability, in that order."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    n, count = states.shape[0], len(answers)
    k = min(int(k), count)
    if k < count:  # eq. (1) for every answer, one decoder step
        first = first_token_logprobs(model, states, mask, start_id)[:, answers.ids[:, 1]]  # (F, A) log p1
        index = first.topk(k, dim=1).indices  # (F, k)
    else:  # all answers are scored in full: no selection, and p1 comes with the full pass
        index = torch.arange(count, device=states.device).expand(n, count)  # (F, A)
    frame = torch.arange(n, device=states.device).repeat_interleave(k)  # (R,)
    s = score_pairs(model, states, mask, frame, answers, index.reshape(-1), chunk=chunk, score=score)  # eq. (3)
    return F.softmax(s.view(n, k), dim=1), index  # eq. (4)
