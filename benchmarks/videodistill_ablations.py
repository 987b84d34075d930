"""VideoDistill's Table 4 rows on the synthetic temporal set (issue 16).

    uv run python benchmarks/videodistill_ablations.py [--clips 300] [--epochs 8] [--seeds 2] [--rows a,b,c,d,e,f]
        [--mc-head cosine|vtm] [--signal]

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
selection hit rate (a selected frame is a key frame) of the videodistill rows, and each run's test
accuracy after every epoch (when a run "takes off": the hard top-K's sampler and head must find
the key frames together, and the epoch at which they do varies with the seed). Last line JSON.

``--signal``: before training, for each videodistill row and seed, the gradient the answer loss
sends to the sampler's logits at initialisation (first 64 training questions, summed over slots
and, with VTM, over the candidate passes): ``key push`` = (mean over other frames - mean over key
frames) / mean |gradient|, > 0 when a step raises the key frames' logits. With the cosine head
the candidates' text meets the video vector, so the gradient on the picked patches points at the
answer's concept and the key frames are pushed up from step 0; with the VTM head every pass ends
in one candidate's matching score, and while the model cannot yet match (at initialisation) the
cross-entropy's gradients over the C passes cancel (they sum to zero), so the sampler gets no
consistent signal and can only learn once the matching does (issue 16).
The default 8 epochs are short for the hard top-K rows (a seed may take off only as the lr
reaches 0); ``--epochs 16`` lets every seed converge (docs/videodistill.md, 2026-12-06).
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
from vqacache.heads.batch import collate
from vqacache.heads.data import QADataset
from vqacache.heads.methods import get_method
from vqacache.heads.methods.common import answer_loss
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


def key_push(store: Path, args: dict, seed: int, n: int = 64) -> float:
    """(mean gradient on the other frames' sampler logits - on the key frames') / mean |gradient|, at
    initialisation, for videodistill with ``args`` (its defaults filled in) on the first ``n`` training
    questions; > 0: gradient descent raises the key frames' logits."""
    method = get_method("videodistill")
    ds = QADataset(store, "train", num_frames=args["num_frames"], patch_frames="all", training=True)
    batch = collate([ds[i] for i in range(min(n, len(ds)))])
    keys = key_frames(store, "train")
    torch.manual_seed(seed)
    model = method.build({**method.defaults, **args}, ds.dims())
    seen: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, inputs: tuple, logits: torch.Tensor) -> None:  # (B or B*C, K, N)
        logits.retain_grad()
        seen["logits"] = logits

    model.sampler.register_forward_hook(keep)
    answer_loss(model(batch)["logits"], batch["answer"]).backward()
    B, N = len(batch["qid"]), args["num_frames"]
    grad = seen["logits"].grad.view(B, -1, N).sum(1)  # (B, N): summed over slots (and candidate passes)
    is_key = torch.zeros(B, N, dtype=torch.bool)
    for i, qid in enumerate(batch["qid"]):
        is_key[i, sorted(keys[qid])] = True
    return float((grad[~is_key].mean() - grad[is_key].mean()) / grad.abs().mean())


def curve(run: Path) -> list[float]:
    """The run's test accuracy after each epoch (its metrics.jsonl)."""
    return [json.loads(line)["val_acc"] for line in (run / "metrics.jsonl").read_text().splitlines() if line]


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
    p.add_argument("--signal", action="store_true", help="print the sampler's key-frame gradient at initialisation")
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
    curves: dict[str, list[list[float]]] = {r: [] for r in rows}
    pushes: dict[str, list[float]] = {r: [] for r in rows}
    for row in rows:
        method, extra, what = ROWS[row]
        args = {**common, **extra, **({"mc_head": a.mc_head} if method == "videodistill" else {})}
        if a.signal and method == "videodistill":
            pushes[row] = [key_push(store, args, a.seed + s) for s in range(a.seeds)]
            print(f"({row}) {what}: key push at initialisation {', '.join(f'{x:+.3f}' for x in pushes[row])}", flush=True)
        for s in range(a.seeds):
            t = time.perf_counter()
            run = out / f"{row}-{a.seed + s}"
            m = train(TrainConfig(method=method, store=str(store), out=str(run), epochs=a.epochs,
                                  batch_size=a.batch_size, lr=a.lr, seed=a.seed + s, val_split="test",
                                  in_memory=True, device=a.device, args=args))
            acc[row].append(m["val_acc"])
            curves[row].append(curve(run))
            if method == "videodistill":
                hits[row].append(hit_rate(run, store, keys))
            print(f"({row}) {what} seed {a.seed + s}: test acc {m['val_acc']:.1f}%  "
                  f"(by epoch: {' '.join(f'{x:.0f}' for x in curves[row][-1])}; {time.perf_counter() - t:.0f} s)", flush=True)
    summary = {r: mean_se(v) for r, v in acc.items()}
    for r, (mu, se) in summary.items():
        hit = f"  hit rate {mean_se(hits[r])[0]:.3f}" if hits[r] else ""
        print(f"({r}) {ROWS[r][2]:>30}: {mu:5.1f} +- {se:4.1f} % over {len(acc[r])} seeds{hit}")
    print(json.dumps({
        **{f"{r}_acc": summary[r][0] for r in summary}, **{f"{r}_acc_se": summary[r][1] for r in summary},
        **{f"{r}_accs": acc[r] for r in acc}, **{f"{r}_hit_rate": mean_se(hits[r])[0] for r in hits if hits[r]},
        **{f"{r}_curves": curves[r] for r in curves}, **{f"{r}_key_push": pushes[r] for r in pushes if pushes[r]},
        "k_over_n": a.select / a.frames, "mc_head": a.mc_head, "seeds": a.seeds, "epochs": a.epochs,
        "minutes": (time.perf_counter() - t0) / 60,
    }))


if __name__ == "__main__":
    main()
