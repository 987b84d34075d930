"""The image-QA teacher (SpARC's per-frame answer probabilities), on CPU with random weights.

Inputs: the demo's val clips (decoded at 7.5 fps, 16 frames per question by the store's rule)
with real NExT-QA val questions and their 5 options (../shared annotations) assigned to them,
``--questions-per-video`` each (NExT-QA has ~10 per video). Figures, in one run:

- batched (what ``vqa-featurize --imageqa`` does): each video's frames encoded once by the
  teacher's vision model, then all its questions ranked in one batched call
  (``rank_questions``: the teacher's ``rank_many``);
- reuse: the frames encoded once, the questions ranked one call each;
- recompute: the frames encoded again for every question (what a per-question loop does);
- questions_per_s and frames_per_s (question-frames scored per second) of the batched path;
  reuse_speedup = recompute time / reuse time (the saving from reusing a video's visual
  features); batch_speedup = ranking time one call per question / batched ranking time;
- projected hours for all of NExT-QA (52K questions x 16 frames x 5 candidates, ~10 questions
  per video) at the measured per-video and batched per-question costs, on this device.

All three paths must give the same probabilities (checked).

    uv run python benchmarks/imageqa.py [--teacher blip] [--weights random] [--device cpu]
        [--questions-per-video 5] [--frames 16]

The last line is one JSON object with questions_per_s, frames_per_s, reuse_speedup,
batch_speedup, nextqa_projected_hours.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.featurize.datasets import get_dataset
from vqacache.featurize.decode import decode_at_fps
from vqacache.featurize.imageqa import get_teacher
from vqacache.featurize.imageqa.teacher import TeacherQuestion, input_size, rank_questions

ROOT = Path(__file__).resolve().parents[1]
NEXTQA_VAL = ROOT.parent / "shared" / "data" / "annotations" / "nextqa" / "val.csv"
NEXTQA_QUESTIONS, NEXTQA_PER_VIDEO = 52_044, 10


def nextqa_questions(n: int) -> list[tuple[str, list[str]]]:
    """The first ``n`` NExT-QA val questions with their 5 options (synthetic ones without ../shared)."""
    if not NEXTQA_VAL.is_file():
        print(f"note: {NEXTQA_VAL} not found; synthetic questions")
        return [(f"what does the person do at moment {i}?", [f"option {j} of {i}" for j in range(5)]) for i in range(n)]
    with NEXTQA_VAL.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    return [(r["question"], [r[f"a{j}"] for j in range(5)]) for r in rows]


def synthetic_vocab(folder: Path, questions: list[tuple[str, list[str]]]) -> Path:
    """A bert-base-uncased-sized WordPiece vocabulary (30,522 entries) for runs without the real
    one (offline, nothing cached): special tokens, characters, the questions' words, fillers.
    Timing depends on its size and the token counts, not on which words it holds."""
    words = sorted({w for q, opts in questions for text in (q, *opts) for w in text.lower().split() if w.isalpha()})
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,?!'-")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    tokens += [f"[unused{i}]" for i in range(30_522 - len(tokens))]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="blip")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--questions-per-video", type=int, default=5)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder or vocab.txt (default: a synthetic bert-base-sized vocabulary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = get_dataset("demo", Path(tmp) / "demo")
        n_videos = len(demo.videos("val"))
        questions = nextqa_questions(n_videos * args.questions_per_video)
        tokenizer = args.tokenizer
        if tokenizer is None:
            tokenizer = str(synthetic_vocab(Path(tmp), questions))
            print("note: synthetic bert-base-sized vocabulary (timing only: the words it holds do not matter)")
        teacher = get_teacher(args.teacher, args.weights, device=args.device, compute_dtype="auto", tokenizer=tokenizer)
        size = input_size(teacher)
        videos = [decode_at_fps(v.path, short_side=size) for v in demo.videos("val")]
    work = []  # (frames (F, H, W, 3), [(question, options), ...]) per video
    for i, video in enumerate(videos):
        idx = frame_indices(video.pts, args.frames)
        work.append((video.frames[idx], questions[i * args.questions_per_video : (i + 1) * args.questions_per_video]))
    n_q = sum(len(qs) for _, qs in work)
    n_frames = sum(len(f) * len(qs) for f, qs in work)

    teacher.rank_candidates(teacher.encode_images(work[0][0][:2]), *work[0][1][0])  # warm-up
    t_images = t_rank = t_batched = 0.0
    reuse, batched = [], []
    for frames, qs in work:
        t0 = time.perf_counter()
        images = teacher.encode_images(frames)
        sync(args.device)
        t_images += time.perf_counter() - t0
        t0 = time.perf_counter()
        batched += rank_questions(teacher, images, [TeacherQuestion(q, tuple(opts)) for q, opts in qs], None, 0)
        sync(args.device)
        t_batched += time.perf_counter() - t0
        t0 = time.perf_counter()
        reuse += [teacher.rank_candidates(images, q, opts) for q, opts in qs]
        sync(args.device)
        t_rank += time.perf_counter() - t0
    t_reuse = t_images + t_rank
    t0 = time.perf_counter()
    recompute = [teacher.rank_candidates(teacher.encode_images(frames), q, opts) for frames, qs in work for q, opts in qs]
    sync(args.device)
    t_recompute = time.perf_counter() - t0
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(reuse, recompute)), "reuse changed the numbers"
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(reuse, batched)), "batching changed the numbers"

    per_video_s, per_question_s = t_images / len(work), t_batched / n_q
    projected_h = (NEXTQA_QUESTIONS / NEXTQA_PER_VIDEO * per_video_s + NEXTQA_QUESTIONS * per_question_s) / 3600
    t_best = t_images + t_batched
    figures = {
        "teacher": args.teacher, "device": args.device, "videos": len(work), "questions": n_q, "frames": args.frames,
        "questions_per_s": round(n_q / t_best, 3),
        "frames_per_s": round(n_frames / t_best, 2),
        "reuse_speedup": round(t_recompute / t_reuse, 3),
        "batch_speedup": round(t_rank / t_batched, 3),
        "images_s_per_video": round(per_video_s, 3),
        "rank_s_per_question": round(per_question_s, 3),
        "rank_s_per_question_unbatched": round(t_rank / n_q, 3),
        "nextqa_projected_hours": round(projected_h, 2),
    }
    print(f"{args.teacher} on {args.device}: {len(work)} videos, {n_q} questions x {args.frames} frames x 5 options")
    print(f"batched    {t_best:7.1f} s  {figures['questions_per_s']:.3f} questions/s  {figures['frames_per_s']:.1f} frames/s"
          f"  (vision {t_images:.1f} s, ranking {t_batched:.1f} s)")
    print(f"reuse      {t_reuse:7.1f} s  (ranking one call per question {t_rank:.1f} s: batching "
          f"{figures['batch_speedup']:.2f}x)")
    print(f"recompute  {t_recompute:7.1f} s  reuse speed-up {figures['reuse_speedup']:.2f}x")
    print(f"all of NExT-QA ({NEXTQA_QUESTIONS} questions, ~{NEXTQA_PER_VIDEO} per video) projected: {projected_h:.1f} h on {args.device}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
