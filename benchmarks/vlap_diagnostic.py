"""Diagnostic for VLAP (issue 12): does the Frame-Prompter find the key frames, and how do
uniform-4, Prompter-4, Prompter-4 + distiller and the teacher on all T frames compare?

    uv run python benchmarks/vlap_diagnostic.py [--clips 300] [--test-clips 150] [--epochs 6] [--out DIR]
    (or benchmarks/diagnostic.py --method vlap ...)

**The stores.** T = 32 frames of 1 + 4 tokens (width 32). Every frame shows a random concept
on its patches; a question ("what is shown with marker m?") has 1-2 key frames that show
marker m on their CLS token and the answer's concept on their patches, and whose tokens'
channel mean is shifted by ``--key-shift`` (so a question-blind Frame-Prompter can find them
from the channel means it reads). Options: the ``--concepts`` concepts in a fixed order (the
letter names the concept; chance = 1/concepts). Three stores from one generator:

* ``main``: one question a clip: the shifted frames are the question's key frames.
* ``qdep`` (question-dependent, a negative control): two questions a clip, each with its own
  key frames, all shifted: the shift says "a key frame of some question", so a question-blind
  Prompter picks the same frames for both questions and should gain little. (The
  question-aware extension reads the question's sentence vector, but its Prompter still sees
  only channel means, which do not say which marker a frame shows.)
* ``decoys`` (``--decoys``, default 8): one question, plus that many frames with the shift and
  no marker: the shift no longer singles out the key frames.

**The checkpoint.** VLAP starts from a pretrained image model (InstructBLIP) whose frozen LLM
already reads the prompt. A random frozen T5 does not (v1 of this diagnostic used the tiny
random parts of ``--weights random``: every arm, the teacher included, stayed at chance, and a
teacher with the LLM frozen at random did not learn in 150 steps even with fixed options). So
the script first writes a tiny InstructBLIP ``save_pretrained`` folder whose Q-Former, queries,
projection and Flan-T5-shaped LLM were trained together on image QA over fresh clips of the
same generator (1, 2 or 4 frames, one of them a key frame: ``--pretrain-steps``), and every
arm loads it through the real checkpoint path (``--weights FOLDER``: the folder's tokenizers,
its vision LayerNorm, the frozen LLM). The teacher of the distiller arms is that checkpoint's
Q-Former (the method's default when no ``teacher_checkpoint`` is given), not a trained teacher
run.

**The arms** (same budget: epochs, batch, seed; ``--lr`` 3e-5 for the pretrained parts, the
Prompter at ``--prompter-lr-scale`` x that: it starts from random weights, and at the paper's
single lr it does not move in this budget, which the ``prompter_paper_lr`` arm shows):
uniform-4 (``recipe=uniform``), Prompter-4 (``prompter``), Prompter-4 + distiller (``vlap``),
teacher-32 (``teacher``: all T frames) on ``main``; uniform, Prompter and the question-aware
Prompter (this project's extension) on ``qdep``; uniform and Prompter on ``decoys``. Printed:
each arm's test accuracy (last epoch), the key-frame hit rate of its frames (a selected frame
among the question's key frames) against K/T, the checkpoint's own image-QA accuracy with 1
and 4 frames, and the straight-through signal at the checkpoint (:func:`straight_through_signal`).
Expected (issue 12): hit rate well above K/T; accuracy uniform < Prompter <= Prompter +
distiller <= teacher; little gain on ``qdep``. One seed. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqacache.cache_spec import open_store
from vqacache.cache_spec.token_norm import EXTRA_KEY, TokenNorm
from vqacache.heads.data import QADataset, collate, segment_positions
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.modules.blip2_family import NUM_QUERIES, tiny_configs
from vqacache.heads.modules.frame_qformer import FrameQFormer
from vqacache.heads.modules.frozen_llm import LETTERS, FrozenT5, build_prompt, target_text
from vqacache.heads.modules.word_tokenizer import word_tokenizer, word_vocab
from vqacache.heads.stores import StoreSet
from vqacache.heads.synthetic import synthetic_spec
from vqacache.heads.train import TrainConfig, load_checkpoint, train


def key_frames(store_path: Path, split: str) -> dict[str, set[int]]:
    """qid -> the frames of the clip that show the question's marker."""
    root = open_store(store_path).root
    return {e["qid"]: set(e["key_frames"]) for _, g in root[f"questions/{split}"].groups() for e in g.attrs["entries"]}


MARKERS = 2
"""Marker vectors every world draws (a store uses the first ``n_markers``)."""


