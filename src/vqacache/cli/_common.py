"""Shared CLI plumbing: one-line errors with exit code 2, and the rich progress reporter.

Everything printed through rich that comes from the user or the data (video ids, paths,
reasons, messages) is escaped (:func:`rich.markup.escape`): an id like ``clip[/x]`` or
``[bold]a`` prints as itself, never as markup (which would vanish or raise ``MarkupError``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vqacache.cache_spec import VqaCacheError

EXIT_USAGE = 2
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit(func: F) -> F:
    """Turn a user mistake (any VqaCacheError) into one line on stderr and exit code 2 (or the
    error's own ``exit_code``, for errors that are not the user's: e.g. 3 when every batch job
    was lost)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VqaCacheError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_USAGE)) from None
        except PermissionError as exc:  # a shared root: one line naming the path and its owner
            from vqacache.cache_spec.permissions import permission_problem

            message = str(permission_problem(exc.filename, "use")) if exc.filename else str(exc)
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


class RichReporter:
    """Progress bar over videos, with frames written and frames/s; failures printed as they happen."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos · {task.fields[frames]} frames · {task.fields[fps]:.1f} frames/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: Any = None
        self.frames = 0

    def start(self, total_videos: int, description: str) -> None:
        self.progress.start()
        self.task = self.progress.add_task(escape(description), total=total_videos, frames=0, fps=0.0)

    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None:
        self.frames += frames
        for video_id, reason in sorted(failures.items()):
            self.progress.console.print(f"[yellow]failed[/] {escape(video_id)}: {escape(reason)}", highlight=False,
                                        soft_wrap=True)
        elapsed = self.progress.tasks[self.task].elapsed or 0.0
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, advance=videos, frames=self.frames, fps=fps)

    def message(self, text: str) -> None:
        """One line, printed as it is (no markup)."""
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finish(self) -> None:
        self.progress.stop()
