"""The training recipe every method runs: ``setup``, ``resume``, ``train_epoch``, ``validate``,
``save`` (torchtune's shape), one screen each.

``TrainRecipe(config).run()`` (what :func:`vqacache.heads.train.train` calls) trains
``config.method`` and writes into ``config.out``::

    RUN_DIR/config.json                 the run's configuration (method args included)
    RUN_DIR/metrics.jsonl               one JSON line per epoch (its per-step ``losses`` included)
    RUN_DIR/checkpoints/last.pt         written at the end of every epoch
    RUN_DIR/checkpoints/best.pt         the epoch with the best validation accuracy
    RUN_DIR/predictions/val.json        best epoch's predictions, in the format vqa-eval reads
    RUN_DIR/predictions/val-last.json   last epoch's predictions
    RUN_DIR/curves.png                  loss per step (smoothed), validation accuracy with chance, lr

**Steps.** :meth:`~TrainRecipe.setup` checks the configuration (unknown optimiser or
schedule: one line, before any store is opened), reads the checkpoint to resume, opens the
stores (:class:`~vqacache.heads.stores.StoreSet`), builds the datasets, model, optimiser,
schedule and loaders; :meth:`~TrainRecipe.resume` restores the model, optimiser, schedule,
RNG and step counter; :meth:`~TrainRecipe.train_epoch` runs one epoch's optimiser steps;
:meth:`~TrainRecipe.validate` scores the validation split
(:func:`vqacache.heads.validation.validate`: questions without features count as wrong);
:meth:`~TrainRecipe.save` writes metrics, predictions, curves and the
:class:`~vqacache.heads.checkpoint.Checkpoint`.

**Step counter.** ``self.step`` counts optimiser steps over the whole run (restored on
resume); every training batch carries ``batch["train_step"] = TrainStep(step, total)`` into
``Method.loss`` (VLAP's temperature schedule reads it).

**Optimiser and schedule.** ``method.optim``: ``lr``, ``weight_decay``, ``warmup`` (fraction
of the steps), ``optimizer`` (:data:`OPTIMIZERS`: ``adamw`` default, ``adam``), ``schedule``
(:data:`SCHEDULES`: ``linear`` warm-up then linear decay to 0 at the last step, VideoDistill's;
``cosine`` decay after the warm-up, VLAP's); a :class:`TrainConfig` field of the same name
overrides it. Weight decay applies to matrices only (not biases, norms, embeddings). AMP
(bfloat16 autocast) on CUDA only; gradients clipped to ``grad_clip`` (L2 norm).

**Several processes** (``torchrun --nproc-per-node N -m vqacache.cli.train_head ...``,
:mod:`vqacache.heads.distributed`): each rank reads its share of the training store
(``num_replicas`` = N) with ``batch_size / N`` samples a step (``batch_size`` is the global
batch), DDP averages the gradients; validation, checkpoints (the unwrapped model's state,
the same format), metrics, curves and messages are rank 0's, the others wait at a barrier.
The epoch's ``losses`` are the mean over the ranks of each rank's loss.

**Data order and resume.** The training loader draws its order from a
:class:`~torch.utils.data.DistributedSampler` (one replica per process) seeded by ``(seed, epoch)``, and
keeps its workers across epochs (``persistent_workers``: a worker opens each video once per
run, not once per epoch). The model's randomness comes from the global RNG, saved in every
checkpoint; so a resumed run's losses equal an uninterrupted run's on the same device (with
``workers > 0`` only for methods whose samples draw nothing at random: VLAP's training
segments draw in the workers, whose RNG is not checkpointed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.checkpoint import (
    Checkpoint, load_checkpoint, rng_state, seed_everything, set_rng_state, write_json,
)
from vqacache.heads.curves import write_curves
from vqacache.heads.data import QADataset, collate, to_device
from vqacache.heads.distributed import Distributed, LossStep, local_batch_size
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.methods.common import TrainStep
from vqacache.heads.questions import MissingQuestions, Question
from vqacache.heads.scoring import training_scorer
from vqacache.heads.stores import StoreSet
from vqacache.heads.validation import autocast, chance_accuracy, validate

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,  # decoupled weight decay (the default)
    "adam": torch.optim.Adam,  # L2 penalty added to the gradient (torch's Adam weight_decay)
}
"""``optim["optimizer"]`` -> optimiser class (absent: ``adamw``)."""


def _linear(left: float) -> float:
    return left


def _cosine(left: float) -> float:
    return 0.5 * (1.0 - math.cos(math.pi * left))


SCHEDULES: dict[str, Callable[[float], float]] = {"linear": _linear, "cosine": _cosine}
"""``optim["schedule"]`` -> the lr factor after the warm-up, as a function of the share of steps left (1 -> 0)."""


class Reporter(Protocol):
    def start(self, total_steps: int, description: str) -> None: ...
    def advance(self, steps: int, logs: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, total_steps: int, description: str) -> None: ...
    def advance(self, steps: int, logs: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


@dataclass
class TrainConfig:
    """One training run. ``args`` override the method's defaults (``num_frames``, ``num_select``,
    ``dim``, ``backbone``, ...); ``lr``/``weight_decay``/``warmup``/``optimizer`` None take the method's."""

    method: str
    store: str
    """The primary store: every input whose role is not in ``stores`` comes from it."""
    out: str
    epochs: int = 10
    batch_size: int = 8
    lr: float | None = None
    weight_decay: float | None = None
    warmup: float | None = None
    grad_clip: float = 1.0
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    amp: bool = True
    train_split: str = "train"
    val_split: str = "val"
    resume: bool = False
    max_steps_per_epoch: int = 0
    in_memory: bool = False
    """Read every sample once before training (small stores, benchmarks); else lazy reads."""
    stop_after: int = 0
    """Stop (as if killed) after this many epochs of this invocation; 0: run to ``epochs``."""
    args: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)
    """Role -> store overriding the primary store (roles: cls, patch, text, imageqa)."""
    dataset: str | None = None
    """Refuse stores of another dataset (None: any, as long as all stores agree)."""
    require_all_questions: bool = False
    """Refuse listed questions without features instead of warning (they count as wrong in val_acc)."""
    optimizer: str | None = None
    """``adamw`` or ``adam``; None: the method's (only methods whose optim names one: sparc, hga)."""


