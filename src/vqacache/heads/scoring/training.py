"""The validation report of ``vqa-train-head`` through a benchmark's scorer.

Training predicts, per question, a candidate index (multiple choice) or a class of the
answer vocabulary (open-ended). :func:`score_validation` turns those into the benchmark's
prediction file (``{qid: {"prediction": index | answer text, "answer": ...}}``, the format
``vqa-eval`` reads) and scores it with the same scorer ``vqa-eval`` uses, on the questions
the run validated on (their answers and types as the run read them: from the text store or
the dataset adapter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vqacache.heads.eval import prediction_key
from vqacache.heads.questions import Question, QuestionRef
from vqacache.heads.scoring.registry import Scorer


def official_predictions(
    refs: Sequence[QuestionRef], preds: Mapping[str, Mapping[str, Any]], answer_vocab: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    """``{qid: {"prediction", "answer"}}`` from training's ``{<video>_<qid>: {"prediction": i, ...}}``:
    an open-ended class index becomes its answer text; ``answer`` is the annotation's."""
    by_key = {prediction_key(r.video_id, r.qid): r for r in refs}
    out: dict[str, dict[str, Any]] = {}
    for key, p in preds.items():
        ref = by_key[key]
        pred = p["prediction"]
        if not ref.n_candidates and answer_vocab:
            pred = answer_vocab[pred]
        out[ref.qid] = {"prediction": pred, "answer": ref.answer}
    return out


def questions_of(refs: Sequence[QuestionRef], split: str) -> list[Question]:
    """The scorer's view of the questions a run used (texts are not needed to score)."""
    return [
        Question(qid=r.qid, video_id=r.video_id, split=split, question="", candidates=("",) * r.n_candidates,
                 answer=r.answer, qtype=r.qtype, start=r.start, end=r.end)
        for r in refs
    ]


def score_validation(
    scorer: Scorer,
    refs: Sequence[QuestionRef],
    split: str,
    preds: Mapping[str, Mapping[str, Any]],
    answer_vocab: Sequence[str] | None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the scorer's result, the prediction file's content) for one validation pass."""
    official = official_predictions(refs, preds, answer_vocab)
    return scorer.score(questions_of(refs, split), official, require_labels=False), official
