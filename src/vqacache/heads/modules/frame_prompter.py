"""VLAP's Frame-Prompter (eq. 2-5): one frame per segment, differentiable through a
straight-through Gumbel-softmax.

Input tokens (B, T, N, W) (N = 257: BLIP-2's ViT-g CLS + 16 x 16 patches, after the vision
LayerNorm); T frames split into K segments of S = T / K consecutive frames.

* eq. 2: ``x_hat = W2 ReLU(LN(W1 Mean(x)))``: each frame's tokens averaged over the channels
  (B, T, N), the S frames of a segment concatenated (B, K, S N), ``W1``: Linear(S N -> S),
  LayerNorm(S), ReLU, ``W2``: Linear(S -> S) -> one logit per frame of the segment (B, K, S).
  **One set of weights shared by all K segments**, as the released ``FrameSelector`` applies
  a single ``nn.Linear`` to the (B, K, S N) view.
* eq. 3-5: Gumbel-softmax over the **S frames inside each segment** (the paper's eq. 3 writes
  the softmax over segments; the released code and "one frame per segment" need it over the
  frames: we follow the code). Forward value: the hard one-hot of
  ``argmax(log p + g)`` (eq. 4); gradient: that of the soft sample
  ``softmax((log p + g) / tau)`` (eq. 5), the straight-through estimator.
* The selected frame of each segment is ``sum_s y_s x_s`` (B, K, N, W): exactly the chosen
  frame in value, and every frame of the segment receives a share of the gradient through its
  soft weight. (The released code multiplies the tokens by the mask and keeps the chosen
  frames, the same value and the same gradient with respect to ``y``.)
* At evaluation the paper takes the noise-free argmax (tau = 0.01 does not change an argmax);
  the released code keeps the Gumbel noise at evaluation too: ``eval_noise=True`` reproduces it.
* ``question_dim > 0`` (**this project's extension**, not in the paper's equations nor the
  released code, which never show the question to the Prompter despite calling it
  "question-aware"): the question's sentence vector (B, E) is concatenated to each segment's
  channel means before ``W1``, i.e. Linear(S N + E -> S).

The temperature schedule tau = 0.01^(step / total) is :func:`prompter_temperature`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError

TAU_END = 0.01
"""Final temperature of the schedule and the paper's evaluation temperature."""


def prompter_temperature(step: int, total: int) -> float:
    """tau = 0.01^(step / total): 1 at step 0, 0.1 half-way, 0.01 at the end (paper, sec. 4).

    The released code uses ``t_end = 50`` epochs as ``total`` whatever the run's length; we
    follow the paper (this run's total steps). ``total <= 0``: the final temperature.
    """
    if total <= 0:
        return TAU_END
    return TAU_END ** (min(max(step, 0), total) / total)