@dataclass(frozen=True)
class ClipConfig:
    """The synthetic clips' shape (see the module docstring)."""

    n_frames: int = 32
    dim: int = 32
    n_patches: int = 4
    n_markers: int = 1
    n_concepts: int = 4
    n_candidates: int = 4
    noise: float = 0.3
    key_shift: float = 1.0
    decoys: int = 0
    fixed_options: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.n_markers <= MARKERS:
            raise ValueError(f"n_markers must be 1..{MARKERS}")
        if self.fixed_options and self.n_candidates != self.n_concepts:
            raise ValueError("fixed_options lists every concept: n_candidates must equal n_concepts")


@dataclass(frozen=True)
class World:
    """The visual and textual vectors of markers and concepts, (n, dim) unit rows, from one seed."""

    marker_vec: np.ndarray
    marker_text: np.ndarray
    concept_vec: np.ndarray
    concept_text: np.ndarray

    @classmethod
    def make(cls, cfg: ClipConfig, seed: int) -> World:
        rng = np.random.default_rng(seed)
        unit = lambda n: (v := rng.standard_normal((n, cfg.dim))) / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
        return cls(unit(MARKERS), unit(MARKERS), unit(cfg.n_concepts), unit(cfg.n_concepts))  # same for any n_markers


@dataclass(frozen=True)
class Clip:
    """One clip: ``tokens`` (T, 1 + P, dim), CLS first; one question per marker (``entries``:
    the store's question entries with ``key_frames``; ``options``: each question's concepts)."""

    tokens: np.ndarray
    entries: list[dict]
    options: list[list[int]]


def make_clip(rng: np.random.Generator, world: World, cfg: ClipConfig, vid: str) -> Clip:
    """Every frame shows a random concept on its patches; each marker's 1-2 key frames show it on
    their CLS and the question's answer on their patches, and are shifted by ``key_shift``;
    ``decoys`` other frames get the shift alone."""
    T = cfg.n_frames
    concept = rng.integers(cfg.n_concepts, size=T)
    order = rng.permutation(T)
    tokens = rng.standard_normal((T, 1 + cfg.n_patches, cfg.dim)) * cfg.noise
    answers, keys, used = [], [], 0
    for m in range(cfg.n_markers):
        n_key = int(rng.integers(1, 3))
        frames = np.sort(order[used: used + n_key])
        used += n_key
        answers.append(int(rng.integers(cfg.n_concepts)))
        concept[frames] = answers[-1]
        tokens[frames, 0] += world.marker_vec[m]
        tokens[frames] += cfg.key_shift
        keys.append(frames)
    tokens[order[used: used + cfg.decoys]] += cfg.key_shift  # decoys: shifted, no marker
    tokens[:, 1:] += world.concept_vec[concept][:, None]
    entries, all_options = [], []
    for m in range(cfg.n_markers):
        wrong = [x for x in rng.permutation(cfg.n_concepts) if x != answers[m]][: cfg.n_candidates - 1]
        options = [int(o) for o in rng.permutation([answers[m], *wrong])]
        if cfg.fixed_options:  # every concept, in concept order: the letter names the concept
            options = list(range(cfg.n_concepts))
        entries.append({"qid": f"{vid}_{m}", "question": f"what is shown with marker {m}?",
                        "candidates": [f"concept {o}" for o in options], "answer": options.index(answers[m]),
                        "qtype": f"marker{m}", "start": None, "end": None, "key_frames": [int(k) for k in keys[m]]})
        all_options.append(options)
    return Clip(tokens, entries, all_options)


def clip_texts(cfg: ClipConfig) -> list[str]:
    """Every question and candidate string the clips use."""
    return [*(f"what is shown with marker {m}?" for m in range(cfg.n_markers)),
            *(f"concept {o}" for o in range(cfg.n_concepts))]


