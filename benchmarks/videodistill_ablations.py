"""VideoDistill's Table 4 rows on the synthetic temporal set (issue 16).

    uv run python benchmarks/videodistill_ablations.py [--clips 300] [--epochs 8] [--seeds 2] [--rows a,b,c,d,e,f]

The store is the diagnostic's (:mod:`vqacache.heads.synthetic`: N=32 frames, the answer only on
the question's 1-2 key frames). Rows, as the paper's Table 4 (method and arguments here):

* (a) ``uniform refinement=false``: K uniform frames, a plain transformer fuses text and patches;
* (b) ``uniform``: K uniform frames, vision refinement (no sparse sampling);
* (c) ``videodistill sampling=soft``: the softmax-weighted sum of the N frames, no top-K;
* (d) ``videodistill refinement=false``: sparse sampling, then a plain transformer;
* (e) ``videodistill fusion=cross_attention``: cross-attention in place of every LA-Gate;
* (f) ``videodistill``: the full model.

Every row: the same budget (epochs, batch, lr 1e-3, widths, L=2, 4 heads, K=4), AdamW with
VideoDistill's weight decay and warm-up, each of ``--seeds`` training seeds on the one store.
All rows use the cosine multiple-choice head (uniform has no VTM head), so rows differ only in
the ablated module; ``--mc-head vtm`` gives the videodistill rows the paper's VTM head.
Prints each row's test accuracy (last epoch) as mean +- standard error over seeds and the
selection hit rate (a selected frame is a key frame) of the videodistill rows. Last line JSON.
The paper's numbers come from pre-trained models on real data; this set only shows whether
each module does its job where the answer sits in one or two frames.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from diagnostic import hit_rate, key_frames, mean_se
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, train

ROWS = {
    "a": ("uniform", {"refinement": False}, "uniform + transformer fusion"),
    "b": ("uniform", {}, "uniform + vision refinement"),
    "c": ("videodistill", {"sampling": "soft"}, "soft sampling"),
    "d": ("videodistill", {"refinement": False}, "without vision refinement"),
    "e": ("videodistill", {"fusion": "cross_attention"}, "cross-attention for LA-Gates"),
    "f": ("videodistill", {}, "full VideoDistill"),
}
"""Table 4 row -> (method, its arguments, what it is)."""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--select", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--mc-head", choices=("cosine", "vtm"), default="cosine")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    a = p.parse_args()
    rows = [r for r in a.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or a.seeds < 1:
        p.error(f"--rows: unknown {', '.join(bad)}; valid: {', '.join(ROWS)}" if bad else "--seeds must be >= 1")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    out = Path(a.out or tmp.name)
    store = out / "synthetic.zarr"
    if not store.exists():
        make_temporal_store(store, {"train": a.clips, "test": a.test_clips}, n_frames=a.frames, seed=a.seed)
    keys = key_frames(store, "test")
    common = {"num_frames": a.frames, "num_select": a.select, "num_layers": 2, "num_heads": 4, "dim": a.dim}
    acc: dict[str, list[float]] = {r: [] for r in rows}
    hits: dict[str, list[float]] = {r: [] for r in rows}
    for row in rows:
        method, extra, what = ROWS[row]
        args = {**common, **extra, **({"mc_head": a.mc_head} if method == "videodistill" else {})}
        for s in range(a.seeds):
            t = time.perf_counter()
            run = out / f"{row}-{a.seed + s}"
            m = train(TrainConfig(method=method, store=str(store), out=str(run), epochs=a.epochs,
                                  batch_size=a.batch_size, lr=a.lr, seed=a.seed + s, val_split="test",
                                  in_memory=True, device=a.device, args=args))
            acc[row].append(m["val_acc"])
            if method == "videodistill":
                hits[row].append(hit_rate(run, store, keys))
            print(f"({row}) {what} seed {a.seed + s}: test acc {m['val_acc']:.1f}%  "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
    summary = {r: mean_se(v) for r, v in acc.items()}
    for r, (mu, se) in summary.items():
        hit = f"  hit rate {mean_se(hits[r])[0]:.3f}" if hits[r] else ""
        print(f"({r}) {ROWS[r][2]:>30}: {mu:5.1f} +- {se:4.1f} % over {len(acc[r])} seeds{hit}")
    print(json.dumps({
        **{f"{r}_acc": summary[r][0] for r in summary}, **{f"{r}_acc_se": summary[r][1] for r in summary},
        **{f"{r}_accs": acc[r] for r in acc}, **{f"{r}_hit_rate": mean_se(hits[r])[0] for r in hits if hits[r]},
        "k_over_n": a.select / a.frames, "mc_head": a.mc_head, "seeds": a.seeds, "epochs": a.epochs,
        "minutes": (time.perf_counter() - t0) / 60,
    }))


if __name__ == "__main__":
    main()
