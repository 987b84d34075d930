"""Diagnostic for MCG (issue 14): does a generative answer decoder compose held-out answers,
and does token-level contrast help when the answer sits in one small patch?

    uv run python benchmarks/mcg_diagnostic.py [--clips 240] [--epochs 40] [--object-patches 1]

Writes a synthetic open-ended store (``encoder="synthetic"``; ``--frames`` 8 frames of
``--patches`` 16 tokens, width 32): every clip shows one object of a colour and a shape; the
object's patches carry colour vector + shape vector (+ noise), the others noise only; the
question is "what is the object?" and the answer two words, "<colour> <shape>". 20% of the
colour-shape combinations never appear in training (``test`` split: only those; ``val``: seen
combinations). Arms, same budget (epochs, batch, lr, tiny random text parts, seed):

* ``classifier``: MCG-CH (Linear on [FUS]) with the LM-free objective;
* ``generator``: LM loss only;
* ``icl``: generator + ICL; ``mcg``: generator + ICL + TCL
  (contrast text "question answer", the caption-like pairs a pre-stage sees);
* control: ``icl`` and ``mcg`` again with the object filling every patch.

Held-out accuracy: exact match of the decoded answer (the classifier can only name a trained
answer, so it scores 0 there by construction). VTM is off in every arm (one question per clip:
matching would only learn video identity). Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diagnostic import mean_se  # benchmarks/diagnostic.py (this folder is on sys.path when run as a script)

from vqacache.cache_spec import open_store
from vqacache.heads.data import QADataset, collate
from vqacache.heads.methods import mcg
from vqacache.heads.stores import StoreSet

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross"]
GENERATOR = "benchmarks/mcg_diagnostic/objects-v1"


def make_object_store(path: Path, clips: int, frames: int, patches: int, dim: int, object_patches: int,
                      heldout: float, noise: float, seed: int) -> dict[str, str]:
    """Write the store; returns {qid: answer text} over every split."""
    from vqacache.heads.synthetic import synthetic_spec

    params = {"n_frames": frames, "n_patches": patches, "dim": dim, "object_patches": object_patches,
              "heldout": heldout, "noise": noise, "seed": seed, "generator": GENERATOR}
    store = open_store(path, "a", spec=synthetic_spec(**params), dataset="synthetic-objects")
    rng = np.random.default_rng(seed)
    unit = lambda *s: (v := rng.standard_normal(s)) / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    colour_vec, shape_vec = unit(len(COLOURS), dim), unit(len(SHAPES), dim)
    combos = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    order = rng.permutation(len(combos))
    n_held = int(round(heldout * len(combos)))
    held = [combos[i] for i in order[:n_held]]
    seen = [combos[i] for i in order[n_held:]]
    answers: dict[str, str] = {}
    pts = np.arange(frames) / 7.5
    sizes = {"train": clips, "val": max(clips // 4, 8), "test": max(clips // 4, 8)}
    for split, n in sizes.items():
        pool = held if split == "test" else seen
        for k in range(n):
            vid = f"{split}{k:05d}"
            c, s = pool[int(rng.integers(len(pool)))]
            where = rng.choice(patches, size=object_patches, replace=False)
            patch = rng.standard_normal((frames, patches, dim)) * noise
            patch[:, where] += colour_vec[c] + shape_vec[s]
            cls = patch.mean(1)
            with store.write_video(vid, {"source": {"synthetic": GENERATOR}}) as w:
                w.append(cls=cls, patch=patch, pts=pts, src_index=np.arange(frames), is_repeat=np.zeros(frames, bool))
            answer = f"{COLOURS[c]} {SHAPES[s]}"
            qid = f"{vid}_q"
            answers[qid] = answer
            store.write_questions(split, vid, [{
                "qid": qid, "question": "what is the object?", "candidates": [], "answer": answer, "qtype": "object",
                "start": None, "end": None}], {
                "text": np.zeros((1, dim)), "text_tokens": np.zeros((1, 1, dim)), "text_len": np.ones(1, np.int64)})
    return answers


def run_arm(path: Path, answers: dict[str, str], over: dict[str, Any], epochs: int, batch: int, lr: float,
            seed: int) -> dict[str, float]:
    stores = StoreSet(path)
    args = {**mcg.DEFAULTS, "weights": "random", "size": "tiny", "lambda_vtm": 0.0, **over}
    args = {**args, **mcg.prepare(args, stores)}
    data = mcg.data(args)
    train = QADataset(stores, "train", training=False, **data)
    samples = [train[i] for i in range(len(train))]
    torch.manual_seed(seed)
    model = mcg.McgModel(args, train.dims())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(samples), generator=g).tolist()
        for i in range(0, len(perm), batch):
            b = collate([samples[j] for j in perm[i:i + batch]])
            opt.zero_grad()
            mcg.loss(model, b, args)[0].backward()
            opt.step()
    model.eval()
    out = {}
    for split in ("val", "test"):
        ds = QADataset(stores, split, answer_vocab=train.answer_vocab, **data)
        right = 0
        for i in range(0, len(ds), 32):
            b = collate([ds[j] for j in range(i, min(i + 32, len(ds)))])
            with torch.no_grad():
                x = model.adapter(b["patch"]).tokens
                fused, fmask = model.fuse(list(b["question"]), x)
                if model.classifier is not None:
                    said = [model.answer_vocab[k] for k in model.classifier(fused[:, 0]).argmax(1).tolist()]
                else:
                    said = model.generate(fused, fmask)
            right += sum(mcg._norm(t) == answers[q] for t, q in zip(said, b["qid"], strict=True))
        out["seen" if split == "val" else "heldout"] = 100.0 * right / len(ds)
    return out


ARMS = {
    "classifier": {"head": "classifier", "lambda_icl": 0.0, "lambda_tcl": 0.0},
    "generator": {"lambda_icl": 0.0, "lambda_tcl": 0.0},
    "icl": {"lambda_icl": 1.0, "lambda_tcl": 0.0, "contrast_text": "question_answer"},
    "mcg": {"lambda_icl": 1.0, "lambda_tcl": 1.0, "contrast_text": "question_answer"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=240)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--patches", type=int, default=16)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--object-patches", type=int, default=1)
    ap.add_argument("--heldout", type=float, default=0.2)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="seeds seed..seed+N-1, each a new store and a new init")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--text-model", default="blip", choices=["blip", "bert"], help="mcg text_model of every arm")
    ap.add_argument("--response", default="softmax", choices=["softmax", "tanh"], help="mcg response of the TCL arms")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm (1 is fastest on a shared 2-core CPU)")
    ap.add_argument("--jobs", type=int, default=1, help="arms trained at once (processes); results do not depend on it")
    ap.add_argument("--no-control", action="store_true", help="skip the full-frame control arms")
    ap.add_argument("--control-only", action="store_true", help="only the full-frame control arms")
    a = ap.parse_args()
    arms = [x for x in a.arms.split(",") if x]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        ap.error(f"--arms: unknown {', '.join(unknown)}; valid: {', '.join(ARMS)}")
    t0 = time.time()
    torch.set_num_threads(a.threads)
    common = {"num_frames": a.frames, "text_model": a.text_model, "response": a.response}
    runs: list[tuple[str, str, int]] = []  # (result key prefix, arm, object patches)
    if not a.control_only:
        runs += [(name, name, a.object_patches) for name in arms]
    if not a.no_control:
        runs += [(f"control_{name}", name, a.patches) for name in ("icl", "mcg") if name in arms]
    result: dict[str, Any] = {"clips": a.clips, "epochs": a.epochs, "object_patches": a.object_patches,
                              "patches": a.patches, "heldout_fraction": a.heldout, "seeds": a.seeds,
                              "text_model": a.text_model, "response": a.response}
    seeds = list(range(a.seed, a.seed + a.seeds))
    per: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(
            a.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
            initargs=(a.threads,)) as pool:
        futures = {}
        for seed in seeds:  # each seed: its own stores (colours, shapes, held-out combinations) and init
            stores: dict[int, tuple[Path, dict[str, str]]] = {}
            for key, name, obj in runs:
                if obj not in stores:
                    path = Path(tmp) / f"seed{seed}-objects{obj}.zarr"
                    stores[obj] = (path, make_object_store(path, a.clips, a.frames, a.patches, a.dim, obj, a.heldout,
                                                           a.noise, seed))
                path, answers = stores[obj]
                job = pool.submit(run_arm, path, answers, {**ARMS[name], **common}, a.epochs, a.batch_size, a.lr, seed)
                futures[job] = (seed, key)
        for job in as_completed(futures):
            seed, key = futures[job]
            r = job.result()
            per.setdefault(f"{key}_seen_acc", {})[seed] = r["seen"]
            per.setdefault(f"{key}_heldout_acc", {})[seed] = r["heldout"]
            print(f"seed {seed}  {key:>12}  seen {r['seen']:6.2f}  held-out {r['heldout']:6.2f}  "
                  f"({(time.time() - t0) / 60:.1f} min)", flush=True)
    per_list = {k: [v[s] for s in seeds] for k, v in per.items()}
    print(f"\n{'arm':>12}  {'seen (mean ± se)':>18}  {'held-out (mean ± se)':>20}   over {a.seeds} seed(s)")
    for key, _, _ in runs:
        seen, held = mean_se(per_list[f"{key}_seen_acc"]), mean_se(per_list[f"{key}_heldout_acc"])
        print(f"{key:>12}  {seen[0]:8.2f} ± {seen[1]:5.2f}  {held[0]:10.2f} ± {held[1]:5.2f}")
    for k, values in per_list.items():
        result[k], result[f"{k[:-4]}_se"] = (round(v, 2) for v in mean_se(values))
        result[f"{k[:-4]}_per_seed"] = [round(v, 2) for v in values]
    if {"mcg", "icl"} <= set(arms) and not a.control_only:  # TCL's gain: seen + held-out, MCG minus ICL
        result["tcl_gain_small"] = round(result["mcg_heldout_acc"] + result["mcg_seen_acc"] - (
            result["icl_heldout_acc"] + result["icl_seen_acc"]), 2)
    if {"mcg", "icl"} <= set(arms) and not a.no_control:
        result["tcl_gain_control"] = round(result["control_mcg_heldout_acc"] + result["control_mcg_seen_acc"] - (
            result["control_icl_heldout_acc"] + result["control_icl_seen_acc"]), 2)
    result["minutes"] = round((time.time() - t0) / 60, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
