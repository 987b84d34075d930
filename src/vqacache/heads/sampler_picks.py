"""Which frames a trained run's model picks for one question, recomputed from its checkpoint.

Training runs do not record the picks (they change every step); :func:`sampler_picks`
recomputes them for one question of a store the way evaluation would see them: it reads the
run's checkpoint (``checkpoints/best.pt``, else ``last.pt``; ``torch.load(weights_only=True)``
through :func:`~vqacache.heads.checkpoint.load_checkpoint`), builds the model through the
method registry with the checkpoint's arguments, builds the question's batch with
:class:`~vqacache.heads.data.QADataset` (evaluation mode: no random draws) on the store, runs
the forward pass in eval mode under ``no_grad`` and maps each picked position among the
batch's frames to the store's frame row and time.

Per method (:data:`PICKERS`, a registry by method name):

* ``videodistill``: the Gumbel top-K, the forward output ``index`` (1, K): positions among the
  N frames the dataset read (with the VTM head: the pass of the best-scoring candidate);
* ``vlap``: the forward output ``index`` (1, K): with a Frame-Prompter recipe the frame the
  Prompter chose in each of the K segments (positions among the T segment frames); ``distill``
  takes the segments' middle frames; ``uniform`` and ``teacher`` have no sampler (noted);
* ``sparc``: the causal set ``V_c`` of the training step (``sparc_terms``, which calls
  :func:`~vqacache.heads.methods.sparc.causal_set` with the stored teacher probabilities of the
  batch's frames, the question's answer and the run's ``threshold``), and, with a
  ``videodistill`` backbone, that backbone's top-K of the whole-video prediction.

Other methods have no sampler; the result says so in ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import SpecMismatch, UsageError
from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.cache_spec.store import FeatureStore
from vqacache.heads.checkpoint import load_checkpoint
from vqacache.heads.data import QADataset, collate, segment_positions
from vqacache.heads.methods import get_method
from vqacache.heads.train import checkpoint_dataset

CHECKPOINTS = ("best.pt", "last.pt")


@dataclass(frozen=True)
class PositionPick:
    """Picked positions (k,) among the batch's frames, with what picked them."""

    label: str
    positions: np.ndarray


@dataclass(frozen=True)
class FramePick:
    """One kind of pick mapped to the store: ``rows`` (k,) frame rows of the video, ``pts`` (k,)
    their times (seconds, the store's), ``positions`` (k,) among the model's frames."""

    label: str
    rows: np.ndarray
    pts: np.ndarray
    positions: np.ndarray


@dataclass
class SamplerPicks:
    """The picks of one run for one question. ``frame_rows`` (n,): the store rows of the frames
    the model read, in the batch's order (position i is row ``frame_rows[i]``)."""

    method: str
    checkpoint: Path
    qid: str
    video_id: str
    frame_rows: np.ndarray
    picks: list[FramePick] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Picker = Callable[[nn.Module, dict[str, Any], dict[str, Any]], tuple[list[PositionPick], list[str]]]


def _row(index: Tensor) -> np.ndarray:
    return index[0].detach().cpu().numpy().astype(np.int64)  # (K,) the question's row of a (1, K) output