def make_vlap_store(path: Path, splits: dict[str, int], cfg: ClipConfig, seed: int = 0) -> None:
    """The diagnostic's synthetic store (entries record ``key_frames``). Its spec records the
    tokens as a LayerNorm's output with gamma = 1, beta = 0 (``token_norm``), so a checkpoint's
    own vision LayerNorm applies to them exactly (here: the identity of the tiny checkpoint's)."""
    params = {"generator": "benchmarks/vlap_diagnostic.py:vlap-v2", **asdict(cfg), "seed": seed}
    norm = TokenNorm("affine", np.ones(cfg.dim, np.float32), np.zeros(cfg.dim, np.float32), 1e-6, None)
    store = open_store(path, "a", spec=synthetic_spec(**params, **{EXTRA_KEY: norm.to_extra()}),
                       dataset="synthetic-vlap")
    world = World.make(cfg, seed)
    rng = np.random.default_rng([seed, 1])
    pts = np.arange(cfg.n_frames) / 7.5
    for split, n_clips in splits.items():
        for c in range(n_clips):
            vid = f"{split}{c:05d}"
            clip = make_clip(rng, world, cfg, vid)
            with store.write_video(vid, {"source": {"synthetic": params["generator"]}}) as w:
                w.append(cls=clip.tokens[:, 0], patch=clip.tokens[:, 1:], pts=pts, src_index=np.arange(cfg.n_frames),
                         is_repeat=np.zeros(cfg.n_frames, bool))
            Q, C = len(clip.entries), cfg.n_candidates
            store.write_questions(split, vid, clip.entries, {
                "text": world.marker_text[: Q], "text_tokens": np.zeros((Q, 1, cfg.dim)),
                "text_len": np.ones(Q, np.int64), "cand": np.stack([world.concept_text[o] for o in clip.options]),
                "cand_tokens": np.zeros((Q, C, 1, cfg.dim)), "cand_len": np.ones((Q, C), np.int64),
            })


# -- the "pretrained" checkpoint ------------------------------------------------------------------


def _qa_batch(rng: np.random.Generator, world: World, cfg: ClipConfig, size: int, n_frames: int) -> dict:
    """Image-QA examples: ``n_frames`` frames of a fresh clip, one of them a key frame of the
    question's marker, in time order -> frames (B, F, N, dim), prompts, answers."""
    frames, prompts, answers = [], [], []
    for i in range(size):
        clip = make_clip(rng, world, cfg, f"pre{i}")
        m = int(rng.integers(cfg.n_markers))
        entry = clip.entries[m]
        key = int(rng.choice(entry["key_frames"]))
        others = [t for t in rng.permutation(cfg.n_frames) if t != key][: n_frames - 1]
        frames.append(clip.tokens[sorted([key, *others])])
        prompts.append(build_prompt(entry["question"], entry["candidates"]))
        answers.append(entry["answer"])
    return {"frames": torch.tensor(np.stack(frames), dtype=torch.float32), "prompts": prompts, "answers": answers}


