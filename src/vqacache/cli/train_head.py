"""``vqa-train-head``: train a head (uniform, videodistill, hga, sparc, vlap, siasamrea, mcg) on feature stores.

``--preset NAME`` (``vqacache.heads.presets``: ``sparc-hga`` ...) sets a paper's method, method
arguments and training settings; explicit options and ``--method-arg`` pairs win over it.

``--method-arg KEY=VALUE`` (repeatable) sets any of the method's arguments, typed by its
default (int, float, bool, str); unknown keys list the valid ones. ``--weights`` names the
pretrained parts of methods that load them (vlap: a hub name, a save_pretrained folder, or
``random``), passed as the method argument ``weights``. All of them land in config.json and
the checkpoints with the other arguments.

``--store PATH`` (or ``--dataset/--encoder/--cache-root``) names the primary store;
``--store ROLE=PATH`` takes one input from another store of the same dataset (roles: cls,
patch, text, imageqa). ``--data-root DIR`` with ``--dataset`` takes the question list from
the dataset adapter (featurize's) instead of the store; it is converted here into heads'
plain :class:`~vqacache.heads.questions.Question` records, so heads never import featurize.

Several processes: ``torchrun --nproc-per-node N -m vqacache.cli.train_head ...`` trains with
DistributedDataParallel (:mod:`vqacache.heads.distributed`); ``--batch-size`` stays the
global batch, split over the N processes; only rank 0 validates, writes and prints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vqacache.cache_spec import UsageError
from vqacache.cache_spec.layout import safe_name
from vqacache.cli._common import user_errors_exit
from vqacache.heads.distributed import Distributed
from vqacache.heads.methods import get_method, parse_method_args
from vqacache.heads.methods.sparc import HELP as SPARC_HELP
from vqacache.heads.presets import PRESETS, apply_preset
from vqacache.heads.questions import Question
from vqacache.heads.train import TrainConfig, train

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class RichTrainReporter:
    """Progress bar over training steps with the running loss; epoch lines printed above it."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("steps · epoch {task.fields[epoch]} · loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        )
        self.task: Any = None

    def start(self, total_steps: int, description: str) -> None:
        self.progress.start()
        self.task = self.progress.add_task(escape(description), total=total_steps, epoch=0, loss=float("nan"))

    def advance(self, steps: int, logs: dict[str, float]) -> None:
        self.progress.update(self.task, advance=steps, epoch=int(logs.get("epoch", 0)), loss=logs.get("loss", 0.0))

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)  # ids and paths, not markup

    def finish(self) -> None:
        self.progress.stop()


ROLE_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.+)$")


def parse_stores(values: list[str] | None) -> tuple[Path | None, dict[str, str]]:
    """``--store`` values -> (primary path or None, {role: path}).

    ``ROLE=PATH`` (ROLE a plain word) overrides one role; anything else is the primary store.
    """
    primary: Path | None = None
    roles: dict[str, str] = {}
    for value in values or []:
        match = ROLE_VALUE.match(value)
        if match:
            role, path = match.groups()
            if role in roles:
                raise UsageError(f"--store {role}=... given twice")
            roles[role] = path
        elif primary is not None:
            raise UsageError(f"two primary stores ({primary}, {value}); give the others as ROLE=PATH")
        else:
            primary = Path(value)
    return primary, roles


def adapter_questions(dataset: str | None, data_root: Path, splits: tuple[str, ...]) -> dict[str, list[Question]]:
    """The questions of ``splits`` as the dataset adapter lists them, as heads' records."""
    if not dataset:
        raise UsageError("--data-root needs --dataset (the adapter that reads it)")
    from vqacache.featurize.datasets import get_dataset  # only when asked: keeps --help fast

    adapter = get_dataset(dataset, data_root)
    return {
        split: [
            Question(qid=r.qid, video_id=r.video_id, split=r.split, question=r.question, candidates=tuple(r.candidates),
                     answer=r.answer, qtype=r.qtype, start=r.start, end=r.end)
            for r in adapter.questions(split)
        ]
        for split in dict.fromkeys(splits)
    }


def method_overrides(method: str, explicit: dict[str, Any], pairs: list[str] | None,
                     weights: str | None) -> dict[str, Any]:
    """The run's method arguments: the explicit options (None: not given), ``--method-arg`` pairs
    and ``--weights``; the same key given two ways is refused."""
    m = get_method(method)
    args = {k: v for k, v in explicit.items() if v is not None}
    for key, value in parse_method_args(m, pairs).items():
        if key in args:
            raise UsageError(f"--method-arg {key}=... repeats an option given on its own")
        args[key] = value
    if weights is not None:
        if "weights" not in m.defaults:
            raise UsageError(f"--weights is for methods that load pretrained parts; {method} loads none")
        if "weights" in args:
            raise UsageError("give --weights or --method-arg weights=..., not both")
        args["weights"] = weights
    return args


def resolve_store(store: Path | None, dataset: str | None, encoder: str | None, cache_root: Path | None) -> Path:
    """``--store``, or the single store of ``--encoder`` for ``--dataset`` under ``--cache-root``."""
    if store is not None:
        return store
    if not (dataset and encoder and cache_root):
        raise UsageError("give --store, or all of --dataset, --encoder and --cache-root")
    found = sorted((cache_root / safe_name(dataset)).glob(f"{safe_name(encoder)}-*.zarr"))
    if len(found) != 1:
        what = "no store" if not found else f"{len(found)} stores ({', '.join(p.name for p in found)}); pass --store"
        raise UsageError(f"{what} for {dataset}/{encoder} under {cache_root}")
    return found[0]


