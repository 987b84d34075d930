"""A head checkpoint: what it holds (:class:`Checkpoint`), how it is written and read.

A checkpoint describes itself under named keys (the fields of :class:`Checkpoint`):
``method``, ``model_args``, ``dims``, ``answer_vocab``, ``store_fingerprints`` (role ->
fingerprint of every store read), ``store_paths``, ``store_specs`` (role -> spec),
``store_fingerprint`` and ``store_spec`` (the primary store's), ``questions_digest`` (split
-> digest of the qids used), ``dataset``, ``epoch`` (the last finished), ``step`` (optimiser
steps done over the run), ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng``
(torch, cuda, numpy, python), ``best_val_acc``, ``config``.

Loading never runs code: a checkpoint holds only tensors and plain data (dicts, lists,
tuples, str, int, float, bool, None; the numpy and Python RNG states as int64 tensors), is
checked to be so before it is written (:func:`check_plain`), written to a temporary name
and renamed (a reader never sees half a file), and read with
``torch.load(weights_only=True)``. A file holding anything else (a crafted pickle, a
checkpoint of another program) is refused by :func:`load_checkpoint` with one line, before
any of its objects is built.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.safe_load import load_error_reason
from vqacache.heads.stores import ROLES

CHECKPOINT_FORMAT = 2
"""2: RNG states as tensors (plain data, loadable with ``weights_only=True``); 1 pickled numpy arrays."""

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


@dataclass
class Checkpoint:
    """Everything a resumed run or an evaluation needs; see the module doc for each field."""

    method: str
    model_args: dict[str, Any]
    dims: dict[str, int]
    answer_vocab: list[str] | None
    store_fingerprint: str
    store_spec: dict[str, Any]
    store_fingerprints: dict[str, str]
    store_paths: dict[str, str]
    store_specs: dict[str, dict[str, Any]]
    questions_digest: dict[str, str]
    dataset: str
    epoch: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    best_val_acc: float
    config: dict[str, Any]
    step: int = 0
    scaler: Any = None
    format: int = CHECKPOINT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        """From a loaded checkpoint (older ones: no ``step``, one store's fingerprint for every role)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw.setdefault("store_fingerprints", checkpoint_fingerprints(d))
        kw.setdefault("store_paths", {})
        kw.setdefault("store_specs", {})
        kw.setdefault("questions_digest", {})
        kw.setdefault("dataset", "")
        kw.setdefault("store_spec", {})
        return cls(**kw)

    def save(self, path: Path) -> None:
        atomic_save(self.to_dict(), path)


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


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename (plain data only)."""
    check_plain(obj)  # a checkpoint must load with weights_only=True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """JSON to a temporary name beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A head checkpoint as a dict, read with ``weights_only=True``: a file holding anything but
    tensors and plain data is refused (one-line :class:`UsageError`) before any object is built.
    ``Checkpoint.from_dict(load_checkpoint(path))`` gives the typed record."""
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


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
