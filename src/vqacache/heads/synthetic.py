"""A synthetic temporal VideoQA store in the cache format, for tests and the diagnostic.

Every clip has ``n_frames`` frames at 7.5 fps. There are ``n_markers`` question kinds
("what is shown when marker m appears?"). For each marker the clip has 1 or 2 *key frames*
showing that marker together with one answer concept; every other frame is a distractor
showing a random concept. The answer to the question about marker m is the concept of m's
key frames, so it depends on one or two frames among distractors, and the other markers'
key frames are question-dependent distractors.

Features (all float, widths ``dim``):

* ``cls`` (T, E): the marker's vector on key frames (plus noise), noise elsewhere: a
  sampler can find the key frames from the CLS vectors if it reads the question;
* ``patch`` (T, P, W): token 0 carries the frame's marker (zeros on distractors), tokens
  1.. the frame's concept, all plus noise: the answer needs a key frame's patches;
* question ``text``: the marker's text vector; ``cand`` (C, E): the concepts' text vectors,
  the correct one among ``n_candidates`` (the other markers' concepts are among the wrong
  ones when possible).
* teacher ``imageqa`` (T, C), ``imageqa_pts`` (T,) on every question (a ``TeacherSpec``
  named ``synthetic`` with the teacher's parameters, written with ``write_imageqa``): per frame, the
  probability of each candidate an image-QA model would give: on the question's key frames
  ``key_prob`` on the correct candidate, on a distractor frame showing a candidate's
  concept ``key_prob`` on that candidate, else uniform; with probability ``teacher_noise``
  a frame's distribution is replaced by a random Dirichlet(1) draw.

Each question entry also records ``key_frames`` (frame indices) for hit-rate measurements.
The spec says ``encoder="synthetic"`` with ``extra={"synthetic": True, ...}`` and every
generator parameter, so a synthetic store can never pass for a real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vqacache.cache_spec import (
    FeatureSpec,
    OutputSpec,
    PreprocessSpec,
    SamplingSpec,
    TeacherSpec,
    WeightsSpec,
    open_store,
)
from vqacache.cache_spec.store import FeatureStore

GENERATOR = "vqacache.heads.synthetic/temporal-v1"


def synthetic_spec(**params: Any) -> FeatureSpec:
    return FeatureSpec(
        encoder="synthetic",
        architecture=GENERATOR,
        weights=WeightsSpec("random", f"random:{params.get('seed', 0)}"),
        preprocess=PreprocessSpec(
            decode_short_side=None, decode_interpolation="bilinear", resize_short_side=224, interpolation="bicubic",
            crop="center", crop_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        ),
        sampling=SamplingSpec("7.5"),
        outputs=OutputSpec(
            cls="image-embedding", cls_hidden=None, patch_layer="post-ln", patch_pool=1, text="clip-text",
            text_context=77,
        ),
        dtype="float32",
        extra={"synthetic": True, "teacher": "synthetic", **params},
    )


def make_temporal_store(
    path: str | Path,
    splits: dict[str, int] | None = None,
    n_frames: int = 32,
    dim: int = 32,
    n_patches: int = 4,
    n_markers: int = 2,
    n_concepts: int = 8,
    n_candidates: int = 4,
    noise: float = 0.3,
    key_prob: float = 0.8,
    teacher_noise: float = 0.0,
    teacher: bool = True,
    seed: int = 0,
) -> FeatureStore:
    """Write the store (``splits``: clips per split, default train 200 / val 50)."""
    splits = splits or {"train": 200, "val": 50}
    params = {
        "n_frames": n_frames, "dim": dim, "n_patches": n_patches, "n_markers": n_markers, "n_concepts": n_concepts,
        "n_candidates": n_candidates, "noise": noise, "key_prob": key_prob, "teacher_noise": teacher_noise,
        "seed": seed,
    }
    store = open_store(path, "a", spec=synthetic_spec(**params), dataset="synthetic-temporal")
    teacher_fp = store.set_teacher_spec(TeacherSpec(
        teacher="synthetic", model={"synthetic": True, "key_prob": key_prob, "teacher_noise": teacher_noise, "seed": seed},
        frames=n_frames,
    )) if teacher else None
    rng = np.random.default_rng(seed)
    unit = lambda *shape: (v := rng.standard_normal(shape)) / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    marker_cls, marker_patch, marker_text = unit(n_markers, dim), unit(n_markers, dim), unit(n_markers, dim)
    concept_patch, concept_text = unit(n_concepts, dim), unit(n_concepts, dim)
    pts = np.arange(n_frames) / 7.5
    for split, n_clips in splits.items():
        for c in range(n_clips):
            vid = f"{split}{c:05d}"
            concept = rng.integers(n_concepts, size=n_frames)  # (T,) what each frame shows
            marker = np.full(n_frames, -1)
            order = rng.permutation(n_frames)
            answers, keys, used = [], [], 0
            for m in range(n_markers):
                n_key = int(rng.integers(1, 3))
                frames = np.sort(order[used : used + n_key])
                used += n_key
                answers.append(int(rng.integers(n_concepts)))
                concept[frames], marker[frames] = answers[-1], m
                keys.append(frames)
            cls = rng.standard_normal((n_frames, dim)) * noise
            patch = rng.standard_normal((n_frames, n_patches, dim)) * noise
            patch[:, 1:] += concept_patch[concept][:, None]
            is_key = marker >= 0
            cls[is_key] += marker_cls[marker[is_key]]
            patch[is_key, 0] += marker_patch[marker[is_key]]
            with store.write_video(vid, {"source": {"synthetic": GENERATOR}}) as w:
                w.append(cls=cls, patch=patch, pts=pts, src_index=np.arange(n_frames), is_repeat=np.zeros(n_frames, bool))
            entries, text, cand, probs = [], [], [], []
            for m in range(n_markers):
                others = [answers[o] for o in range(n_markers) if o != m and answers[o] != answers[m]]
                pool = [x for x in rng.permutation(n_concepts) if x != answers[m] and x not in others]
                wrong = (others + pool)[: n_candidates - 1]
                options = [answers[m], *wrong]
                perm = rng.permutation(n_candidates)
                options = [int(options[i]) for i in perm]
                answer = options.index(answers[m])
                entries.append({
                    "qid": f"{vid}_{m}", "question": f"what is shown with marker {m}?",
                    "candidates": [f"concept {o}" for o in options], "answer": answer, "qtype": f"marker{m}",
                    "start": None, "end": None, "key_frames": [int(k) for k in keys[m]],
                })
                text.append(marker_text[m] + rng.standard_normal(dim) * noise * 0.1)
                cand.append(concept_text[options])
                p = np.full((n_frames, n_candidates), 1.0 / n_candidates)
                for k in range(n_frames):
                    if concept[k] in options:
                        j = options.index(int(concept[k]))
                        hit = k in keys[m] or marker[k] < 0
                        if hit:
                            p[k] = (1 - key_prob) / (n_candidates - 1)
                            p[k, j] = key_prob
                    if rng.random() < teacher_noise:
                        p[k] = rng.dirichlet(np.ones(n_candidates))
                probs.append(p)
            Q = len(entries)
            store.write_questions(split, vid, entries, {
                "text": np.stack(text), "text_tokens": np.zeros((Q, 1, dim)), "text_len": np.ones(Q, np.int64),
                "cand": np.stack(cand), "cand_tokens": np.zeros((Q, n_candidates, 1, dim)),
                "cand_len": np.ones((Q, n_candidates), np.int64),
            })
            if teacher:
                store.write_imageqa(split, vid, teacher_fp, {"imageqa": np.stack(probs).astype(np.float32),
                                                             "imageqa_pts": np.tile(pts, (Q, 1))})
    return store
