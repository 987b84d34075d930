"""Diagnostic for VLAP (issue 12): does the Frame-Prompter find the key frames, and how do
uniform-4, Prompter-4, Prompter-4 + distiller and the teacher on all T frames compare?

    uv run python benchmarks/vlap_diagnostic.py [--clips 300] [--epochs 8]
    (or benchmarks/diagnostic.py --method vlap ...)

VLAP (issue 12), tiny random parts (``--weights random --method-arg size=tiny``): a store of
T = 32 frames of 1 + 4 tokens where each question's 1-2 key frames show its marker and the
answer's concept and also have their tokens' channel mean shifted by ``--key-shift`` (so a
question-blind Frame-Prompter can find them from the channel means it reads). Same budget
for uniform-4, Prompter-4, Prompter-4 + distiller, teacher-32 and the question-aware
Prompter-4 (this project's extension); each arm's test accuracy (last epoch) and the
Prompter's key-frame hit rate (a selected frame among the question's key frames) against
uniform's and K/T. The negative control (``--decoys``, default 8): as many frames as that get
the same shift without showing any marker, so the shift no longer tells the question's frames
apart and a question-blind Prompter should gain little. The teacher of the distiller arm is
the pretrained (here: random, identical) Q-Former, not a trained teacher run. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqacache.cache_spec import open_store
from vqacache.heads.data import QADataset, collate, segment_positions
from vqacache.heads.methods import get_method
from vqacache.heads.synthetic import synthetic_spec
from vqacache.heads.train import TrainConfig, load_checkpoint, train


def key_frames(store_path: Path, split: str) -> dict[str, set[int]]:
    """qid -> the frames of the clip that show the question's marker."""
    root = open_store(store_path).root
    return {e["qid"]: set(e["key_frames"]) for _, g in root[f"questions/{split}"].groups() for e in g.attrs["entries"]}


def make_vlap_store(path: Path, splits: dict[str, int], n_frames: int = 32, dim: int = 32, n_patches: int = 4,
                    n_markers: int = 2, n_concepts: int = 8, n_candidates: int = 4, noise: float = 0.3,
                    key_shift: float = 1.0, decoys: int = 0, seed: int = 0) -> None:
    """The VLAP diagnostic's synthetic store (see the module docstring); entries record ``key_frames``."""
    params = {"generator": "benchmarks/diagnostic.py:vlap-v1", "n_frames": n_frames, "dim": dim,
              "n_patches": n_patches, "n_markers": n_markers, "n_concepts": n_concepts, "n_candidates": n_candidates,
              "noise": noise, "key_shift": key_shift, "decoys": decoys, "seed": seed}
    store = open_store(path, "a", spec=synthetic_spec(**params), dataset="synthetic-vlap")
    rng = np.random.default_rng(seed)
    unit = lambda *shape: (v := rng.standard_normal(shape)) / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    marker_vec, marker_text = unit(n_markers, dim), unit(n_markers, dim)
    concept_vec, concept_text = unit(n_concepts, dim), unit(n_concepts, dim)
    pts = np.arange(n_frames) / 7.5
    for split, n_clips in splits.items():
        for c in range(n_clips):
            vid = f"{split}{c:05d}"
            concept = rng.integers(n_concepts, size=n_frames)
            order = rng.permutation(n_frames)
            tokens = rng.standard_normal((n_frames, 1 + n_patches, dim)) * noise
            answers, keys, used = [], [], 0
            for m in range(n_markers):
                n_key = int(rng.integers(1, 3))
                frames = np.sort(order[used: used + n_key])
                used += n_key
                answers.append(int(rng.integers(n_concepts)))
                concept[frames] = answers[-1]
                tokens[frames, 0] += marker_vec[m]
                tokens[frames] += key_shift
                keys.append(frames)
            tokens[order[used: used + decoys]] += key_shift  # decoys: shifted, no marker
            tokens[:, 1:] += concept_vec[concept][:, None]
            with store.write_video(vid, {"source": {"synthetic": params["generator"]}}) as w:
                w.append(cls=tokens[:, 0], patch=tokens[:, 1:], pts=pts, src_index=np.arange(n_frames),
                         is_repeat=np.zeros(n_frames, bool))
            entries, text, cand = [], [], []
            for m in range(n_markers):
                wrong = [x for x in rng.permutation(n_concepts) if x != answers[m]][: n_candidates - 1]
                options = [int(o) for o in rng.permutation([answers[m], *wrong])]
                entries.append({"qid": f"{vid}_{m}", "question": f"what is shown with marker {m}?",
                                "candidates": [f"concept {o}" for o in options], "answer": options.index(answers[m]),
                                "qtype": f"marker{m}", "start": None, "end": None,
                                "key_frames": [int(k) for k in keys[m]]})
                text.append(marker_text[m])
                cand.append(concept_text[options])
            Q = len(entries)
            store.write_questions(split, vid, entries, {
                "text": np.stack(text), "text_tokens": np.zeros((Q, 1, dim)), "text_len": np.ones(Q, np.int64),
                "cand": np.stack(cand), "cand_tokens": np.zeros((Q, n_candidates, 1, dim)),
                "cand_len": np.ones((Q, n_candidates), np.int64),
            })


