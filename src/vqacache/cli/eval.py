"""``vqa-eval``: score a predictions file exactly as the benchmark's official evaluator does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vqacache.cli._common import user_errors_exit
from vqacache.heads.eval import evaluate, format_table

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Score predictions ({\"<video>_<qid>\": {\"prediction\": i, \"answer\": j}}) against a split.")
@user_errors_exit
def run(
    predictions: Annotated[Path, typer.Option(help="JSON predictions file.")],
    annotations: Annotated[Path, typer.Option(help="Folder holding <split>.csv (or nextqa/<split>.csv).")],
    dataset: Annotated[str, typer.Option(help="Benchmark: nextqa.")] = "nextqa",
    split: Annotated[str, typer.Option(help="Split whose CSV defines the questions.")] = "val",
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    result = evaluate(dataset, annotations, split, predictions)
    if json_out:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(format_table(result))
    if result["answer_mismatches"]:
        typer.echo(f"warning: {result['answer_mismatches']} answers in the file differ from {split}.csv", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
