"""``vqa-cache``: look at a cache root (``ls``) and at one store (``info``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vqacache.cache_spec import StoreError, UsageError, open_store
from vqacache.cli._common import user_errors_exit

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 200)  # no squeezed tables in logs


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("ls", help="List the stores under a cache root.")
@user_errors_exit
def ls(cache_root: Annotated[Path, typer.Option(help="Root of the feature cache.")]) -> None:
    if not cache_root.is_dir():
        raise UsageError(f"--cache-root {cache_root} is not a directory")
    table = Table("dataset", "encoder", "fingerprint", "videos", "failed", "questions", "size", "path")
    for path in sorted(cache_root.glob("*/*.zarr")):
        try:
            s = open_store(path).summary()
        except StoreError as exc:
            table.add_row("?", "?", "?", "", "", "", "", f"{path} ({exc})")
            continue
        table.add_row(
            s["dataset"], s["encoder"], s["fingerprint"][:12], str(s["videos"]), str(s["failed"]),
            str(s["questions"]), _size(s["bytes"]), str(path),
        )
    console.print(table)


@app.command("info", help="Show one store's spec, counts and failures.")
@user_errors_exit
def info(store: Annotated[Path, typer.Argument(help="Path of a .zarr store.")]) -> None:
    st = open_store(store)
    s = st.summary()
    console.print(f"[bold]{st.path}[/]")
    console.print(f"dataset {s['dataset']}  encoder {s['encoder']}  fingerprint {s['fingerprint']}")
    console.print(
        f"videos {s['videos']} complete, {s['incomplete']} incomplete, {s['failed']} failed; "
        f"questions {s['questions']}; {_size(s['bytes'])} on disk; created {s['created']}"
    )
    console.print("spec:")
    console.print_json(json.dumps(st.spec.to_dict()))
    console.print("environment: " + ", ".join(f"{k} {v}" for k, v in st.meta.get("environment", {}).items()))
    failures = st.failures()
    if failures:
        console.print(f"failures ({len(failures)}):")
        for video_id, reason in sorted(failures.items()):
            console.print(f"  {video_id}: {reason}", highlight=False)


def main() -> None:
    app()
