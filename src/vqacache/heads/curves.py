"""A PNG of a run's training curves, redrawn from ``metrics.jsonl`` after every epoch.

Three panels over the optimiser steps: losses (the training loss of every step, faint, and
its exponential moving average, :func:`smooth`; ``val_loss`` at the end of each epoch when
present; every other numeric ``train_*`` term a method logs, e.g. SpARC's ``train_l_g``, as
its epoch mean at the epoch's last step, dashed), validation accuracy (``val_acc``, %, at each
epoch's last step, with ``chance_acc`` as a dotted line: the accuracy of guessing, see
:func:`vqacache.heads.validation.chance_accuracy`) and the learning rate at the end of each
epoch (``lr``). Rows written before the per-step ``step`` field existed are placed by
counting their ``losses``.

matplotlib is imported inside :func:`write_curves` (importing the training code stays
cheap) and used through its object API on the Agg canvas: no pyplot, no global backend
state, no display needed. The file is written to a temporary name and renamed, so a reader
never sees half a PNG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOT_TERMS = {"train_loss", "train_outside_topk"}  # sparc: share of answers outside the teacher's top-k
"""``train_*`` keys that are not extra loss terms."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The epochs' metric records of a ``metrics.jsonl`` (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_end_steps(rows: Sequence[dict[str, Any]]) -> list[int]:
    """The global step at the end of each row's epoch (its ``step``, else the running count of ``losses``)."""
    out, count = [], 0
    for r in rows:
        count = int(r["step"]) if _number(r.get("step")) else count + len(r.get("losses") or ())
        out.append(count)
    return out


def step_losses(rows: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(global step (1-based), training loss) of every step of every row."""
    steps: list[int] = []
    values: list[float] = []
    for end, r in zip(epoch_end_steps(rows), rows):
        losses = [float(v) for v in r.get("losses") or ()]
        steps.extend(range(end - len(losses) + 1, end + 1))
        values.extend(losses)
    return steps, values


def smooth(values: Sequence[float], beta: float | None = None) -> list[float]:
    """Exponential moving average with bias correction: ``m_t = beta m_(t-1) + (1 - beta) x_t``,
    reported as ``m_t / (1 - beta^t)`` (so the first value is ``x_1``). ``beta`` None:
    ``clip(1 - 10 / n, 0, 0.95)`` for n values (no smoothing for 10 steps or fewer)."""
    n = len(values)
    if beta is None:
        beta = max(0.0, min(0.95, 1.0 - 10.0 / max(1, n)))
    out, m = [], 0.0
    for t, x in enumerate(values, start=1):
        m = beta * m + (1.0 - beta) * x
        out.append(m / (1.0 - beta**t) if beta > 0 else x)
    return out


def loss_terms(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Extra numeric ``train_*`` loss terms logged in any row, sorted."""
    keys = {k for r in rows for k, v in r.items() if k.startswith("train_") and _number(v)}
    return sorted(keys - NOT_TERMS)


def write_curves(metrics: str | Path | Sequence[dict[str, Any]], png: str | Path, title: str = "") -> Path:
    """Draw the curves of ``metrics`` (a ``metrics.jsonl`` path or its records) into ``png``."""
    rows = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    fig = draw_curves(rows, title)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png)
    return png


def draw_curves(rows: Sequence[dict[str, Any]], title: str = "") -> Any:
    """The figure (matplotlib ``Figure``, axes: losses, validation accuracy, lr) of the metric rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ends = epoch_end_steps(rows)

    def at_ends(key: str) -> tuple[list[int], list[float]]:  # (epoch-end steps, values) where key is a number
        pairs = [(e, float(r[key])) for e, r in zip(ends, rows) if _number(r.get(key))]
        return [e for e, _ in pairs], [v for _, v in pairs]

    x, y = step_losses(rows)
    if x:
        ax_loss.plot(x, y, "-", color="tab:blue", alpha=0.25, linewidth=0.8)
        ax_loss.plot(x, smooth(y), "-", color="tab:blue", label="train loss (smoothed)")
    else:  # rows without per-step losses: the epoch means
        ax_loss.plot(*at_ends("train_loss"), "o-", color="tab:blue", label="train loss")
    x, y = at_ends("val_loss")
    if x:
        ax_loss.plot(x, y, "s-", color="tab:orange", label="val loss")
    for key in loss_terms(rows):
        ax_loss.plot(*at_ends(key), "--", marker=".", label=key.removeprefix("train_"))
    ax_acc.plot(*at_ends("val_acc"), "o-", color="tab:green", label="val accuracy")
    chance = [float(r["chance_acc"]) for r in rows if _number(r.get("chance_acc"))]
    if chance:
        ax_acc.axhline(chance[-1], linestyle=":", color="tab:red", label=f"chance ({chance[-1]:.1f}%)")
        ax_acc.legend(fontsize="small")
    ax_lr.plot(*at_ends("lr"), "o-", color="tab:gray")
    ax_loss.set(xlabel="step", ylabel="loss", title="losses")
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate (end of epoch)")
    if ax_loss.lines:
        ax_loss.legend(fontsize="small")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout would double the drawing time (~0.3 s -> ~0.7 s per epoch)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.84 if title else 0.9, wspace=0.3)
    return fig
