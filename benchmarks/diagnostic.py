"""Diagnostic: do frame selection and SpARC help where the answer sits in one or two frames?

    uv run python benchmarks/diagnostic.py [--clips 300] [--epochs 8] [--seeds 3] [--teacher-noise 0.1]

Writes a synthetic temporal VideoQA store (vqacache.heads.synthetic: N=32 frames per clip,
the answer shown only on the question's 1-2 key frames among distractors; a synthetic
image-QA teacher with configurable noise, labelled synthetic in the store's spec; the teacher
scores all 32 frames, so the model's frames are the teacher's as SpARC's A.3 asks), and
trains, with the same budget (epochs, batch, lr, widths) and each of ``--seeds`` training
seeds on that one store: uniform, videodistill, sparc(videodistill), hga and sparc(hga)
(``--rows`` picks a subset). A SpARC row uses its backbone's optimiser, weight decay and
warm-up (videodistill: AdamW, 1e-3, 10%; hga: Adam, 0, none), so the gain is SpARC's alone.
Prints each row's test accuracy (last epoch, no selection on the test split) as the mean over
seeds with its standard error (std / sqrt(seeds)), the sampler's hit rate (share of test
questions where a selected frame is a key frame; videodistill and sparc(videodistill)) against
uniform's and K/N, and SpARC's gain over each backbone with the standard error of the
difference of the two means. Last line JSON (accuracies in percent).

The learning rate is 1e-3 (heads trained from scratch on a tiny problem), not the paper's
3e-5 / 1e-4 (fine-tuning, or HGA on NExT-QA's features over 60 epochs).

VLAP (issue 12): runs ``benchmarks/vlap_diagnostic.py`` (see its docstring).

    uv run python benchmarks/diagnostic.py --method siasamrea [options of siasamrea_diagnostic.py]

SiaSamRea (issue 13): runs ``benchmarks/siasamrea_diagnostic.py`` (see its docstring).

    uv run python benchmarks/diagnostic.py --method mcg [options of mcg_diagnostic.py]

MCG (issue 14): runs ``benchmarks/mcg_diagnostic.py`` (see its docstring).

    uv run python benchmarks/diagnostic.py --method videodistill-ablations [options of videodistill_ablations.py]

VideoDistill's Table 4 rows (issue 16): runs ``benchmarks/videodistill_ablations.py``.
"""

from __future__ import annotations

import argparse
import json
import math
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




ROWS = {
    "uniform": ("uniform", {}, "uniform"),
    "videodistill": ("videodistill", {"mc_head": "cosine"}, "videodistill"),
    "sparc(videodistill)": ("sparc", {"backbone": "videodistill"}, "videodistill"),  # its backbone: the cosine head
    "hga": ("hga", {}, "hga"),
    "sparc(hga)": ("sparc", {"backbone": "hga"}, "hga"),
    "videodistill(vtm)": ("videodistill", {"mc_head": "vtm"}, "videodistill"),
}
"""Row -> (method, its extra arguments, the backbone whose optimiser settings it uses).

``videodistill`` and ``sparc(videodistill)`` both use the cosine multiple-choice head, so
SpARC's gain over its backbone is SpARC's alone (sparc's videodistill backbone has always been
cosine; until 2026-12-06 the ``videodistill`` row took the method's default VTM head, which
from scratch stays near chance here: docs/videodistill.md). ``videodistill(vtm)``, the paper's
head, is not in the default rows."""

