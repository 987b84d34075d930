"""Scoring prediction files the way the benchmarks' official evaluators do.

NExT-QA (``eval_mc.py`` of the official repository): the predictions file is JSON
``{"<video>_<qid>": {"prediction": i, "answer": j}, ...}``. For every row of the split's CSV
the question is put in the group of its ``type``, with ``TP`` folded into ``TN``; a
question is correct when the file's ``prediction`` equals the file's ``answer`` (the
official script reads the answer from the predictions file too; we additionally count how
many of those answers disagree with the CSV). Per type: accuracy of Why (CW), How (CH),
Bef&Aft (TN), When (TC), Cnt (DC), Loc (DL), Other (DO); group accuracies Acc_C, Acc_T,
Acc_D are question-weighted over their types (correct / count over the group's questions,
grouped by the first letter of the type); ``Acc`` is over all questions. Percentages,
rounded only when printed. A question of the CSV missing from the file is an error (the
official script raises ``KeyError``); an empty group scores ``None`` (the official script
divides by zero).

:func:`accuracy_by_type` is the same arithmetic for any list of records; training reports
call it on their validation predictions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UnknownName, UsageError

NEXTQA_TYPES = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc", "DO": "Other"}
NEXTQA_GROUPS = {"C": "Acc_C", "T": "Acc_T", "D": "Acc_D"}
FOLD = {"TP": "TN"}
DATASETS = ("nextqa",)


def prediction_key(video_id: str, qid: str) -> str:
    """NExT-QA's key ``<video>_<qid>``; a qid already of that form (vqacache's nextqa adapter) is kept."""
    return qid if qid.startswith(f"{video_id}_") else f"{video_id}_{qid}"


def accuracy_by_type(records: Iterable[tuple[str, str, bool]], nextqa: bool = True) -> dict[str, Any]:
    """records: (key, type, correct). Returns ``{"Acc", "count", "types": {...}, "groups": {...}}``.

    Accuracies are percentages (None for an empty group). With ``nextqa`` the types are
    folded and named as NExT-QA's evaluator does (TP -> TN; Why, How, ...; Acc_C/T/D);
    otherwise each type string is its own group and there are no letter groups.
    """
    by_type: dict[str, list[int]] = {}
    if nextqa:
        by_type = {t: [0, 0] for t in NEXTQA_TYPES}
    for _, qtype, correct in records:
        t = FOLD.get(qtype, qtype) if nextqa else qtype
        if nextqa and t not in NEXTQA_TYPES:
            raise UsageError(f"question type {qtype!r} is not a NExT-QA type ({', '.join(NEXTQA_TYPES)}, TP)")
        acc = by_type.setdefault(t, [0, 0])
        acc[0] += int(bool(correct))
        acc[1] += 1

    def pct(c: int, n: int) -> float | None:
        return c * 100.0 / n if n else None

    result: dict[str, Any] = {"types": {}, "groups": {}}
    for t, (c, n) in by_type.items():
        name = NEXTQA_TYPES.get(t, t) if nextqa else t
        result["types"][name] = {"acc": pct(c, n), "correct": c, "count": n}
    if nextqa:
        for letter, name in NEXTQA_GROUPS.items():
            c = sum(v[0] for t, v in by_type.items() if t[0] == letter)
            n = sum(v[1] for t, v in by_type.items() if t[0] == letter)
            result["groups"][name] = {"acc": pct(c, n), "correct": c, "count": n}
    c, n = sum(v[0] for v in by_type.values()), sum(v[1] for v in by_type.values())
    result["Acc"], result["correct"], result["count"] = pct(c, n), c, n
    return result


def read_nextqa_csv(annotations: Path, split: str) -> list[dict[str, str]]:
    """Rows of ``<annotations>/<split>.csv`` (or ``<annotations>/nextqa/<split>.csv``)."""
    for path in (Path(annotations) / f"{split}.csv", Path(annotations) / "nextqa" / f"{split}.csv"):
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            missing = {"video", "qid", "type", "answer"} - set(rows[0] if rows else {})
            if missing:
                raise UsageError(f"{path} lacks the NExT-QA columns {sorted(missing)}")
            return rows
    raise UsageError(f"no {split}.csv under {annotations}")


def load_predictions(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read predictions {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"predictions {path} is not a JSON object keyed by <video>_<qid>")
    return data


def score_nextqa(rows: list[dict[str, str]], predictions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Score like NExT-QA's ``eval_mc.py``; see the module docstring."""
    records, mismatches = [], 0
    for row in rows:
        key = f"{row['video']}_{row['qid']}"
        try:
            pred = predictions[key]
            correct = pred["answer"] == pred["prediction"]
        except (KeyError, TypeError):
            raise UsageError(f"predictions lack question {key} (with 'prediction' and 'answer')") from None
        if str(pred["answer"]) != str(row["answer"]):
            mismatches += 1
        records.append((key, row["type"], correct))
    result = accuracy_by_type(records)
    result["answer_mismatches"] = mismatches
    result["extra_predictions"] = len(set(predictions) - {f"{r['video']}_{r['qid']}" for r in rows})
    return result


def evaluate(dataset: str, annotations: Path, split: str, predictions: Path) -> dict[str, Any]:
    """``vqa-eval``: score a predictions file of ``dataset``'s ``split``."""
    if dataset != "nextqa":
        raise UnknownName(f"no official evaluator for dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return score_nextqa(read_nextqa_csv(annotations, split), load_predictions(predictions))


def format_table(result: dict[str, Any]) -> str:
    """Two lines like the official script (names, then percentages with 2 decimals), and Acc."""
    cells = {**{k: v["acc"] for k, v in result["types"].items()}, **{k: v["acc"] for k, v in result["groups"].items()}}
    head = "\t".join(cells)
    vals = "\t".join("-" if v is None else f"{v:.2f}" for v in cells.values())
    acc = "-" if result["Acc"] is None else f"{result['Acc']:.2f}"
    return f"{head}\n{vals}\nAcc: {acc}"