@torch.no_grad()
def vlap_hit_rate(run: Path, store: Path, keys: dict[str, set[int]], clip_frames: int) -> float:
    """Share of test questions with a key frame among the student's frames (index into the T frames)."""
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    method = get_method("vlap")
    model = method.build(ckpt["model_args"], ckpt["dims"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    ds = QADataset(store, "test", **method.data(ckpt["model_args"]))
    frames = segment_positions(clip_frames, ds.num_frames)  # dataset frame -> clip frame
    hits = n = 0
    for batch in DataLoader(ds, batch_size=32, collate_fn=collate):
        index = model(batch, with_teacher=False)["index"]  # (B, K) into the dataset's frames
        for qid, row in zip(batch["qid"], index.tolist()):
            hits += bool(keys[qid] & {int(frames[i]) for i in row})
            n += 1
    return hits / n


def run_vlap(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    out = Path(a.out or tmp.name)
    stores = {"main": out / "vlap.zarr", "control": out / "vlap-decoys.zarr"}
    for name, path in stores.items():
        if not path.exists():
            make_vlap_store(path, {"train": a.clips, "test": a.test_clips}, n_frames=a.frames, key_shift=a.key_shift,
                            decoys=a.decoys if name == "control" else 0, seed=a.seed)
    print(f"stores written ({a.clips} train / {a.test_clips} test clips, 2 questions each) in "
          f"{time.perf_counter() - t0:.0f} s")
    common = {"weights": "random", "size": "tiny", "num_frames": a.frames, "num_select": a.select}
    arms = {
        "uniform": ("main", {"recipe": "uniform"}), "prompter": ("main", {"recipe": "prompter"}),
        "prompter_distill": ("main", {"recipe": "vlap"}), "teacher": ("main", {"recipe": "teacher"}),
        "question_aware": ("main", {"recipe": "vlap", "question_aware": True}),
        "control_uniform": ("control", {"recipe": "uniform"}), "control_prompter": ("control", {"recipe": "vlap"}),
    }
    acc: dict[str, float] = {}
    hits: dict[str, float] = {}
    for name, (which, extra) in arms.items():
        t = time.perf_counter()
        store = stores[which]
        m = train(TrainConfig(method="vlap", store=str(store), out=str(out / name), epochs=a.epochs,
                              batch_size=a.batch_size, lr=a.lr, seed=a.seed, val_split="test", device=a.device,
                              args={**common, **extra}))
        acc[name] = m["val_acc"]
        if extra["recipe"] != "teacher":
            hits[name] = vlap_hit_rate(out / name, store, key_frames(store, "test"), a.frames)
        print(f"{name}: test acc {acc[name]:.1f}%  hit rate {hits.get(name, 1.0):.3f}  ({time.perf_counter() - t:.0f} s)")
    k_over_t = a.select / a.frames
    print(f"hit rate: prompter {hits['prompter']:.3f}, prompter+distill {hits['prompter_distill']:.3f}, uniform "
          f"{hits['uniform']:.3f}, K/T {k_over_t:.3f}; negative control (decoys): prompter "
          f"{hits['control_prompter']:.3f} vs uniform {hits['control_uniform']:.3f}")
    print(json.dumps({
        "uniform_acc": acc["uniform"], "prompter_acc": acc["prompter"], "prompter_distill_acc": acc["prompter_distill"],
        "teacher_acc": acc["teacher"], "question_aware_acc": acc["question_aware"],
        "prompter_hit_rate": hits["prompter"], "prompter_distill_hit_rate": hits["prompter_distill"],
        "question_aware_hit_rate": hits["question_aware"], "uniform_hit_rate": hits["uniform"], "k_over_t": k_over_t,
        "control_uniform_acc": acc["control_uniform"], "control_prompter_acc": acc["control_prompter"],
        "control_prompter_hit_rate": hits["control_prompter"], "control_uniform_hit_rate": hits["control_uniform"],
        "decoys": a.decoys, "epochs": a.epochs, "clips": a.clips, "minutes": (time.perf_counter() - t0) / 60,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--key-shift", type=float, default=1.0, help="channel-mean shift of key frames")
    p.add_argument("--decoys", type=int, default=8, help="shifted frames without a marker (negative control)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--select", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    run_vlap(p.parse_args())


if __name__ == "__main__":
    main()