DEFAULT_ROWS = [r for r in ROWS if r != "videodistill(vtm)"]


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error std/sqrt(n) with the n-1 std; 0 for a single value)."""
    n = len(values)
    mu = sum(values) / n
    if n < 2:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


SCRIPTS = {"vlap": "vlap_diagnostic", "siasamrea": "siasamrea_diagnostic", "mcg": "mcg_diagnostic",
           "videodistill-ablations": "videodistill_ablations"}
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
                   help="selection: uniform / videodistill / hga and sparc over both (default); "
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
    p.add_argument("--seed", type=int, default=0, help="the store's seed; training seeds are seed, seed+1, ...")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per row (standard errors need >= 2)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated subset of {', '.join(ROWS)} "
                   f"(default: {', '.join(DEFAULT_ROWS)})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: shared machines)")
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = [r for r in a.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or a.seeds < 1:
        p.error(f"--rows: unknown {', '.join(unknown)}; valid: {', '.join(ROWS)}" if unknown else "--seeds must be >= 1")
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
    # the synthetic CLS vectors carry only the marker, the content is in the patches: HGA reads both
    hga_args = {"num_frames": a.frames, "hga_hidden": a.dim, "fusion_rank": a.dim, "appearance": "cls+patch"}
    acc: dict[str, list[float]] = {r: [] for r in rows}
    hits: dict[str, list[float]] = {r: [] for r in rows}
    for name in rows:
        method, args, backbone = ROWS[name]
        optim = get_method(backbone).optim
        for s in range(a.seeds):
            t = time.perf_counter()
            seed = a.seed + s
            m = train(TrainConfig(
                method=method, store=str(store), out=str(out / f"{name}-{seed}"), epochs=a.epochs,
                batch_size=a.batch_size, lr=a.lr, seed=seed, val_split="test", in_memory=True, device=a.device,
                optimizer=optim.get("optimizer", "adamw"), weight_decay=optim["weight_decay"], warmup=optim["warmup"],
                args={**(hga_args if backbone == "hga" else common), **args}))
            acc[name].append(m["val_acc"])
            if backbone == "videodistill":
                hits[name].append(hit_rate(out / f"{name}-{seed}", store, keys))
            print(f"{name} seed {seed}: test acc {m['val_acc']:.1f}%  ({time.perf_counter() - t:.0f} s)", flush=True)
    # uniform's hit rate: its K uniform positions over the 32 frames
    uni_pos = set(torch.linspace(0, a.frames - 1, a.select).round().long().tolist())
    uniform_hit = sum(bool(k & uni_pos) for k in keys.values()) / len(keys)
    summary = {name: mean_se(v) for name, v in acc.items()}
    for name, (mu, se) in summary.items():
        hit = f"  hit rate {mean_se(hits[name])[0]:.3f}" if hits[name] else ""
        print(f"{name:>20}: {mu:5.1f} +- {se:4.1f} % over {len(acc[name])} seeds{hit}")
    print(f"uniform hit rate {uniform_hit:.3f}, K/N {a.select / a.frames:.3f}")
    gains = {}
    for sparc_row, base in (("sparc(videodistill)", "videodistill"), ("sparc(hga)", "hga")):
        if sparc_row in summary and base in summary:
            (m1, s1), (m0, s0) = summary[sparc_row], summary[base]
            gains[base] = (m1 - m0, math.sqrt(s1 ** 2 + s0 ** 2))
            print(f"SpARC gain over {base}: {m1 - m0:+.1f} +- {gains[base][1]:.1f} points")
    print(json.dumps({
        **{f"{n}_acc": summary[n][0] for n in summary}, **{f"{n}_acc_se": summary[n][1] for n in summary},
        **{f"{n}_accs": acc[n] for n in acc},
        **{f"sparc_gain_over_{b}": g[0] for b, g in gains.items()}, **{f"sparc_gain_over_{b}_se": g[1] for b, g in gains.items()},
        **{f"{n}_hit_rate": mean_se(hits[n])[0] for n in hits if hits[n]}, "uniform_hit_rate": uniform_hit,
        "k_over_n": a.select / a.frames, "teacher_noise": a.teacher_noise, "seeds": a.seeds, "epochs": a.epochs,
        "minutes": (time.perf_counter() - t0) / 60,
    }))


if __name__ == "__main__":
    main()
