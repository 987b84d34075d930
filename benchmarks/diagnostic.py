"""Diagnostic: do frame selection and SpARC help where the answer sits in one or two frames?

    uv run python benchmarks/diagnostic.py [--clips 300] [--epochs 8] [--teacher-noise 0.1]

Writes a synthetic temporal VideoQA store (vqacache.heads.synthetic: N=32 frames per clip,
the answer shown only on the question's 1-2 key frames among distractors; a synthetic
image-QA teacher with configurable noise, labelled synthetic in the store's spec), trains
uniform, videodistill and sparc (backbone videodistill) with the same budget (epochs, batch,
lr, widths), and prints test accuracy (last epoch, no selection on the test split), the
sampler's hit rate (share of test questions where a selected frame is a key frame) against
uniform's and against K/N, and the SpARC gain. Last line JSON.

The learning rate is 1e-3 (heads trained from scratch on a tiny problem), not the paper's
3e-5 (fine-tuning a pre-trained model).

    uv run python benchmarks/diagnostic.py --method vlap [options of vlap_diagnostic.py]

VLAP (issue 12): runs ``benchmarks/vlap_diagnostic.py`` (see its docstring).

    uv run python benchmarks/diagnostic.py --method siasamrea [options of siasamrea_diagnostic.py]

SiaSamRea (issue 13): runs ``benchmarks/siasamrea_diagnostic.py`` (see its docstring).

    uv run python benchmarks/diagnostic.py --method mcg [options of mcg_diagnostic.py]

MCG (issue 14): runs ``benchmarks/mcg_diagnostic.py`` (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vqacache.cache_spec import open_store
from vqacache.heads.data import QADataset, collate
from vqacache.heads.methods import get_method
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, load_checkpoint, train


def key_frames(store_path: Path, split: str) -> dict[str, set[int]]:
    root = open_store(store_path).root
    return {e["qid"]: set(e["key_frames"]) for _, g in root[f"questions/{split}"].groups() for e in g.attrs["entries"]}


@torch.no_grad()
def hit_rate(run: Path, store: Path, keys: dict[str, set[int]]) -> float:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    method = get_method(ckpt["method"])
    model = method.build(ckpt["model_args"], ckpt["dims"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    ds = QADataset(store, "test", num_frames=ckpt["model_args"]["num_frames"], patch_frames="all")
    hits = n = 0
    for batch in DataLoader(ds, batch_size=64, collate_fn=collate):
        index = model(batch)["index"]  # (B, K) frame indices among the N (= all 32 frames here)
        for qid, row in zip(batch["qid"], index.tolist()):
            hits += bool(keys[qid] & set(row))
            n += 1
    return hits / n




SCRIPTS = {"vlap": "vlap_diagnostic", "siasamrea": "siasamrea_diagnostic", "mcg": "mcg_diagnostic"}
"""``--method NAME`` -> the module in benchmarks/ that holds that method's diagnostic (its own options)."""


def _script_argv(argv: list[str]) -> tuple[str, list[str]] | None:
    """(method, the other options) when ``--method`` names one of :data:`SCRIPTS`, else None."""
    for i, x in enumerate(argv):
        name = x.removeprefix("--method=") if x.startswith("--method=") else None
        if name in SCRIPTS:
            return name, argv[:i] + argv[i + 1:]
        if x == "--method" and argv[i + 1:i + 2] and argv[i + 1] in SCRIPTS:
            return argv[i + 1], argv[:i] + argv[i + 2:]
    return None


def main() -> None:
    found = _script_argv(sys.argv[1:])
    if found is not None:  # that method's own diagnostic script, with its options and defaults
        import importlib

        method, rest = found
        sys.argv = [f"{SCRIPTS[method]}.py", *rest]
        importlib.import_module(SCRIPTS[method]).main()
        return
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=("selection", *SCRIPTS), default="selection",
                   help="selection: uniform / videodistill / sparc (default); "
                        + ", ".join(f"{m}: benchmarks/{s}.py (its own options)" for m, s in SCRIPTS.items()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--select", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--teacher-noise", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    a = p.parse_args()
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    out = Path(a.out or tmp.name)
    store = out / "synthetic.zarr"
    if not store.exists():
        make_temporal_store(store, {"train": a.clips, "test": a.test_clips}, n_frames=a.frames,
                            teacher_noise=a.teacher_noise, seed=a.seed)
    print(f"store written ({a.clips} train / {a.test_clips} test clips, 2 questions each) in {time.perf_counter() - t0:.0f} s")
    keys = key_frames(store, "test")
    common = {"num_frames": a.frames, "num_select": a.select, "num_layers": 2, "num_heads": 4, "dim": a.dim}
    runs = {"uniform": ("uniform", {}), "videodistill": ("videodistill", {}),
            "sparc": ("sparc", {"backbone": "videodistill"})}
    acc, hits = {}, {}
    for name, (method, extra) in runs.items():
        t = time.perf_counter()
        m = train(TrainConfig(method=method, store=str(store), out=str(out / name), epochs=a.epochs,
                              batch_size=a.batch_size, lr=a.lr, seed=a.seed, val_split="test", in_memory=True,
                              args={**common, **extra}))
        acc[name] = m["val_acc"]
        hits[name] = hit_rate(out / name, store, keys) if name != "uniform" else None
        print(f"{name}: test acc {acc[name]:.1f}%  ({time.perf_counter() - t:.0f} s)")
    # uniform's hit rate: its K uniform positions over the 32 frames
    uni_pos = set(torch.linspace(0, a.frames - 1, a.select).round().long().tolist())
    hits["uniform"] = sum(bool(k & uni_pos) for k in keys.values()) / len(keys)
    print(f"hit rate: videodistill {hits['videodistill']:.3f}, sparc {hits['sparc']:.3f}, uniform "
          f"{hits['uniform']:.3f}, K/N {a.select / a.frames:.3f}")
    print(f"videodistill - uniform: {acc['videodistill'] - acc['uniform']:+.1f} points; "
          f"SpARC gain over its backbone: {acc['sparc'] - acc['videodistill']:+.1f} points")
    print(json.dumps({
        "uniform_acc": acc["uniform"], "videodistill_acc": acc["videodistill"], "sparc_acc": acc["sparc"],
        "sampler_hit_rate": hits["videodistill"], "sparc_hit_rate": hits["sparc"], "uniform_hit_rate": hits["uniform"],
        "k_over_n": a.select / a.frames, "teacher_noise": a.teacher_noise, "minutes": (time.perf_counter() - t0) / 60,
    }))


if __name__ == "__main__":
    main()
