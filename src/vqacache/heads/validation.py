"""A validation pass: the model's predictions over a loader, scored as the benchmark scores them.

:func:`validate` predicts every validation question that has features and scores the
predictions with the dataset's official scorer when one is registered
(:func:`vqacache.heads.scoring.training_scorer`: the same code as ``vqa-eval``), else with
:func:`score_predictions` (NExT-QA's arithmetic when the types are NExT-QA's).

**Questions without features count as wrong**, as in the official metric, which scores every
question of the split: ``val_acc = Acc x used / listed`` where ``Acc`` is the scorer's
accuracy over the ``used`` questions that have features and ``listed`` counts every question
the split lists (``used`` plus the missing ones of the dataset's ``coverage``). The scorer's
own result (over the used questions) is kept under ``val`` with ``listed`` and ``missing``
beside it; ``val_acc`` is None only when the split lists no question at all.

**Chance** (:func:`chance_accuracy`): multiple choice, the mean over the listed questions of
``100 / C`` (uniform guessing among a question's C candidates); open-ended, the accuracy of
always answering the training split's most frequent answer (the usual prior baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from vqacache.heads.data import QADataset, to_device
from vqacache.heads.eval import FOLD, NEXTQA_TYPES, accuracy_by_type, prediction_key
from vqacache.heads.methods import get_method
from vqacache.heads.methods.common import answer_loss
from vqacache.heads.questions import QuestionRef
from vqacache.heads.scoring.registry import Scorer
from vqacache.heads.scoring.training import score_validation


def autocast(device: str, amp: bool) -> Any:
    """bfloat16 autocast on CUDA when ``amp``; a disabled context elsewhere."""
    if amp and str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(
    model: torch.nn.Module, method: str, loader: DataLoader, device: str, amp: bool,
    stats: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{key: {"prediction", "answer", "qtype"}}`` over a loader (key: NExT-QA's).

    ``stats``, when given, receives ``loss``: the mean answer cross-entropy of the predictions
    over the labelled questions (absent when none is labelled).
    """
    model.eval()
    out: dict[str, dict[str, Any]] = {}
    m = get_method(method)
    loss_sum, labelled = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            logits = m.predict(model, batch).float()  # (B, C)
        n = int((batch["answer"] >= 0).sum())
        if n:
            loss_sum += float(answer_loss(logits, batch["answer"])) * n
            labelled += n
        pred = logits.argmax(-1).tolist()
        for b, qid in enumerate(batch["qid"]):
            out[prediction_key(batch["video_id"][b], qid)] = {
                "prediction": pred[b], "answer": int(batch["answer"][b]), "qtype": batch["qtype"][b],
            }
    if stats is not None and labelled:
        stats["loss"] = loss_sum / labelled
    return out


def score_predictions(preds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and by type with :func:`vqacache.heads.eval.accuracy_by_type`
    (NExT-QA's grouping when every type is a NExT-QA type)."""
    types = {FOLD.get(p["qtype"], p["qtype"]) for p in preds.values()}
    nextqa = bool(types) and types <= set(NEXTQA_TYPES)
    return accuracy_by_type(((k, p["qtype"], p["prediction"] == p["answer"]) for k, p in preds.items()), nextqa=nextqa)


def listed_accuracy(acc_used: float | None, used: int, missing: int) -> float | None:
    """Accuracy (%) over every listed question, the ``missing`` ones counted wrong."""
    listed = used + missing
    if listed == 0:
        return None
    return (acc_used or 0.0) * used / listed


def chance_accuracy(refs: Sequence[QuestionRef], missing: int, train_refs: Sequence[QuestionRef]) -> float | None:
    """Chance accuracy (%) on a split; see the module doc (missing questions count as wrong)."""
    listed = len(refs) + missing
    if not listed:
        return None
    if refs and refs[0].n_candidates:
        return 100.0 * sum(1.0 / r.n_candidates for r in refs if r.n_candidates) / listed
    counts: dict[str, int] = {}
    for r in train_refs:
        if isinstance(r.answer, str):
            counts[r.answer] = counts.get(r.answer, 0) + 1
    if not counts:
        return None
    top = max(counts, key=lambda a: (counts[a], a))
    return 100.0 * sum(r.answer == top for r in refs) / listed


def validate(
    model: torch.nn.Module, method: str, loader: DataLoader, ds: QADataset, split: str, scorer: Scorer | None,
    answer_vocab: list[str] | None, device: str, amp: bool,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(metrics, the prediction file's content): ``val_acc`` (missing questions wrong),
    ``val_acc_with_features``, ``val_loss``, ``val`` (the scorer's result, with ``listed`` and
    ``missing``)."""
    stats: dict[str, float] = {}
    preds = predict(model, method, loader, device, amp, stats)
    if scorer is None:
        scores = score_predictions(preds)
        official = {k: {"prediction": p["prediction"], "answer": p["answer"]} for k, p in preds.items()}
    else:
        scores, official = score_validation(scorer, ds.refs, split, preds, answer_vocab)
    missing = ds.coverage.n_missing
    scores = {**scores, "listed": len(ds) + missing, "missing": missing}
    metrics = {
        "val_acc": listed_accuracy(scores.get("Acc"), len(ds), missing),
        "val_acc_with_features": scores.get("Acc"),
        "val_missing": missing,
        "val_loss": stats.get("loss"),
        "val": scores,
    }
    return metrics, official