def segment_means(tokens: Tensor, num_segments: int) -> Tensor:
    """tokens (B, T, N, W) -> (B, K, S * N): channel mean of each frame's tokens, the S
    consecutive frames of each segment concatenated (frame-major: frame s's N values at
    ``[s * N, (s + 1) * N)``)."""
    B, T, N, _ = tokens.shape
    mean = tokens.mean(dim=-1)  # (B, T, N)  eq. 2: Mean(x)
    return mean.reshape(B, num_segments, (T // num_segments) * N)


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel(0, 1) samples of ``shape``: -log(-log(u)), u ~ U(0, 1) kept away from 0 and 1."""
    u = torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)
    u = u.clamp(torch.finfo(like.dtype).tiny, 1.0 - torch.finfo(like.dtype).eps)
    return -torch.log(-torch.log(u))


def straight_through_gumbel(logits: Tensor, tau: float, noise: Tensor | None) -> tuple[Tensor, Tensor]:
    """logits (..., S) -> (hard straight-through sample (..., S), soft sample (..., S)).

    eq. 3: log p = log_softmax(logits); eq. 4: hard = onehot(argmax(log p + g)); eq. 5: soft =
    softmax((log p + g) / tau). The returned sample is ``hard - soft.detach() + soft``: the
    one-hot in value, the soft sample's gradient. ``noise`` None: g = 0 (the noise-free argmax).
    """
    logp = logits.log_softmax(dim=-1)  # eq. 3
    perturbed = logp if noise is None else logp + noise
    soft = (perturbed / tau).softmax(dim=-1)  # eq. 5
    hard = F.one_hot(perturbed.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)  # eq. 4
    return hard - soft.detach() + soft, soft


@dataclass
class PrompterOutput:
    """``frames`` (B, K, N, W) the selected frames; ``index`` (B, K) their frame indices in
    0..T-1; ``weights`` (B, K, S) the straight-through one-hots; ``logits`` (B, K, S)."""

    frames: Tensor
    index: Tensor
    weights: Tensor
    logits: Tensor


class FramePrompter(nn.Module):
    """tokens (B, T, N, W) -> one frame of each of K segments (see the module docstring).

    Args:
        num_frames: T. num_segments: K (T divisible by K). num_tokens: N (257).
        question_dim: E > 0 feeds the question vector to ``W1`` (this project's extension).
        eval_noise: keep the Gumbel noise at evaluation (the released code) instead of the
            paper's noise-free argmax.
    """

    def __init__(self, num_frames: int, num_segments: int, num_tokens: int, question_dim: int = 0,
                 eval_noise: bool = False) -> None:
        super().__init__()
        if num_segments < 1 or num_frames % num_segments:
            raise UsageError(f"the Frame-Prompter needs T divisible by K; T={num_frames}, K={num_segments}")
        self.T, self.K, self.N = num_frames, num_segments, num_tokens
        self.S = num_frames // num_segments
        self.question_dim = question_dim
        self.eval_noise = eval_noise
        self.w1 = nn.Linear(self.S * num_tokens + question_dim, self.S)  # shared by the K segments
        self.ln = nn.LayerNorm(self.S)
        self.w2 = nn.Linear(self.S, self.S)

    def scores(self, tokens: Tensor, question: Tensor | None = None) -> Tensor:
        """eq. 2: tokens (B, T, N, W) (+ question (B, E)) -> logits (B, K, S)."""
        x = segment_means(tokens, self.K)  # (B, K, S N)
        if self.question_dim:
            if question is None:
                raise ValueError("a question-aware Frame-Prompter needs the question vector")
            x = torch.cat([x, question[:, None, :].expand(-1, self.K, -1).to(x.dtype)], dim=-1)  # (B, K, S N + E)
        return self.w2(F.relu(self.ln(self.w1(x))))  # (B, K, S)

    def forward(self, tokens: Tensor, tau: float, question: Tensor | None = None,
                noise: Tensor | None = None) -> PrompterOutput:
        """tokens (B, T, N, W) -> :class:`PrompterOutput`. ``noise`` (B, K, S): the Gumbel
        samples to use (tests); None draws them in training (and at evaluation with
        ``eval_noise``), else the noise-free argmax."""
        B, T, N, W = tokens.shape
        if (T, N) != (self.T, self.N):
            raise ValueError(f"the Frame-Prompter was built for T={self.T}, N={self.N}; got T={T}, N={N}")
        logits = self.scores(tokens, question)  # (B, K, S)
        if noise is None and (self.training or self.eval_noise):
            noise = gumbel_noise(logits.shape, logits)
        weights, _ = straight_through_gumbel(logits, tau, noise)  # (B, K, S)
        segments = tokens.reshape(B, self.K, self.S, N, W)  # (B, K, S, N, W)
        frames = torch.einsum("bks,bksnw->bknw", weights.to(tokens.dtype), segments)  # (B, K, N, W)
        offsets = torch.arange(self.K, device=tokens.device) * self.S  # (K,)
        index = weights.detach().argmax(-1) + offsets  # (B, K)
        return PrompterOutput(frames=frames, index=index, weights=weights, logits=logits)
