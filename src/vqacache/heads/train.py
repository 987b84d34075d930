"""The training loop shared by every method: data, AdamW, schedule, checkpoints, metrics.

``train(config, reporter)`` trains ``config.method`` on one store and writes into
``config.out``::

    RUN_DIR/config.json                 the run's configuration (method args included)
    RUN_DIR/metrics.jsonl               one JSON line per epoch
    RUN_DIR/checkpoints/last.pt         written at the end of every epoch
    RUN_DIR/checkpoints/best.pt         the epoch with the best validation accuracy
    RUN_DIR/predictions/val.json        best epoch's predictions, in the format vqa-eval reads
                                        (NExT-QA's; docs/evaluation.md for the others)
    RUN_DIR/predictions/val-last.json   last epoch's predictions
    RUN_DIR/curves.png                  losses, validation accuracy and learning rate per epoch

Inputs: the primary store ``config.store`` and, per role, other stores of the same dataset
(``config.stores``, e.g. ``{"patch": PATH}``; :mod:`vqacache.heads.stores`). The questions
come from the text store, or from a dataset adapter's list passed to :func:`train`; listed
questions without features are reported as a warning, or refused with
``require_all_questions`` (:mod:`vqacache.heads.questions`).

A checkpoint describes itself under named keys: ``method``, ``model_args``, ``dims``,
``answer_vocab``, ``store_fingerprints`` (role -> fingerprint of every store read),
``store_paths``, ``store_specs`` (role -> spec), ``store_fingerprint`` and ``store_spec``
(the primary store's), ``questions_digest`` (split -> digest of the qids used), ``epoch``,
``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (torch, cuda, numpy, python),
``best_val_acc``, ``config``. ``resume=True`` loads ``last.pt``, refuses any role whose store
has another fingerprint, restores all states and continues with the next epoch (a changed
question list is reported: the continuation is then no longer exact); since each epoch's
shuffling comes from a generator seeded by ``(seed, epoch)`` and the model's randomness from
the restored global RNG, the resumed run's losses equal those of an uninterrupted run (on
the same device). :func:`checkpoint_dataset` builds a split's dataset for a checkpoint with
the same checks (evaluation).

Loading a checkpoint never runs code: it holds only tensors and plain data (dicts, lists,
tuples, str, int, float, bool, None; the numpy and Python RNG states as int64 tensors), is
checked to be so before it is written (:func:`check_plain`), and is read with
``torch.load(weights_only=True)``. A file holding anything else (a crafted pickle, a
checkpoint of another program) is refused by :func:`load_checkpoint` with one line, before
any of its objects is built.

Validation is scored by the dataset's official scorer when one is registered
(:func:`vqacache.heads.scoring.training_scorer`: the same code as ``vqa-eval``; ``val`` in
the metrics is its result and ``val_acc`` its ``Acc``); NExT-QA and datasets without a
scorer keep :func:`score_predictions` (NExT-QA's grouping when the types are NExT-QA's).

Schedule: linear warm-up over ``warmup`` x total steps, then linear decay to 0 at the last
step (VideoDistill's "linear decay learning rate schedule with a warm-up strategy"), or a
cosine decay to 0 when the method's optim says ``schedule: cosine`` (VLAP). Each training
batch carries ``train_step``, a :class:`~vqacache.heads.methods.common.TrainStep`.
AMP (bfloat16 autocast) on CUDA only; gradients clipped to ``grad_clip`` (L2 norm).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.safe_load import load_error_reason
from vqacache.heads.curves import write_curves
from vqacache.heads.data import QADataset, collate, to_device
from vqacache.heads.eval import NEXTQA_TYPES, FOLD, accuracy_by_type, prediction_key
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.methods.common import TrainStep, answer_loss
from vqacache.heads.questions import MissingQuestions, Question
from vqacache.heads.scoring import training_scorer
from vqacache.heads.scoring.training import score_validation
from vqacache.heads.stores import ROLES, StoreSet

CHECKPOINT_FORMAT = 2
"""2: RNG states as tensors (plain data, loadable with ``weights_only=True``); 1 pickled numpy arrays."""

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


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
    ``dim``, ``backbone``, ...); ``lr``/``weight_decay``/``warmup`` None take the method's."""

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
    """Refuse listed questions without features instead of warning and leaving them out."""
    optimizer: str | None = None
    """``adamw`` or ``adam``; None: the method's (only methods whose optim names one: sparc, hga)."""


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,  # decoupled weight decay (the default)
    "adam": torch.optim.Adam,  # L2 penalty added to the gradient (torch's Adam weight_decay)
}
"""``method.optim["optimizer"]`` -> optimiser class (absent: ``adamw``)."""


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The optimiser registered as ``name`` over parameter ``groups``; unknown names list the valid ones."""
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r} in the method's optim; valid: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name](groups, lr=lr)


def _lr_lambda(total: int, warmup_steps: int, schedule: str = "linear") -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        left = max(0.0, (total - step) / max(1, total - warmup_steps))  # 1 -> 0 after the warm-up
        return 0.5 * (1.0 - math.cos(math.pi * left)) if schedule == "cosine" else left

    return f


def _rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain numbers (no numpy objects: see the module doc)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},  # keys (624,) uint32 values
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),  # (625,)
                   "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` is tensors and plain data only (dicts with str/int keys,
    lists, tuples, str, int, float, bool, None): what ``torch.load(weights_only=True)`` reads
    back without building any other object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str or int")
            check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN) or (isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, not plain data")


def _atomic_save(obj: Any, path: Path) -> None:
    check_plain(obj)  # a checkpoint must load with weights_only=True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A head checkpoint, read with ``weights_only=True``: a file holding anything but tensors
    and plain data is refused (one-line :class:`UsageError`) before any object is built."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # disallowed globals, not a torch file, truncated zip: one line
        raise UsageError(
            f"{path} is not a vqacache head checkpoint that loads safely (tensors and plain data only; "
            f"nothing else is unpickled): {load_error_reason(exc)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else None
        raise UsageError(f"{path} is not a vqacache head checkpoint of format {CHECKPOINT_FORMAT} (format {found!r})")
    return ckpt


def checkpoint_fingerprints(ckpt: dict[str, Any]) -> dict[str, str]:
    """Role -> fingerprint a checkpoint was trained on (older checkpoints: the one store's, every role)."""
    return dict(ckpt.get("store_fingerprints") or {role: ckpt["store_fingerprint"] for role in ROLES})


def checkpoint_dataset(
    ckpt: dict[str, Any],
    store: str | Path,
    split: str,
    stores: Mapping[str, str | Path] | None = None,
    questions: Sequence[Question] | None = None,
) -> QADataset:
    """The dataset of ``split`` for a checkpoint's model: its method's inputs and answer
    vocabulary, refusing any role whose store is not the one the checkpoint was trained on."""
    expect = checkpoint_fingerprints(ckpt)
    store_set = StoreSet(store, stores, expect=expect, expect_what="the checkpoint")
    data_kw = get_method(ckpt["method"]).data(ckpt["model_args"])
    return QADataset(store_set, split, answer_vocab=ckpt["answer_vocab"], questions=questions, **data_kw)


def questions_digest(ds: QADataset) -> str:
    """sha256 of the sorted qids a dataset uses (a resumed run must see the same list)."""
    return hashlib.sha256("\n".join(r.qid for r in ds.refs).encode()).hexdigest()


def build_model(ckpt_or_method: str, args: dict[str, Any], dims: dict[str, int]) -> torch.nn.Module:
    return get_method(ckpt_or_method).build(args, dims)


@torch.no_grad()
def predict(
    model: torch.nn.Module, method: str, loader: DataLoader, device: str, amp: bool,
    stats: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{key: {"prediction", "answer", "qtype", "index"}}`` over a loader (key: NExT-QA's).

    ``stats``, when given, receives ``loss``: the mean answer cross-entropy of the predictions
    over the labelled questions (absent when none is labelled).
    """
    model.eval()
    out: dict[str, dict[str, Any]] = {}
    m = get_method(method)
    loss_sum, labelled = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        with _autocast(device, amp):
            logits = m.predict(model, batch).float()  # (B, C)
        n = int((batch["answer"] >= 0).sum())
        if n:
            loss_sum += float(answer_loss(logits, batch["answer"])) * n
            labelled += n
        pred = logits.argmax(-1).tolist()
        for b, qid in enumerate(batch["qid"]):
            out[prediction_key(batch["video_id"][b], qid)] = {
                "prediction": pred[b], "answer": int(batch["answer"][b]), "qtype": batch["qtype"][b],
            }
    if stats is not None and labelled:
        stats["loss"] = loss_sum / labelled
    return out


def _autocast(device: str, amp: bool) -> Any:
    if amp and str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def score_predictions(preds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and by type with :func:`vqacache.heads.eval.accuracy_by_type`
    (NExT-QA's grouping when every type is a NExT-QA type)."""
    types = {FOLD.get(p["qtype"], p["qtype"]) for p in preds.values()}
    nextqa = bool(types) and types <= set(NEXTQA_TYPES)
    return accuracy_by_type(((k, p["qtype"], p["prediction"] == p["answer"]) for k, p in preds.items()), nextqa=nextqa)


def _check_coverage(ds: QADataset, config: TrainConfig, reporter: Reporter) -> None:
    if not ds.coverage.missing:
        return
    if config.require_all_questions:
        raise MissingQuestions(ds.coverage.summary())
    reporter.message(f"warning: {ds.coverage.summary()}")


def train(
    config: TrainConfig,
    reporter: Reporter | None = None,
    questions: Mapping[str, Sequence[Question]] | None = None,
) -> dict[str, Any]:
    """Train; returns the last epoch's metrics (with ``best_val_acc``). See the module doc.

    ``questions``: split -> a dataset adapter's questions (None: the text store's bundles).
    """
    reporter = reporter or SilentReporter()
    out = Path(config.out)
    ckpt_dir = out / "checkpoints"
    method = get_method(config.method)
    resume_ckpt = None
    if config.resume:
        resume_ckpt = load_checkpoint(ckpt_dir / "last.pt")
        if resume_ckpt["method"] != config.method:
            raise UsageError(f"{out} was trained with method {resume_ckpt['method']!r}, not {config.method!r}")
        args = resume_ckpt["model_args"]
    else:
        if (ckpt_dir / "last.pt").exists():
            raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        args = method_args(method, config.args)
    optim = {k: getattr(config, k, None) if getattr(config, k, None) is not None else v for k, v in method.optim.items()}

    expect = checkpoint_fingerprints(resume_ckpt) if resume_ckpt is not None else None
    stores = StoreSet(
        config.store, config.stores, dataset=config.dataset, expect=expect, expect_what="the checkpoint",
        expect_paths=resume_ckpt.get("store_paths") if resume_ckpt is not None else None,
    )
    if method.prepare is not None and resume_ckpt is None:
        args = {**args, **method.prepare(args, stores)}
    data_kw = method.data(args)
    vocab = resume_ckpt["answer_vocab"] if resume_ckpt else None
    questions = questions or {}
    train_ds = QADataset(stores, config.train_split, answer_vocab=vocab, questions=questions.get(config.train_split),
                         training=True, **data_kw)
    val_ds = QADataset(stores, config.val_split, answer_vocab=train_ds.answer_vocab,
                       questions=questions.get(config.val_split), **data_kw)
    splits = {config.train_split: train_ds, config.val_split: val_ds}
    for ds in splits.values():
        _check_coverage(ds, config, reporter)
    digests = {split: questions_digest(ds) for split, ds in splits.items()}
    before = resume_ckpt.get("questions_digest", {}) if resume_ckpt is not None else {}
    for split in sorted(s for s in digests if s in before and before[s] != digests[s]):
        reporter.message(
            f"warning: the questions of split {split!r} ({len(splits[split])} now) are not those the checkpoint "
            "was trained on; the resumed run will not reproduce an uninterrupted one"
        )
    coverage = {split: ds.coverage.to_dict() for split, ds in splits.items()}
    store_specs = stores.specs()
    dims = resume_ckpt["dims"] if resume_ckpt else train_ds.dims()
    if args["num_frames"] < 1 or (not train_ds.multiple_choice and dims["num_answers"] == 0):
        raise UsageError("nothing to train: no frames or no answer vocabulary")

    scorer = training_scorer(stores.dataset)  # None: score_predictions (NExT-QA's arithmetic)
    val_refs = val_ds.refs
    if config.in_memory:
        train_ds, val_ds = InMemory(train_ds), InMemory(val_ds)  # type: ignore[assignment]
    _seed(config.seed)
    model = method.build(args, dims).to(config.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = make_optimizer(
        optim.get("optimizer", "adamw"),
        [{"params": decay, "weight_decay": optim["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim["lr"],
    )
    steps_per_epoch = -(-len(train_ds) // config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total = steps_per_epoch * config.epochs
    schedule = optim.get("schedule", "linear")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, max(1, round(optim["warmup"] * total)), schedule))
    start_epoch, best = 0, -1.0
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        # the schedule's length follows this run's --epochs (extending a finished run is allowed)
        scheduler.lr_lambdas[0] = _lr_lambda(total, max(1, round(optim["warmup"] * total)), schedule)
        _set_rng_state(resume_ckpt["rng"])
        start_epoch, best = resume_ckpt["epoch"] + 1, resume_ckpt["best_val_acc"]
        _truncate_metrics(out / "metrics.jsonl", resume_ckpt["epoch"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
    _write_json(out / "config.json", {
        **asdict(config), "args": args, "optim": optim, "store_fingerprint": stores.primary_fingerprint,
        "store_roles": stores.describe(),
        "questions": coverage,
    })

    loader_kw = {"batch_size": config.batch_size, "collate_fn": collate, "num_workers": config.workers}
    if config.workers:
        loader_kw.update(persistent_workers=False, prefetch_factor=4)
    val_loader = DataLoader(val_ds, shuffle=False, **loader_kw)
    metrics: dict[str, Any] = {}
    reporter.start(steps_per_epoch * (config.epochs - start_epoch), f"{config.method} on {stores.primary_path.name}")
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        train_loader = DataLoader(train_ds, shuffle=True, generator=gen, **loader_kw)
        model.train()
        losses: list[float] = []
        sums: dict[str, float] = {}
        for step, batch in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            batch = to_device(batch, config.device)
            batch["train_step"] = TrainStep(epoch * steps_per_epoch + step, total)
            with _autocast(config.device, config.amp):
                loss, logs = method.loss(model, batch, args)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(logs["loss"])
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            reporter.advance(1, {**logs, "epoch": epoch})
        val_stats: dict[str, float] = {}
        preds = predict(model, config.method, val_loader, config.device, config.amp, val_stats)
        if scorer is None:
            scores = score_predictions(preds)
            official = {k: {"prediction": p["prediction"], "answer": p["answer"]} for k, p in preds.items()}
        else:
            scores, official = score_validation(scorer, val_refs, config.val_split, preds, train_ds.answer_vocab)
        val_acc = scores["Acc"] if scores["Acc"] is not None else 0.0
        improved = val_acc > best
        best = max(best, val_acc)
        metrics = {
            "epoch": epoch, "train_loss": sum(losses) / max(1, len(losses)), "losses": losses,
            **{f"train_{k}": v / max(1, len(losses)) for k, v in sums.items() if k != "loss"},
            "val_acc": val_acc, "val_loss": val_stats.get("loss"), "val": scores, "lr": scheduler.get_last_lr()[0],
            "best_val_acc": best,
            "seconds": time.perf_counter() - t0,
        }
        _write_json(out / "predictions" / "val-last.json", official)
        if improved:
            _write_json(out / "predictions" / "val.json", official)
        with (out / "metrics.jsonl").open("a") as f:  # before the checkpoint: resume truncates
            f.write(json.dumps(metrics) + "\n")
        write_curves(out / "metrics.jsonl", out / "curves.png", title=f"{config.method} on {stores.primary_path.name}")
        ckpt = {
            "format": CHECKPOINT_FORMAT, "method": config.method, "model_args": args, "dims": dims,
            "answer_vocab": train_ds.answer_vocab, "store_fingerprint": stores.primary_fingerprint,
            "store_spec": stores.primary_spec.to_dict(),
            "store_fingerprints": dict(stores.fingerprints),
            "store_paths": {r: str(p) for r, p in stores.paths.items()}, "store_specs": store_specs,
            "questions_digest": digests, "dataset": stores.dataset, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": None,
            "rng": _rng_state(), "best_val_acc": best, "config": asdict(config),
        }
        _atomic_save(ckpt, ckpt_dir / "last.pt")
        if improved:
            _atomic_save(ckpt, ckpt_dir / "best.pt")
        reporter.message(
            f"epoch {epoch}: train loss {metrics['train_loss']:.4f}  val acc {val_acc:.2f}  (best {best:.2f})"
        )
        if config.stop_after and epoch + 1 - start_epoch >= config.stop_after:
            break
    reporter.finish()
    return metrics


class InMemory(torch.utils.data.Dataset):
    """A dataset's samples read once into a list (keeps ``answer_vocab`` and ``fingerprint``)."""

    def __init__(self, ds: QADataset) -> None:
        self.items = [ds[i] for i in range(len(ds))]
        self.answer_vocab, self.fingerprint = ds.answer_vocab, ds.fingerprint

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep the metric lines of epochs up to the checkpoint's (a crash may have left more)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= last_epoch]
    path.write_text("".join(ln + "\n" for ln in lines))
