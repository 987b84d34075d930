"""Plumbing the methods call (never inherit): the method record, input projection, answer
head over candidates or a vocabulary, uniform frame choice, and the answer loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.heads.modules import AnswerClassifier, CandidateScorer


@dataclass(frozen=True)
class TrainStep:
    """Where training is: ``step`` (0-based, over the whole run) of ``total`` optimiser steps.

    The training loop puts it in every training batch under ``"train_step"`` before calling
    ``Method.loss`` (schedules inside a method, e.g. VLAP's Gumbel temperature)."""

    step: int
    total: int


@dataclass(frozen=True)
class Method:
    """A training method: how to build its model, what data it reads, its loss and prediction.

    ``build(args, dims) -> nn.Module``; ``loss(model, batch, args) -> (loss, {name: float})``;
    ``predict(model, batch) -> logits (B, C)``; ``data(args) -> QADataset keyword arguments``.
    ``defaults``: model/method arguments; ``optim``: lr, weight_decay, warmup (fraction of steps),
    optionally ``schedule`` ("linear", the default, or "cosine" after the warm-up).
    ``prepare(args, stores) -> dict``, optional: facts of the run's stores the model needs
    (identities, a tokenizer's vocabulary, ...), merged into the arguments once, before the
    first ``build``, and recorded with them (config.json, checkpoints).
    ``check(args)``, optional: refuse bad arguments with one line (:class:`UsageError` naming
    the argument), called by the training recipe before any store is opened.
    """

    name: str
    build: Callable[[dict[str, Any], dict[str, int]], nn.Module]
    loss: Callable[[nn.Module, dict[str, Any], dict[str, Any]], tuple[Tensor, dict[str, float]]]
    predict: Callable[[nn.Module, dict[str, Any]], Tensor]
    data: Callable[[dict[str, Any]], dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    check: Callable[[dict[str, Any]], None] | None = None


VIDEODISTILL_OPTIM = {"lr": 3e-5, "weight_decay": 1e-3, "warmup": 0.1}


class AnswerHead(nn.Module):
    """Multiple choice: :class:`CandidateScorer` of the video vector against each candidate's
    text vector (the candidates' text is the only other way text reaches the answer).
    Open-ended (``num_answers`` > 0): :class:`AnswerClassifier` over the answer vocabulary."""

    def __init__(self, dim: int, text_dim: int, num_answers: int) -> None:
        super().__init__()
        self.open_ended = num_answers > 0
        self.head = AnswerClassifier(dim, num_answers) if self.open_ended else CandidateScorer(dim, text_dim, dim)

    def forward(self, video: Tensor, inputs: dict[str, Any]) -> Tensor:
        """video (B, D) -> logits (B, C) (``-inf`` on padded candidates) or (B, A)."""
        if self.open_ended:
            return self.head(video)
        return self.head(video, inputs["cand"], inputs["cand_mask"])


def uniform_choice(valid: Tensor, k: int) -> Tensor:
    """valid (B, N) bool -> indices (B, K) spread uniformly over each row's True entries."""
    rows = []
    for mask in valid:
        idx = mask.nonzero().squeeze(1)  # (n,)
        pos = torch.linspace(0, len(idx) - 1, k, device=valid.device).round().long()
        rows.append(idx[pos])
    return torch.stack(rows)


def gather_frames(x: Tensor, index: Tensor) -> Tensor:
    """x (B, N, ...) , index (B, K) -> (B, K, ...)."""
    view = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, view)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of -sum(target * log_softmax(logits)); ``-inf`` logits with target 0 are skipped."""
    logp = logits.log_softmax(dim=-1)
    return -(target * logp.masked_fill(target == 0, 0.0)).sum(-1).mean()


def answer_loss(logits: Tensor, answer: Tensor) -> Tensor:
    """Cross-entropy over labelled rows (answer >= 0); 0 when none is labelled.

    The zero is the sum over no rows, still attached to the graph (its gradient is zero), never
    ``logits.sum() * 0``: padded candidates are ``-inf``, and ``-inf * 0`` is NaN.
    """
    labelled = answer >= 0
    if not labelled.any():
        return logits[labelled].sum()  # () zero
    return F.cross_entropy(logits[labelled], answer[labelled])


def zero_loss(model: nn.Module) -> Tensor:
    """A zero loss whose backward gives every trainable parameter a zero gradient (a batch
    with nothing to learn from: no labelled row)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return torch.zeros(())
    return torch.stack([p.reshape(-1)[:0].sum() for p in params]).sum()  # sums over no elements


def plain_loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """The answer cross-entropy of the whole-video prediction."""
    loss = answer_loss(model(batch)["logits"], batch["answer"])
    return loss, {"loss": float(loss.detach())}


def plain_predict(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    return model(batch)["logits"]