def lr_lambda(total: int, warmup_steps: int, schedule: str = "linear") -> Callable[[int], float]:
    """Step -> lr factor: ``(step + 1) / warmup_steps`` during the warm-up, then ``SCHEDULES[schedule]``
    of the share of the remaining steps (1 at the end of the warm-up, 0 at the last step)."""
    after = SCHEDULES[schedule]

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return after(max(0.0, (total - step) / max(1, total - warmup_steps)))

    return f


def parameter_groups(model: torch.nn.Module, optim: dict[str, Any]) -> list[dict[str, Any]]:
    """Matrices (not embeddings) with ``weight_decay``, the rest without; a model with an
    ``lr_scale(name) -> float`` method (e.g. VLAP's ``prompter_lr_scale``) gets one group per
    scale, at ``lr * scale`` (the schedule multiplies every group's own lr)."""
    scale_of = getattr(model, "lr_scale", None)
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and "embed" not in name
        groups.setdefault((decay, float(scale_of(name)) if scale_of else 1.0), []).append(p)
    for decay in (True, False):  # both base groups exist, in this order (as before the scales)
        groups.setdefault((decay, 1.0), [])
    ordered = sorted(groups, key=lambda k: (k[1] != 1.0, not k[0], k[1]))
    return [{"params": groups[k], "weight_decay": optim["weight_decay"] if k[0] else 0.0, "lr": optim["lr"] * k[1]}
            for k in ordered]


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The optimiser registered as ``name`` over parameter ``groups``; unknown names list the valid ones."""
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name](groups, lr=lr)


def questions_digest(ds: QADataset) -> str:
    """sha256 of the sorted qids a dataset uses (a resumed run must see the same list)."""
    return hashlib.sha256("\n".join(r.qid for r in ds.refs).encode()).hexdigest()


class InMemory(torch.utils.data.Dataset):
    """A dataset's samples read once into a list (keeps ``answer_vocab``, ``fingerprint``, ``refs``, ``coverage``)."""

    def __init__(self, ds: QADataset) -> None:
        self.items = [ds[i] for i in range(len(ds))]
        self.answer_vocab, self.fingerprint, self.refs, self.coverage = ds.answer_vocab, ds.fingerprint, ds.refs, ds.coverage

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class TrainRecipe:
    """One training run (see the module doc): ``run()`` = ``setup()``, then per epoch
    ``train_epoch``, ``validate``, ``save``."""

    def __init__(self, config: TrainConfig, reporter: Reporter | None = None,
                 questions: Mapping[str, Sequence[Question]] | None = None) -> None:
        self.cfg = config
        self.dist = Distributed.from_env()
        self.reporter = (reporter or SilentReporter()) if self.dist.is_main else SilentReporter()
        self.questions = dict(questions or {})
        self.out = Path(config.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.method = get_method(config.method)
        self.step = 0
        self.start_epoch = 0
        self.best = -1.0

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything before the first step; bad settings fail before any store is opened."""
        cfg = self.cfg
        self.local_batch = local_batch_size(cfg.batch_size, self.dist.world_size)
        self.device = self.dist.device(cfg.device)
        self.optim = {k: getattr(cfg, k, None) if getattr(cfg, k, None) is not None else v
                      for k, v in self.method.optim.items()}
        if cfg.optimizer is not None:
            self.optim["optimizer"] = cfg.optimizer
        self._check_optim()
        ckpt = self._read_resume()
        self.args = ckpt.model_args if ckpt else method_args(self.method, cfg.args)
        if self.method.check is not None:
            self.method.check(self.args)
        self.stores = StoreSet(
            cfg.store, cfg.stores, dataset=cfg.dataset, expect=ckpt.store_fingerprints if ckpt else None,
            expect_what="the checkpoint", expect_paths=ckpt.store_paths if ckpt else None,
        )
        if self.method.prepare is not None and ckpt is None:
            self.args = {**self.args, **self.method.prepare(self.args, self.stores)}
        self._setup_data(ckpt)
        self.dims = ckpt.dims if ckpt else self.train_ds.dims()
        if self.args["num_frames"] < 1 or (not self.train_ds.multiple_choice and self.dims["num_answers"] == 0):
            raise UsageError("nothing to train: no frames or no answer vocabulary")
        self.scorer = training_scorer(self.stores.dataset)  # None: NExT-QA's arithmetic
        if cfg.in_memory:
            self.train_ds, self.val_ds = InMemory(self.train_ds), InMemory(self.val_ds)  # type: ignore[assignment]
        self.dist.start(self.device)
        seed_everything(cfg.seed)
        self.model = self.method.build(self.args, self.dims).to(self.device)
        self.step_fn = self.dist.wrap(LossStep(self.model, self.method.loss, self.args), self.device)
        self._setup_optimizer()
        self._setup_loaders()
        if ckpt is not None:
            self.resume(ckpt)
        elif self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "metrics.jsonl").write_text("")
        if self.dist.is_main:
            write_json(self.out / "config.json", {
                **asdict(cfg), "args": self.args, "optim": self.optim,
                "store_fingerprint": self.stores.primary_fingerprint, "store_roles": self.stores.describe(),
                "questions": self.coverage, "world_size": self.dist.world_size,
            })

    def _check_optim(self) -> None:
        name, schedule = self.optim.get("optimizer", "adamw"), self.optim.get("schedule", "linear")
        if name not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
        if schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {schedule!r} in the method's optim; valid: {', '.join(sorted(SCHEDULES))}")

    def _read_resume(self) -> Checkpoint | None:
        last = self.ckpt_dir / "last.pt"
        if not self.cfg.resume:
            if last.exists():
                raise UsageError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
            return None
        ckpt = Checkpoint.from_dict(load_checkpoint(last))
        if ckpt.method != self.cfg.method:
            raise UsageError(f"{self.out} was trained with method {ckpt.method!r}, not {self.cfg.method!r}")
        return ckpt

    def _setup_data(self, ckpt: Checkpoint | None) -> None:
        cfg, data_kw = self.cfg, self.method.data(self.args)
        self.train_ds = QADataset(self.stores, cfg.train_split, answer_vocab=ckpt.answer_vocab if ckpt else None,
                                  questions=self.questions.get(cfg.train_split), training=True, **data_kw)
        self.val_ds = QADataset(self.stores, cfg.val_split, answer_vocab=self.train_ds.answer_vocab,
                                questions=self.questions.get(cfg.val_split), **data_kw)
        splits = {cfg.train_split: self.train_ds, cfg.val_split: self.val_ds}
        for ds in splits.values():
            if ds.coverage.missing:
                if cfg.require_all_questions:
                    raise MissingQuestions(ds.coverage.summary())
                counted = " (counted wrong in val_acc)" if ds is self.val_ds else ""
                self.reporter.message(f"warning: {ds.coverage.summary()}{counted}")
        self.digests = {split: questions_digest(ds) for split, ds in splits.items()}
        before = ckpt.questions_digest if ckpt else {}
        for split in sorted(s for s in self.digests if s in before and before[s] != self.digests[s]):
            self.reporter.message(
                f"warning: the questions of split {split!r} ({len(splits[split])} now) are not those the checkpoint "
                "was trained on; the resumed run will not reproduce an uninterrupted one"
            )
        self.coverage = {split: ds.coverage.to_dict() for split, ds in splits.items()}
        self.chance = chance_accuracy(self.val_ds.refs, self.val_ds.coverage.n_missing, self.train_ds.refs)

    def _setup_optimizer(self) -> None:
        cfg, optim = self.cfg, self.optim
        self.optimizer = make_optimizer(optim.get("optimizer", "adamw"), parameter_groups(self.model, optim),
                                        lr=optim["lr"])
        steps = -(-len(self.train_ds) // cfg.batch_size)  # = each rank's ceil(ceil(n / W) / (batch_size / W))
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps
        self.total = self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda())

    def _lr_lambda(self) -> Callable[[int], float]:
        return lr_lambda(self.total, max(1, round(self.optim["warmup"] * self.total)), self.optim.get("schedule", "linear"))

    def _setup_loaders(self) -> None:
        cfg = self.cfg
        kw: dict[str, Any] = {"collate_fn": collate, "num_workers": cfg.workers,
                              "generator": torch.Generator().manual_seed(cfg.seed)}  # worker seeds only
        if cfg.workers:
            kw.update(persistent_workers=True, prefetch_factor=4)
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed * 100_003)  # rank r: positions r, r + W, ...
        self.train_loader = DataLoader(self.train_ds, sampler=self.sampler, batch_size=self.local_batch, **kw)
        self.val_loader = DataLoader(self.val_ds, shuffle=False, batch_size=cfg.batch_size, **kw)  # rank 0's

    # -- resume -----------------------------------------------------------------------------

    def resume(self, ckpt: Checkpoint) -> None:
        """Model, optimiser, schedule, RNG and step counter from ``ckpt``; the next epoch follows."""
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.scheduler)
        self.scheduler.lr_lambdas[0] = self._lr_lambda()  # its length follows this run's --epochs
        set_rng_state(ckpt.rng)
        self.start_epoch, self.best = ckpt.epoch + 1, ckpt.best_val_acc
        self.step = ckpt.step or self.start_epoch * self.steps_per_epoch  # older checkpoints: no step
        if self.dist.is_main:
            _truncate_metrics(self.out / "metrics.jsonl", ckpt.epoch)

    # -- one epoch --------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of optimiser steps; returns ``train_loss``, ``losses`` (per step), ``train_<term>``."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)  # order seeded by (seed, epoch)
        self.model.train()
        losses: list[float] = []
        sums: dict[str, float] = {}
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps_per_epoch:
                break
            batch = to_device(batch, self.device)
            batch["train_step"] = TrainStep(self.step, self.total)
            with autocast(self.device, cfg.amp):
                loss, logs = self.step_fn(batch)  # method.loss(model, batch, args), in DDP with several ranks
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            losses.append(logs["loss"])
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            self.reporter.advance(1, {**logs, "epoch": epoch})
        names = sorted(sums)
        reduced = self.dist.mean([*losses, *(sums[k] for k in names)], self.device)  # means over the ranks
        losses, sums = reduced[: len(losses)], dict(zip(names, reduced[len(losses):], strict=True))
        n = max(1, len(losses))
        return {"train_loss": sum(losses) / n, "losses": losses,
                **{f"train_{k}": v / n for k, v in sums.items() if k != "loss"}}

    def validate(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(validation metrics, prediction file); see :func:`vqacache.heads.validation.validate`."""
        metrics, official = validate(self.model, self.cfg.method, self.val_loader, self.val_ds, self.cfg.val_split,
                                     self.scorer, self.train_ds.answer_vocab, self.device, self.cfg.amp)
        return {**metrics, "chance_acc": self.chance}, official

    # -- save -------------------------------------------------------------------------------

    def save(self, epoch: int, metrics: dict[str, Any], official: dict[str, Any], improved: bool) -> None:
        """Predictions, the epoch's metrics line, curves, then ``last.pt`` (and ``best.pt``)."""
        write_json(self.out / "predictions" / "val-last.json", official)
        if improved:
            write_json(self.out / "predictions" / "val.json", official)
        with (self.out / "metrics.jsonl").open("a") as f:  # before the checkpoint: resume truncates
            f.write(json.dumps(metrics) + "\n")
        write_curves(self.out / "metrics.jsonl", self.out / "curves.png",
                     title=f"{self.cfg.method} on {self.stores.primary_path.name}")
        ckpt = Checkpoint(
            method=self.cfg.method, model_args=self.args, dims=self.dims, answer_vocab=self.train_ds.answer_vocab,
            store_fingerprint=self.stores.primary_fingerprint, store_spec=self.stores.primary_spec.to_dict(),
            store_fingerprints=dict(self.stores.fingerprints),
            store_paths={r: str(p) for r, p in self.stores.paths.items()}, store_specs=self.stores.specs(),
            questions_digest=self.digests, dataset=self.stores.dataset, epoch=epoch, step=self.step,
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), rng=rng_state(), best_val_acc=self.best, config=asdict(self.cfg),
        )
        ckpt.save(self.ckpt_dir / "last.pt")
        if improved:
            ckpt.save(self.ckpt_dir / "best.pt")

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train; returns the last epoch's metrics (with ``best_val_acc``; an empty dict on ranks other than 0)."""
        try:
            self.setup()
            return self._loop()
        finally:
            self.dist.stop()

    def _loop(self) -> dict[str, Any]:
        cfg = self.cfg
        self.reporter.start(self.steps_per_epoch * (cfg.epochs - self.start_epoch),
                            f"{cfg.method} on {self.stores.primary_path.name}")
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            trained = self.train_epoch(epoch)
            if self.dist.is_main:  # the other ranks wait at the barrier
                val, official = self.validate()
                acc = val["val_acc"] if val["val_acc"] is not None else -1.0
                improved = acc > self.best
                self.best = max(self.best, acc)
                metrics = {"epoch": epoch, "step": self.step, **trained, **val,
                           "lr": self.scheduler.get_last_lr()[0], "best_val_acc": self.best,
                           "seconds": time.perf_counter() - t0}
                self.save(epoch, metrics, official, improved)
                self.reporter.message(_epoch_line(epoch, metrics))
            self.dist.barrier()
            if cfg.stop_after and epoch + 1 - self.start_epoch >= cfg.stop_after:
                break
        self.reporter.finish()
        return metrics


def _epoch_line(epoch: int, m: dict[str, Any]) -> str:
    acc = "n/a" if m["val_acc"] is None else f"{m['val_acc']:.2f}"
    missing = f"; {m['val_missing']} of {m['val']['listed']} without features, counted wrong" if m["val_missing"] else ""
    chance = "" if m.get("chance_acc") is None else f", chance {m['chance_acc']:.2f}"
    return (f"epoch {epoch}: train loss {m['train_loss']:.4f}  val acc {acc}{chance}{missing}  "
            f"(best {m['best_val_acc']:.2f})")


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep the metric lines of epochs up to the checkpoint's (a crash may have left more)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= last_epoch]
    path.write_text("".join(ln + "\n" for ln in lines))