@app.command(help="Train a VideoQA head from cached features; checkpoints, metrics and predictions go to --out.")
@user_errors_exit
def run(
    out: Annotated[Path, typer.Option(help="Run directory.")],
    method: Annotated[str | None, typer.Option(
        help="uniform, videodistill, hga, sparc, vlap, siasamrea or mcg (with --preset: the preset's).")] = None,
    preset: Annotated[str | None, typer.Option(
        help="Named paper settings (method, arguments, optimiser, lr, epochs, batch size); explicit options win: "
             + ", ".join(f"{p.name} ({p.source})" for p in PRESETS.values()) + ".")] = None,
    store: Annotated[
        list[str] | None,
        typer.Option(help="PATH of the primary .zarr store, or ROLE=PATH to take one input (cls, patch, text, "
                          "imageqa) from another store of the dataset. Repeatable."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (with --encoder, --cache-root, or --data-root); "
                                                     "stores of another dataset are refused.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Take the questions from the --dataset adapter over this "
                                                        "folder instead of the store.")] = None,
    require_all_questions: Annotated[
        bool,
        typer.Option("--require-all-questions",
                     help="Fail when listed questions have no features (default: warn and leave them out)."),
    ] = False,
    encoder: Annotated[str | None, typer.Option(help="Encoder name of the store.")] = None,
    cache_root: Annotated[Path | None, typer.Option(help="Root of the feature cache.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Default 10 (or the preset's).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Global batch: under torchrun split evenly over the processes. Default 8 (or the preset's).")] = None,
    lr: Annotated[float | None, typer.Option(help="Default: the method's (3e-5).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Default: the method's (1e-3).")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up fraction of the steps (default 0.1).")] = None,
    grad_clip: Annotated[float, typer.Option(help="Max gradient L2 norm; 0 disables.")] = 1.0,
    seed: int = 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    device: str = "cpu",
    amp: Annotated[bool, typer.Option(help="bfloat16 autocast on CUDA.")] = True,
    num_frames: Annotated[int | None, typer.Option(help="N dense frames (default 100).")] = None,
    num_select: Annotated[int | None, typer.Option(help="K selected frames (default 16).")] = None,
    num_layers: Annotated[int | None, typer.Option(help="L blocks (default 3).")] = None,
    num_heads: Annotated[int | None, typer.Option(help="Attention heads (default 8).")] = None,
    dim: Annotated[int | None, typer.Option(help="Model width (default: the method's; videodistill 1024 as the paper, the others the patch width).")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="sparc: hga, uniform or videodistill; siasamrea: uniform or videodistill.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="sparc: causal-frame threshold t (0.5, this project's choice: the paper gives none).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    train_split: str = "train",
    val_split: str = "val",
    method_arg: Annotated[
        list[str] | None,
        typer.Option("--method-arg", help="KEY=VALUE setting one of the method's arguments (typed by its default); "
                                          "repeatable. An unknown key lists the valid ones. sparc: "
                                          + "; ".join(f"{k}: {v}" for k, v in SPARC_HELP.items()) + "."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="vlap: pretrained parts, a hub name (default Salesforce/instructblip-flan-t5-xl, read from "
                          "the local Hugging Face cache), a save_pretrained folder, or random (with --method-arg "
                          "size=tiny). videodistill with --method-arg text_tower=trainable: the open_clip checkpoint "
                          "the store's text was made with (checked by sha256; not needed for random weights or a "
                          "pretrained tag in the local cache)."),
    ] = None,
) -> None:
    explicit = {
        "num_frames": num_frames, "num_select": num_select, "num_layers": num_layers, "num_heads": num_heads,
        "dim": dim, "backbone": backbone, "threshold": threshold,
    }
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "warmup": warmup}
    if preset is not None:
        method, preset_args, training = apply_preset(preset, method, {}, training)
        args = {**preset_args, **method_overrides(method, explicit, method_arg, weights)}
    elif method is None:
        raise UsageError("give --method (or a --preset)")
    else:
        args = method_overrides(method, explicit, method_arg, weights)
    primary, roles = parse_stores(store)
    config = TrainConfig(
        method=method, store=str(resolve_store(primary, dataset, encoder, cache_root)), out=str(out),
        epochs=training["epochs"] or 10, batch_size=training["batch_size"] or 8, lr=training["lr"],
        weight_decay=training["weight_decay"], warmup=training["warmup"], optimizer=training.get("optimizer"),
        grad_clip=grad_clip, seed=seed,
        workers=workers, device=device, amp=amp, resume=resume, train_split=train_split, val_split=val_split,
        args=args, stores=roles, dataset=dataset,
        require_all_questions=require_all_questions,
    )
    questions = adapter_questions(dataset, data_root, (train_split, val_split)) if data_root is not None else None
    metrics = train(config, RichTrainReporter(), questions)
    if not Distributed.from_env().is_main:  # rank 0 prints
        return
    if "train_outside_topk" in metrics:  # sparc with an open-ended teacher
        typer.echo(f"teacher: {100 * metrics['train_outside_topk']:.1f}% of the last epoch's training answers are "
                   "outside the open-ended teacher's top-k (p_a = 0 on every frame: causal set = all frames); "
                   "vqa-featurize --imageqa-k raises k")
    missing = metrics.get("val_missing") or 0  # counted wrong in val acc, as the official metric does
    counted = f" ({missing} of {metrics['val']['listed']} validation questions without features, counted wrong)" if missing else ""
    typer.echo(f"done: best val acc {metrics.get('best_val_acc', float('nan')):.2f}{counted}; run in {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
