"""Counting correct answers into breakdowns, and the result every scorer returns.

A scorer's result is plain JSON::

    {"dataset": "star", "split": "val", "metric": "accuracy (candidate index)",
     "Acc": 61.2, "correct": 4344, "count": 7098,          # every scored question
     "breakdowns": {"type": {"Interaction": {"acc": 60.1, "correct": 1441, "count": 2398}, ...}},
     "summary": {"Mean": 59.8},                             # the benchmark's own headline numbers
     "normalisation": "...", "not_computed": ["..."],
     "missing": 0, "unlabelled": 0, "answer_mismatches": 0}

Accuracies are percentages (``None`` for an empty group), rounded only when printed.
``Acc`` is over every scored question (training picks its best epoch by it); ``summary``
holds what the benchmark reports besides (STAR's mean over families, TGIF-QA's count MSE).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pct(correct: int, count: int) -> float | None:
    return correct * 100.0 / count if count else None


class Tally:
    """``correct`` / ``count`` per key; keys in ``order`` first (even when empty), then as met."""

    def __init__(self, order: Iterable[str] = ()) -> None:
        self.counts: dict[str, list[int]] = {k: [0, 0] for k in order}

    def add(self, key: str, correct: bool) -> None:
        c = self.counts.setdefault(key, [0, 0])
        c[0] += int(bool(correct))
        c[1] += 1

    def total(self, keys: Iterable[str] | None = None) -> tuple[int, int]:
        chosen = self.counts if keys is None else {k: self.counts.get(k, [0, 0]) for k in keys}
        return sum(v[0] for v in chosen.values()), sum(v[1] for v in chosen.values())

    def table(self, names: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """``{display name: {"acc", "correct", "count"}}`` in key order."""
        names = names or {}
        return {names.get(k, k): cell(c, n) for k, (c, n) in self.counts.items()}


def cell(correct: int, count: int) -> dict[str, Any]:
    return {"acc": pct(correct, count), "correct": correct, "count": count}


def make_result(
    dataset: str,
    metric: str,
    correct: int,
    count: int,
    breakdowns: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
    summary: Mapping[str, float | None] | None = None,
    normalisation: str = "",
    not_computed: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "dataset": dataset, "metric": metric, "Acc": pct(correct, count), "correct": correct, "count": count,
        "breakdowns": {k: dict(v) for k, v in (breakdowns or {}).items() if v},
        "summary": dict(summary or {}), "normalisation": normalisation, "not_computed": list(not_computed),
    }


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_result(result: Mapping[str, Any]) -> str:
    """Each breakdown as two tab-separated lines (names, then percentages), the summary, Acc,
    then what the official evaluator computes and this one does not."""
    lines = [f"{result['dataset']} {result.get('split', '')}: {result['metric']}".rstrip()]
    for title, table in result["breakdowns"].items():
        lines.append(f"[{title}]")
        lines.append("\t".join(table))
        lines.append("\t".join(_num(v["acc"]) for v in table.values()))
    for name, value in result["summary"].items():
        lines.append(f"{name}: {_num(value, 4 if 'MSE' in name else 2)}")
    lines.append(f"Acc: {_num(result['Acc'])} ({result['correct']}/{result['count']})")
    if result.get("normalisation"):
        lines.append(f"answers compared: {result['normalisation']}")
    for item in result.get("not_computed", []):
        lines.append(f"NOT computed: {item}")
    return "\n".join(lines)