def pretrain_instructblip(folder: Path, cfg: ClipConfig, *, steps: int, lr: float, seed: int) -> dict[str, float]:
    """Write a tiny InstructBLIP (Flan-T5) ``save_pretrained`` folder whose Q-Former, queries,
    projection and T5 were trained together on image QA over the diagnostic's frames (1, 2 or 4
    frames of fresh clips, one a key frame): the stand-in for a pretrained image model whose
    LLM understands the prompt. The vision tower is random (its tokens come from the store);
    its LayerNorm stays gamma = 1, beta = 0. Returns the checkpoint's image-QA accuracy (%) on
    fresh examples with 1 and with 4 frames."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipVisionConfig

    words = word_vocab([*clip_texts(cfg), build_prompt("", []), *(target_text(i) for i in range(len(LETTERS)))])
    qtok, ttok = word_tokenizer(words, "bert"), word_tokenizer(words, "t5")
    qcfg, tcfg = tiny_configs(cfg.dim, len(qtok), len(ttok))
    vcfg = InstructBlipVisionConfig(hidden_size=cfg.dim, intermediate_size=2 * cfg.dim, num_hidden_layers=1,
                                    num_attention_heads=2, image_size=32, patch_size=16)
    config = InstructBlipConfig(vision_config=vcfg.to_dict(), qformer_config=qcfg.to_dict(),
                                text_config=tcfg.to_dict(), num_query_tokens=NUM_QUERIES)
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config)
    model.query_tokens.data.normal_(0.0, 0.02)
    qformer = FrameQFormer(model.qformer, model.query_tokens, model.language_projection)
    llm = FrozenT5(model.language_model, ttok)
    model.language_model.requires_grad_(True)  # "pretraining": the LLM learns the prompt too
    params = [*qformer.parameters(), *model.language_model.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    world, rng = World.make(cfg, seed), np.random.default_rng([seed, 2])

    def run(b: dict, train: bool) -> torch.Tensor:
        tok = qtok(b["prompts"], padding="longest", return_tensors="pt")
        visual = qformer(b["frames"], tok["input_ids"], tok["attention_mask"])  # (B, F 32, d)
        if train:
            return llm.loss(visual, b["prompts"], b["answers"])
        return llm.option_logits(visual, b["prompts"], [cfg.n_candidates] * len(b["answers"])).argmax(1)

    for _ in range(steps):
        loss = run(_qa_batch(rng, world, cfg, 32, int(rng.choice([1, 2, 4]))), train=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = {}
    with torch.no_grad():
        for F in (1, 4):
            b = _qa_batch(rng, world, cfg, 256, F)
            acc[f"pretrained_acc_{F}_frames"] = 100.0 * float((run(b, False) == torch.tensor(b["answers"])).float().mean())
    model.query_tokens.data.copy_(qformer.query_tokens.data)
    model.save_pretrained(folder)
    ttok.save_pretrained(folder)
    qtok.save_pretrained(folder / "qformer_tokenizer")
    return acc


def straight_through_signal(weights: Path, store: Path, frames: int, select: int, max_segments: int = 400) -> float:
    """At the pretrained checkpoint (a fresh Prompter), the share of (question, segment) pairs
    holding a key frame where the straight-through gradient's steepest descent among the
    segment's S frame weights is a key frame (chance: about 1/S): whether the signal that
    trains the Prompter points at the right frames at all."""
    method = get_method("vlap")
    args = method_args(method, {"weights": str(weights), "size": "checkpoint", "num_frames": frames,
                                "num_select": select, "recipe": "prompter"})
    stores = StoreSet(store)
    args = {**args, **method.prepare(args, stores)}
    ds = QADataset(stores, "train", **method.data(args))  # segment midpoints: dataset frame t = clip frame pos[t]
    pos = segment_positions(frames, ds.num_frames)
    model = method.build(args, ds.dims())
    model.train()
    keys = key_frames(store, "train")
    captured: dict[str, torch.Tensor] = {}
    forward = model.prompter.forward

    def keep_weights(*args_: object, **kw: object) -> object:
        out = forward(*args_, **kw)
        out.weights.retain_grad()
        captured["weights"] = out.weights
        return out

    model.prompter.forward = keep_weights  # type: ignore[method-assign]
    hits = total = 0
    for batch in DataLoader(ds, batch_size=16, collate_fn=collate):
        loss, _ = method.loss(model, batch, args)
        loss.backward()
        grad = captured["weights"].grad  # (B, K, S): dL/dy for every frame of every segment
        S = grad.shape[-1]
        for b, qid in enumerate(batch["qid"]):
            for k in range(grad.shape[1]):
                segment = {int(pos[t]): t for t in range(k * S, (k + 1) * S)}
                if keys[qid] & set(segment):
                    best = int(grad[b, k].argmin()) + k * S
                    hits += int(pos[best]) in keys[qid]
                    total += 1
        model.zero_grad(set_to_none=True)
        if total >= max_segments:
            break
    return hits / max(total, 1)


ARMS = ("uniform", "prompter", "prompter_paper_lr", "prompter_distill", "teacher", "qdep_uniform", "qdep_prompter",
        "question_aware", "control_uniform", "control_prompter")


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
    torch.set_num_threads(a.threads)
    tmp = tempfile.TemporaryDirectory()
    out = Path(a.out or tmp.name)
    cfg = ClipConfig(n_frames=a.frames, key_shift=a.key_shift, n_concepts=a.concepts, n_candidates=a.concepts)
    both = ClipConfig(**{**asdict(cfg), "n_markers": 2})  # two questions a clip, each with its own key frames
    configs = {"main": cfg, "qdep": both, "decoys": ClipConfig(**{**asdict(cfg), "decoys": a.decoys})}
    stores = {name: out / f"vlap-{name}.zarr" for name in configs}
    for name, path in stores.items():
        if not path.exists():
            make_vlap_store(path, {"train": a.clips, "test": a.test_clips}, configs[name], seed=a.seed)
    print(f"stores written ({a.clips} train / {a.test_clips} test clips; main and decoys: 1 question a clip, "
          f"question-dependent: 2) in "
          f"{time.perf_counter() - t0:.0f} s")
    t = time.perf_counter()
    weights = out / "instructblip-pretrained"
    record = out / "instructblip-pretrained.json"  # reused by a rerun with the same --out
    if record.exists():
        pretrained = json.loads(record.read_text())
    else:
        pretrained = pretrain_instructblip(weights, both, steps=a.pretrain_steps, lr=a.pretrain_lr, seed=a.seed)
        record.write_text(json.dumps(pretrained))
    print(f"pretrained checkpoint ({a.pretrain_steps} steps of image QA): accuracy with 1 frame "
          f"{pretrained['pretrained_acc_1_frames']:.1f}%, with 4 frames {pretrained['pretrained_acc_4_frames']:.1f}% "
          f"({time.perf_counter() - t:.0f} s)")
    signal = straight_through_signal(weights, stores["main"], a.frames, a.select)
    print(f"straight-through signal at the checkpoint: the steepest descent is a key frame in {signal:.3f} of the "
          f"segments holding one (chance {a.select / a.frames:.3f})")
    common = {"weights": str(weights), "size": "checkpoint", "num_frames": a.frames, "num_select": a.select,
              "prompter_lr_scale": a.prompter_lr_scale}
    arms: dict[str, tuple[str, dict]] = {
        "uniform": ("main", {"recipe": "uniform"}), "prompter": ("main", {"recipe": "prompter"}),
        "prompter_paper_lr": ("main", {"recipe": "prompter", "prompter_lr_scale": 1.0}),
        "prompter_distill": ("main", {"recipe": "vlap"}), "teacher": ("main", {"recipe": "teacher"}),
        "qdep_uniform": ("qdep", {"recipe": "uniform"}), "qdep_prompter": ("qdep", {"recipe": "prompter"}),
        "question_aware": ("qdep", {"recipe": "prompter", "question_aware": True}),
        "control_uniform": ("decoys", {"recipe": "uniform"}), "control_prompter": ("decoys", {"recipe": "prompter"}),
    }
    if a.arms:
        unknown = sorted(set(a.arms.split(",")) - set(arms))
        if unknown:
            raise SystemExit(f"--arms: unknown {', '.join(unknown)}; valid: {', '.join(arms)}")
        arms = {k: v for k, v in arms.items() if k in a.arms.split(",")}
    acc: dict[str, float | None] = dict.fromkeys(ARMS)
    hits: dict[str, float | None] = dict.fromkeys(ARMS)
    for name, (which, extra) in arms.items():
        t = time.perf_counter()
        store = stores[which]
        m = train(TrainConfig(method="vlap", store=str(store), out=str(out / name), epochs=a.epochs,
                              batch_size=a.batch_size, lr=a.lr, seed=a.seed, val_split="test", device=a.device,
                              args={**common, **extra}))
        acc[name] = m["val_acc"]
        if extra["recipe"] != "teacher":
            hits[name] = vlap_hit_rate(out / name, store, key_frames(store, "test"), a.frames)
        shown = "all frames" if hits[name] is None else f"hit rate {hits[name]:.3f}"
        print(f"{name}: test acc {acc[name]:.1f}%  {shown}  ({time.perf_counter() - t:.0f} s)")
    k_over_t = a.select / a.frames
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"hit rate: prompter {fmt(hits['prompter'])}, prompter+distill {fmt(hits['prompter_distill'])}, uniform "
          f"{fmt(hits['uniform'])}, K/T {k_over_t:.3f}; question-dependent: prompter {fmt(hits['qdep_prompter'])}, "
          f"question-aware {fmt(hits['question_aware'])} vs uniform {fmt(hits['qdep_uniform'])}; decoys: prompter "
          f"{fmt(hits['control_prompter'])} vs uniform {fmt(hits['control_uniform'])}")
    figures = {f"{name}_acc": acc[name] for name in ARMS}
    figures.update({f"{name}_hit_rate": hits[name] for name in ARMS if name != "teacher"})
    print(json.dumps({
        **figures, "k_over_t": k_over_t, "chance_acc": 100.0 / a.concepts, "st_signal_key_share": signal,
        **pretrained, "lr": a.lr, "prompter_lr_scale": a.prompter_lr_scale, "decoys": a.decoys, "epochs": a.epochs,
        "clips": a.clips, "test_clips": a.test_clips, "seed": a.seed, "minutes": (time.perf_counter() - t0) / 60,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--key-shift", type=float, default=1.0, help="channel-mean shift of key frames")
    p.add_argument("--decoys", type=int, default=8, help="shifted frames without a marker (negative control)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=150)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--select", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-5, help="lr of the pretrained parts (small: they overfit 400 questions fast)")
    p.add_argument("--prompter-lr-scale", type=float, default=1000.0,
                   help="the Prompter's lr multiplier in every arm but prompter_paper_lr (1: the paper's single lr)")
    p.add_argument("--concepts", type=int, default=4, help="concepts = options per question (chance: 1/concepts)")
    p.add_argument("--pretrain-steps", type=int, default=400, help="image-QA steps of the stand-in checkpoint")
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", help=f"comma-separated subset of {', '.join(ARMS)} (default: all)")
    p.add_argument("--out", help="working folder (stores and the pretrained checkpoint are reused from it)")
    run_vlap(p.parse_args())


if __name__ == "__main__":
    main()
