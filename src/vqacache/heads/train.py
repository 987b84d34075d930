"""Stage two's entry points: ``train(TrainConfig(...))`` and what evaluation needs of a checkpoint.

The loop itself is the recipe in :mod:`vqacache.heads.recipe` (``setup``, ``resume``,
``train_epoch``, ``validate``, ``save``; run directory layout, schedule, resume rules); the
checkpoint record and its safe loading are in :mod:`vqacache.heads.checkpoint`; a validation
pass and its scoring in :mod:`vqacache.heads.validation`. This module keeps the names other
code imports (``train``, ``TrainConfig``, ``load_checkpoint``, ``check_plain``, ...) and adds
:func:`checkpoint_dataset`, a split's dataset for a checkpoint's model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vqacache.heads.checkpoint import (
    CHECKPOINT_FORMAT, Checkpoint, check_plain, checkpoint_fingerprints, load_checkpoint,
)
from vqacache.heads.data import QADataset
from vqacache.heads.methods import get_method
from vqacache.heads.questions import Question
from vqacache.heads.recipe import (
    OPTIMIZERS, SCHEDULES, InMemory, Reporter, SilentReporter, TrainConfig, TrainRecipe, make_optimizer,
    questions_digest,
)
from vqacache.heads.stores import StoreSet
from vqacache.heads.validation import predict, score_predictions

__all__ = [
    "CHECKPOINT_FORMAT", "OPTIMIZERS", "SCHEDULES", "Checkpoint", "InMemory", "Reporter", "SilentReporter",
    "TrainConfig", "TrainRecipe", "build_model", "check_plain", "checkpoint_dataset", "checkpoint_fingerprints",
    "load_checkpoint", "make_optimizer", "predict", "questions_digest", "score_predictions", "train",
]


def train(
    config: TrainConfig,
    reporter: Reporter | None = None,
    questions: Mapping[str, Sequence[Question]] | None = None,
) -> dict[str, Any]:
    """Train; returns the last epoch's metrics (with ``best_val_acc``). See :mod:`vqacache.heads.recipe`.

    ``questions``: split -> a dataset adapter's questions (None: the text store's bundles).
    """
    return TrainRecipe(config, reporter, questions).run()


def checkpoint_dataset(
    ckpt: dict[str, Any],
    store: str | Path,
    split: str,
    stores: Mapping[str, str | Path] | None = None,
    questions: Sequence[Question] | None = None,
) -> QADataset:
    """The dataset of ``split`` for a checkpoint's model: its method's inputs and answer
    vocabulary, refusing any role whose store is not the one the checkpoint was trained on."""
    expect = checkpoint_fingerprints(ckpt)
    store_set = StoreSet(store, stores, expect=expect, expect_what="the checkpoint")
    data_kw = get_method(ckpt["method"]).data(ckpt["model_args"])
    return QADataset(store_set, split, answer_vocab=ckpt["answer_vocab"], questions=questions, **data_kw)


def build_model(method: str, args: dict[str, Any], dims: dict[str, int]) -> torch.nn.Module:
    return get_method(method).build(args, dims)
