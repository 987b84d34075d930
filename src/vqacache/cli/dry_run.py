"""``vqa-featurize --dry-run``: print what a dataset's annotations hold, per split, and exit."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vqacache.featurize.datasets import dry_run_report, get_dataset, parse_dataset_options


def print_dry_run(dataset: str, data_root: Path | None, splits: tuple[str, ...] = (),
                  options: tuple[str, ...] = ()) -> None:
    """Read ``dataset``'s annotations only and print questions / videos / missing per split."""
    ds = get_dataset(dataset, data_root, **parse_dataset_options(dataset, options))
    rows = dry_run_report(ds, splits)
    table = Table(title=escape(f"{ds.name}: {ds.data_root} (annotations only)"))
    table.add_column("split")
    for column in ("questions", "videos", "missing on disk"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row.split, str(row.questions), str(row.videos), str(row.missing))
    console = Console()
    console.print(table)
    first = next((r.first_missing for r in rows if r.first_missing), None)
    if first is not None:
        console.print(f"first missing video: {first}", markup=False, highlight=False, soft_wrap=True)
