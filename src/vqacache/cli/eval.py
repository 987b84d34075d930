"""``vqa-eval``: score a predictions file exactly as the benchmark's official evaluator does.

``vqa-eval --dataset NAME --data-root DIR --split SPLIT --predictions FILE``. NExT-QA
(multiple choice) reads ``<split>.csv`` itself, as ``eval_mc.py`` does; every other
benchmark's questions come from its dataset adapter (featurize's, converted here into heads'
plain :class:`~vqacache.heads.questions.Question` records) and are scored by the scorer
registered under the same name (:mod:`vqacache.heads.scoring`). ``docs/evaluation.md``
documents the prediction formats, the metrics and what is not reproduced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vqacache.cache_spec import UsageError
from vqacache.cli._common import user_errors_exit
from vqacache.heads.questions import Question
from vqacache.heads.scoring import Extras, Scorer, format_result, get_scorer, list_scorers

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def adapter_inputs(scorer: Scorer, data_root: Path, split: str) -> tuple[list[Question], Extras]:
    """The split's questions from the dataset adapter, and the extras the scorer reads."""
    from vqacache.featurize.datasets import get_dataset  # only when asked: keeps --help fast

    adapter = get_dataset(scorer.name, data_root)
    questions = [
        Question(qid=r.qid, video_id=r.video_id, split=r.split, question=r.question, candidates=tuple(r.candidates),
                 answer=r.answer, qtype=r.qtype, start=r.start, end=r.end)
        for r in adapter.questions(split)
    ]
    references: dict[str, str] = {}
    extra_references = getattr(adapter, "extra_references", None)
    if scorer.uses_references and callable(extra_references):
        references = dict(extra_references())
    tags: dict[str, list[str]] = {}
    annotations = getattr(adapter, "annotations", None)
    if scorer.tag_field and callable(annotations):
        for qid, record in annotations(split).items():
            value = record.get(scorer.tag_field) if isinstance(record, dict) else None
            if value is not None:
                tags[str(qid)] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return questions, Extras(references=references, tags=tags)


def evaluate_any(
    dataset: str, data_root: Path, split: str, predictions: Path, allow_missing: bool = False
) -> tuple[Scorer, dict[str, Any]]:
    """(the scorer, its result) for ``predictions`` of ``dataset``'s ``split``."""
    scorer = get_scorer(dataset)
    if scorer.reads_annotations:
        if allow_missing:
            raise UsageError(f"{dataset}: --allow-missing is not available; its official script needs every question")
        return scorer, scorer.evaluate_files(data_root, split, predictions)  # type: ignore[misc]
    questions, extras = adapter_inputs(scorer, data_root, split)
    return scorer, scorer.score_file(questions, predictions, allow_missing=allow_missing, extras=extras)


@app.command(
    help="Score a predictions file against a split as the benchmark's official evaluator does. NExT-QA: "
    "{\"<video>_<qid>\": {\"prediction\": i, \"answer\": j}}; the others: {\"<qid>\": {\"prediction\": "
    "index or answer text}} (docs/evaluation.md)."
)
@user_errors_exit
def run(
    predictions: Annotated[Path, typer.Option(help="JSON predictions file.")],
    data_root: Annotated[
        Path,
        typer.Option("--data-root", "--annotations",
                     help="The dataset's annotation folder (NExT-QA: holding <split>.csv or nextqa/<split>.csv)."),
    ],
    dataset: Annotated[str, typer.Option(help="Benchmark: " + ", ".join(list_scorers()) + ".")] = "nextqa",
    split: Annotated[str, typer.Option(help="Split whose annotations define the questions.")] = "val",
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing",
                     help="Score labelled questions without a prediction as wrong (default: an error)."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    scorer, result = evaluate_any(dataset, data_root, split, predictions, allow_missing)
    if json_out:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo((scorer.format or format_result)(result))
    if result.get("answer_mismatches"):
        source = f"{split}.csv" if scorer.reads_annotations else f"the annotations of {split}"
        typer.echo(f"warning: {result['answer_mismatches']} answers in the file differ from {source}", err=True)
    if result.get("missing"):
        typer.echo(f"warning: {result['missing']} labelled questions have no prediction and count as wrong", err=True)
    if result.get("unlabelled"):
        typer.echo(f"note: {result['unlabelled']} questions of {split} have no answer and are not scored", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
