"""A PNG of a run's training curves, redrawn from ``metrics.jsonl`` after every epoch.

Three panels over the epochs: losses (``train_loss``; ``val_loss`` when present; every other
numeric ``train_*`` term a method logs, e.g. SpARC's ``train_l_g``, ``train_l_c``,
``train_l_s``, dashed), validation accuracy (``val_acc``, %) and the learning rate at the end
of the epoch (``lr``).

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


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows where ``key`` holds a number."""
    pairs = [(r["epoch"], float(r[key])) for r in rows if _number(r.get(key))]
    return [e for e, _ in pairs], [v for _, v in pairs]


def loss_terms(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Extra numeric ``train_*`` loss terms logged in any row, sorted."""
    keys = {k for r in rows for k, v in r.items() if k.startswith("train_") and _number(v)}
    return sorted(keys - NOT_TERMS)


def write_curves(metrics: str | Path | Sequence[dict[str, Any]], png: str | Path, title: str = "") -> Path:
    """Draw the curves of ``metrics`` (a ``metrics.jsonl`` path or its records) into ``png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    fig = Figure(figsize=(13, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for key, label, style in (("train_loss", "train loss", "o-"), ("val_loss", "val loss", "s-")):
        x, y = _series(rows, key)
        if x:
            ax_loss.plot(x, y, style, label=label)
    for key in loss_terms(rows):
        x, y = _series(rows, key)
        ax_loss.plot(x, y, "--", marker=".", label=key.removeprefix("train_"))
    x, y = _series(rows, "val_acc")
    ax_acc.plot(x, y, "o-", color="tab:green", label="val accuracy")
    x, y = _series(rows, "lr")
    ax_lr.plot(x, y, "o-", color="tab:gray")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
    if ax_loss.lines:
        ax_loss.legend(fontsize="small")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout would double the drawing time (~0.3 s -> ~0.7 s per epoch)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.84 if title else 0.9, wspace=0.3)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png)
    return png