def _videodistill(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[list[PositionPick], list[str]]:
    out = model(batch)
    label = "VideoDistill top-K"
    if out.get("index_per_candidate") is not None:
        label += " (best candidate's pass)"
    return [PositionPick(label, _row(out["index"]))], []


def _vlap(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[list[PositionPick], list[str]]:
    from vqacache.heads.methods.vlap import PROMPTER_RECIPES, TAU_END

    recipe = args["recipe"]
    if recipe in ("uniform", "teacher"):
        return [], [f"vlap recipe {recipe}: no frame sampler (the model reads the frames the data gives)"]
    out = model(batch, TAU_END, with_teacher=False)
    label = "VLAP Prompter: one per segment" if recipe in PROMPTER_RECIPES else "VLAP segment middles"
    return [PositionPick(label, _row(out["index"]))], []


def _sparc(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[list[PositionPick], list[str]]:
    from vqacache.heads.methods.sparc import sparc_terms

    notes = []
    picks: list[PositionPick] = []
    if "imageqa" not in batch or not bool(batch["has_imageqa"].all()):
        notes.append("SpARC's causal set needs the teacher's probabilities; this store has none for the question")
    elif int(batch["answer"][0]) < 0:
        notes.append("SpARC's causal set needs a labelled answer")
    else:
        j = torch.zeros(1, dtype=torch.long)  # the single-frame term's draw; unused here
        causal = sparc_terms(model, batch, args, j=j, mixup=False).causal  # (1, N) bool: V_c of training
        label = f"SpARC causal set (p(answer) > {float(args['threshold']):g})"
        picks.append(PositionPick(label, np.flatnonzero(causal[0].cpu().numpy())))
    backbone = args.get("backbone")
    if backbone in PICKERS and backbone != "sparc":
        more, more_notes = PICKERS[backbone](model, batch, args)
        picks += [PositionPick(f"{p.label} (the SpARC model's {backbone} backbone)", p.positions) for p in more]
        notes += more_notes
    return picks, notes


PICKERS: dict[str, Picker] = {"videodistill": _videodistill, "vlap": _vlap, "sparc": _sparc}
"""Method name -> (model, one question's batch, the run's model arguments) -> (picks, notes)."""


def run_checkpoint(run_dir: Path) -> Path:
    """The run's ``checkpoints/best.pt``, else ``last.pt``; a one-line :class:`UsageError` naming
    ``--run`` when neither exists."""
    for name in CHECKPOINTS:
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            return path
    raise UsageError(f"--run {run_dir}: no checkpoints/best.pt or checkpoints/last.pt (a vqa-train-head --out folder)")


def frame_rows(ds: QADataset, i: int) -> np.ndarray:
    """The ``cls`` store rows (n,) of the frames ``ds[i]`` reads, in its order (evaluation mode:
    segments at their midpoints). Mirrors :meth:`QADataset.__getitem__`'s choice; checked by
    comparing the sample's ``cls`` with the store's rows, so a change of that rule is an error
    here, never a wrong plot."""
    ref = ds.refs[i]
    arrays, pts = ds._video("cls", ref.video_id)
    usable = ds._candidate_frames(ref.video_id, pts)  # (M,) rows: all, or those with patches
    if ds.patch_frames == "segments":
        inside = usable[frame_indices(pts[usable], len(usable), ref.start, ref.end)]
        rows = inside[segment_positions(len(inside), ds.num_frames, None)]  # (T,) midpoints
    else:
        rows = usable[frame_indices(pts[usable], ds.num_frames, ref.start, ref.end)]  # (n,)
    stored = np.asarray(ds.store.video_arrays(ref.video_id)["cls"][:], dtype=np.float32)[rows]  # (n, E)
    if not np.array_equal(stored, ds[i]["cls"].numpy()):
        raise SpecMismatch(f"question {ref.qid}: cannot tell which stored frames the dataset read "
                           "(its frame rule changed); the picks would land on the wrong frames")
    return rows


def sampler_picks(store: FeatureStore, qid: str, run_dir: Path, config: dict[str, Any] | None = None) -> SamplerPicks:
    """Recompute the picks of the run in ``run_dir`` for question ``qid`` of ``store`` (see the
    module docstring). ``config``: the run's config.json (its ``stores`` give the other roles)."""
    path = run_checkpoint(run_dir)
    ckpt = load_checkpoint(path)
    method = str(ckpt["method"])
    q = store.read_question(qid)
    result = SamplerPicks(method, path, qid, q.video_id, np.zeros(0, np.int64))
    picker = PICKERS.get(method)
    if picker is None:
        result.notes.append(f"run {method}: no frame sampler to show (methods with one: {', '.join(sorted(PICKERS))})")
        return result
    roles = dict((config or {}).get("stores") or {})
    ds = checkpoint_dataset(ckpt, store.path, q.split, stores=roles or None)
    i = next((k for k, r in enumerate(ds.refs) if r.qid == qid), None)
    if i is None:
        raise UsageError(f"--question {qid!r}: the run's inputs for it are not all in {store.path}")
    result.frame_rows = frame_rows(ds, i)
    model = get_method(method).build(ckpt["model_args"], ckpt["dims"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        positions, result.notes = picker(model, collate([ds[i]]), ckpt["model_args"])
    pts = np.asarray(store.video_arrays(q.video_id)["pts"][:], dtype=np.float64)
    for p in positions:
        rows = result.frame_rows[p.positions]
        result.picks.append(FramePick(p.label, rows, pts[rows], p.positions))
    return result
