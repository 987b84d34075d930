"""Prediction files of every benchmark but NExT-QA MC, and matching them to the questions.

One format for all (``docs/evaluation.md``): a JSON object keyed by the question id the
dataset adapter gives (``QuestionRecord.qid``)::

    {"<qid>": {"prediction": <candidate index | answer text | count>, "answer": <optional>}, ...}

A bare value (``{"<qid>": 2}``, VALUE's How2QA / TVQA / VLEP submission format) is read as
``{"prediction": 2}``. Also accepted: ActivityNet-QA's official list ``[{"question_id",
"answer"}, ...]`` and, for scorers that allow it (NExT-OE), the nested ``{video: {qid:
text}}`` of the official NExT-OE result file, keyed ``<video>_<qid>``.

The ground truth always comes from the annotations; a file's ``answer`` is only compared
with it (the count of disagreements is reported). A prediction for a question the split
does not have is an error (wrong split, or keys of another form). A labelled question
without a prediction is an error too (VALUE's evaluators refuse it, NExT-QA's raises
``KeyError``) unless ``allow_missing``: it then counts as wrong and is reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.questions import Question

SHOW = 3
"""Ids shown in a one-line error."""


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOW])
    return shown + (", ..." if len(ids) > SHOW else "")


def read_prediction_file(path: str | Path) -> Any:
    """The file's JSON, or a one-line :class:`UsageError`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read predictions {path}: {str(exc).splitlines()[0]}") from None


def normalise_predictions(data: Any, *, nested: bool = False, where: str = "predictions") -> dict[str, dict[str, Any]]:
    """Any accepted shape -> ``{qid: {"prediction": v[, "answer": a]}}`` (see the module doc)."""
    if isinstance(data, list):
        out: dict[str, dict[str, Any]] = {}
        for i, item in enumerate(data):
            if not (isinstance(item, dict) and "question_id" in item and "answer" in item):
                raise UsageError(f"{where}: item {i} of the list is not {{'question_id', 'answer'}} "
                                 "(ActivityNet-QA's format); see docs/evaluation.md")
            qid = str(item["question_id"])
            if qid in out:
                raise UsageError(f"{where}: question {qid} is predicted twice")
            out[qid] = {"prediction": item["answer"]}
        return out
    if not isinstance(data, dict):
        raise UsageError(f"{where} is not a JSON object keyed by question id; see docs/evaluation.md")
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and "prediction" in value:
            out[str(key)] = value
        elif isinstance(value, dict) and nested:
            for inner, text in value.items():
                if isinstance(text, dict):
                    raise UsageError(f"{where}: {key}/{inner} is nested too deep; see docs/evaluation.md")
                out[f"{key}_{inner}"] = {"prediction": text}
        elif isinstance(value, dict):
            raise UsageError(f"{where}: question {key} has no 'prediction' field; see docs/evaluation.md")
        else:
            out[str(key)] = {"prediction": value}
    return out


@dataclass
class Matched:
    """The labelled questions with their prediction value (None: missing, counted wrong)."""

    pairs: list[tuple[Question, Any]]
    split: str
    missing: int = 0
    unlabelled: int = 0
    answer_mismatches: int = 0
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "split": self.split, "missing": self.missing, "unlabelled": self.unlabelled,
            "answer_mismatches": self.answer_mismatches,
        }


def match_predictions(
    dataset: str,
    questions: Sequence[Question],
    predictions: Mapping[str, Mapping[str, Any]],
    *,
    allow_missing: bool = False,
    require_labels: bool = True,
) -> Matched:
    """Pair each labelled question with its prediction; one-line errors for extra or missing ids."""
    split = questions[0].split if questions else "?"
    labelled = [q for q in questions if q.answer is not None]
    if not labelled and require_labels:
        raise UsageError(f"split {split!r} of {dataset} has no answers in the annotations; score a labelled split")
    known = {q.qid for q in questions}
    extra = sorted(k for k in predictions if k not in known)
    if extra:
        example = f"; keys are the adapter's question ids, e.g. {questions[0].qid}" if questions else ""
        raise UsageError(
            f"predictions hold {len(extra)} question ids that split {split!r} of {dataset} does not have "
            f"({_ids(extra)}){example}"
        )
    missing = [q.qid for q in labelled if q.qid not in predictions]
    if missing and not allow_missing:
        raise UsageError(
            f"predictions lack {len(missing)} of the {len(labelled)} labelled questions of split {split!r} "
            f"({_ids(missing)}); --allow-missing scores them as wrong"
        )
    matched = Matched([], split, missing=len(missing), unlabelled=len(questions) - len(labelled))
    for q in labelled:
        pred = predictions.get(q.qid)
        if pred is None:
            matched.pairs.append((q, None))
            continue
        if "answer" in pred and pred["answer"] is not None and str(pred["answer"]) != str(q.answer):
            matched.answer_mismatches += 1
        matched.pairs.append((q, pred["prediction"]))
    return matched


def choice_index(qid: str, value: Any, n_candidates: int) -> int:
    """A multiple-choice prediction: an int (or an integer string, as VALUE's ``int(v)``) in range."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"prediction {value!r} of question {qid} is not a candidate index (an integer)")
    if not 0 <= value < n_candidates:
        raise UsageError(f"prediction {value} of question {qid} is not a candidate index 0-{n_candidates - 1}")
    return value


def answer_text(qid: str, value: Any) -> str:
    """An open-ended prediction: the answer text."""
    if not isinstance(value, str):
        raise UsageError(f"prediction {value!r} of question {qid} is not an answer string")
    return value


def number(qid: str, value: Any) -> float:
    """A count prediction: a number or a numeric string."""
    try:
        out = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise UsageError(f"prediction {value!r} of question {qid} is not a number")
    return out
