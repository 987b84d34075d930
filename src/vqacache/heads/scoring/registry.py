"""Name -> scorer registry: one official evaluation per benchmark.

A scorer turns the questions of a split (heads' :class:`~vqacache.heads.questions.Question`
records, which the CLI builds from the dataset adapter) and a prediction file into the
result of :mod:`vqacache.heads.scoring.tally`. Register one with::

    @register_scorer("star", metric="accuracy per question family and their mean")
    def score_star(matched: Matched, extras: Extras) -> dict: ...

The function gets the labelled questions paired with their predictions
(:class:`~vqacache.heads.scoring.predictions.Matched`) and returns
:func:`~vqacache.heads.scoring.tally.make_result`'s dict; :meth:`Scorer.score` does the
matching and adds the bookkeeping (split, missing, unlabelled, answer mismatches).

``reads_annotations`` scorers (NExT-QA multiple choice) read their own annotation files, as
the official script does, instead of taking questions; training keeps its own NExT-QA
arithmetic for them (:func:`training_scorer` gives None).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UnknownName
from vqacache.heads.questions import Question
from vqacache.heads.scoring.predictions import (
    Matched,
    match_predictions,
    normalise_predictions,
    read_prediction_file,
)


@dataclass(frozen=True)
class Extras:
    """What some benchmarks score with besides the questions.

    ``references``: qid -> another accepted answer (NExT-OE's ``add_reference_answer_test``);
    ``tags``: qid -> extra breakdown categories (AGQA's reasoning categories, ``global``).
    """

    references: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, Sequence[str]] = field(default_factory=dict)


ScoreFn = Callable[[Matched, Extras], dict[str, Any]]


@dataclass(frozen=True)
class Scorer:
    """One benchmark's evaluation.

    ``nested``: accept the ``{video: {qid: answer}}`` file shape; ``tag_field``: the raw
    annotation field whose values are extra breakdown tags (the CLI reads it through the
    adapter's ``annotations(split)``); ``uses_references``: the CLI passes the adapter's
    ``extra_references()``; ``evaluate_files``: for ``reads_annotations`` scorers,
    ``(data_root, split, predictions path) -> result``.
    """

    name: str
    metric: str
    fn: ScoreFn | None = None
    nested: bool = False
    tag_field: str | None = None
    uses_references: bool = False
    reads_annotations: bool = False
    evaluate_files: Callable[[Path, str, Path], dict[str, Any]] | None = None
    format: Callable[[Mapping[str, Any]], str] | None = None

    def score(
        self,
        questions: Sequence[Question],
        predictions: Mapping[str, Any] | list[Any],
        *,
        allow_missing: bool = False,
        require_labels: bool = True,
        extras: Extras | None = None,
    ) -> dict[str, Any]:
        """Score ``predictions`` (any accepted shape, already parsed) against ``questions``."""
        if self.fn is None:
            raise TypeError(f"scorer {self.name} reads its own annotations; use evaluate_files")
        preds = normalise_predictions(predictions, nested=self.nested)
        matched = match_predictions(
            self.name, questions, preds, allow_missing=allow_missing, require_labels=require_labels
        )
        result = self.fn(matched, extras or Extras())
        result.update(matched.info())
        return result

    def score_file(
        self, questions: Sequence[Question], path: str | Path, *, allow_missing: bool = False,
        extras: Extras | None = None,
    ) -> dict[str, Any]:
        return self.score(questions, read_prediction_file(path), allow_missing=allow_missing, extras=extras)


_REGISTRY: dict[str, Scorer] = {}


def register(scorer: Scorer) -> Scorer:
    if scorer.name in _REGISTRY and _REGISTRY[scorer.name] != scorer:
        raise ValueError(f"scorer {scorer.name!r} is already registered")
    _REGISTRY[scorer.name] = scorer
    return scorer


def register_scorer(name: str, metric: str, **options: Any) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering ``fn(matched, extras) -> result`` as the scorer of ``name``."""

    def decorate(fn: ScoreFn) -> ScoreFn:
        register(Scorer(name=name, metric=metric, fn=fn, **options))
        return fn

    return decorate


def list_scorers() -> list[str]:
    """Benchmarks with an official scorer, sorted."""
    return sorted(_REGISTRY)


def get_scorer(name: str) -> Scorer:
    """The scorer of ``name``; :class:`UnknownName` listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise UnknownName(f"no official evaluator for dataset {name!r}; valid: {', '.join(list_scorers())}")
    return _REGISTRY[name]


def training_scorer(name: str | None) -> Scorer | None:
    """The scorer training uses for ``name``'s validation predictions; None: training's own
    NExT-QA-style arithmetic (unregistered datasets, and NExT-QA itself)."""
    scorer = _REGISTRY.get(name or "")
    return None if scorer is None or scorer.reads_annotations else scorer
