"""One image-QA task: the teacher's per-frame answer probabilities for a shard of videos.

Runs where the teacher lives (a Dask worker, or this process with ``--workers 0``), after the
videos' frame features and question bundles are in the store. For each video: choose each
question's F frames among the stored frames (``frame_indices``, the rule stage two uses),
decode the video again at the teacher's resolution on the same 7.5 fps grid (in the worker's
decode children) keeping only those frames, encode each distinct frame set once with the
teacher's vision model, rank every question's answers on it, and add the arrays to the
video's question bundle.

Each video is claimed with an ``imageqa`` lease first, renewed by the task's heartbeat thread
(:class:`~vqacache.cache_spec.heartbeat.Heartbeat`, every ttl/3) for as long as the video is
being decoded and scored, and checked once more (``Lease.renew``) right before its arrays are
published. A lease found lost (it expired, and another run took the video over) means that run
has the video: this one drops it without writing, counts it in :attr:`ImageQAResult.lost` and
goes on. Any other error while scoring or writing one video is recorded for that video alone.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vqacache.cache_spec import FeatureStore, TeacherSpec, vocab_sha256
from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.cache_spec.heartbeat import Heartbeat
from vqacache.cache_spec.lease import Lease, LeaseLost
from vqacache.featurize.datasets import QuestionRecord
from vqacache.featurize.decode import DecodeError
from vqacache.featurize.imageqa.dataset_tokenizer import DatasetTokenizer
from vqacache.featurize.imageqa.registry import get_teacher
from vqacache.featurize.imageqa.teacher import (
    ImageQATeacher,
    TeacherQuestion,
    VocabScores,
    input_size,
    rank_questions,
)
from vqacache.featurize.shard import DecodeArgs, VideoCallback, cached_pool, event_callback, open_task_store

DEFAULT_FRAMES = 16
DEFAULT_K = 128


@dataclass(frozen=True)
class TeacherArgs:
    """How to build the teacher; identical args give the identical spec in every process."""

    name: str
    weights: str | None = None
    device: str = "auto"
    compute_dtype: str = "auto"
    frames: int = DEFAULT_FRAMES
    k: int = DEFAULT_K
    """Open-ended: answers rescored in full per frame (the teacher's ``k_test``)."""
    tokenizer: str | DatasetTokenizer | None = None
    """A tokenizer directory or vocab file (default: the one beside the weights / in the HF cache),
    or the one built from the dataset's text for random weights (see ``imageqa.options``)."""
    score: str | None = None
    """The teacher's answer score (``loglik``, ``blip``, ``albef``; None: the teacher's default)."""


@dataclass(frozen=True)
class ImageQATask:
    store_path: str
    fingerprint: str
    """The store's (frame features') fingerprint."""
    teacher_fingerprint: str
    teacher: TeacherArgs
    decode: DecodeArgs
    split: str
    videos: tuple[tuple[str, str], ...]
    """(video_id, path) pairs; each video's questions are those of its bundle in ``split``."""
    vocab: tuple[str, ...] | None
    owner: str
    lease_ttl_s: float = 600.0
    progress_topic: str | None = None


@dataclass
class ImageQAResult:
    done: dict[str, int] = field(default_factory=dict)
    """video_id -> questions scored."""
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Videos whose lease was lost before publishing (another run has them): not written."""
    timings: dict[str, float] = field(default_factory=lambda: {"imageqa_decode": 0.0, "imageqa_images": 0.0,
                                                               "imageqa_rank": 0.0, "imageqa_write": 0.0})
    frames_encoded: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


_TEACHERS: dict[TeacherArgs, ImageQATeacher] = {}
_VOCABS: dict[tuple[TeacherArgs, str], Any] = {}


def cached_teacher(args: TeacherArgs) -> ImageQATeacher:
    """The teacher for ``args``, built once per process."""
    if args not in _TEACHERS:
        options = ({"k_test": args.k} | ({"tokenizer": args.tokenizer} if args.tokenizer is not None else {})
                   | ({"score": args.score} if args.score else {}))
        _TEACHERS[args] = get_teacher(args.name, args.weights, device=args.device, compute_dtype=args.compute_dtype,
                                      **options)
    return _TEACHERS[args]


def teacher_decode(teacher: ImageQATeacher, fps: str, processes: int, timeout_s: float,
                   frames_fps: str | None = None) -> DecodeArgs:
    """How videos are decoded again for the teacher: the stored frames' fps grid, the short
    side at the teacher's input size (``frames_fps``: the frame folders' rate, as in stage one)."""
    return DecodeArgs(fps=fps, short_side=input_size(teacher), processes=processes, timeout_s=timeout_s,
                      frames_fps=frames_fps)


def prepare_teacher(args: TeacherArgs, fps: str, processes: int, timeout_s: float,
                    vocab: tuple[str, ...] | None, frames_fps: str | None = None) -> str:
    """This process's one-off teacher start-up: build the teacher, start its decode pool;
    returns the TeacherSpec (JSON) it produces."""
    teacher = cached_teacher(args)
    decode = teacher_decode(teacher, fps, processes, timeout_s, frames_fps)
    pool = cached_pool(decode)
    spec = TeacherSpec(
        teacher=args.name,
        model=teacher.teacher_spec(),
        frames=args.frames,
        decode_short_side=decode.short_side,
        vocab_size=len(vocab) if vocab else None,
        vocab_sha256=vocab_sha256(list(vocab)) if vocab else None,
        k=args.k if vocab else None,
    )
    pool.wait_ready()
    return spec.to_json()


def run_imageqa(task: ImageQATask, on_video: VideoCallback | None = None) -> ImageQAResult:
    """Score the task's videos' questions with the teacher and store them; small metadata back."""
    on_video = on_video or event_callback(task.progress_topic)
    result = ImageQAResult()
    store = open_task_store(task.store_path, task.fingerprint)
    spec = store.teacher_spec()
    if spec is None or spec.fingerprint() != task.teacher_fingerprint:
        raise ValueError(f"{task.store_path} does not hold the teacher spec {task.teacher_fingerprint[:12]}")
    teacher = cached_teacher(task.teacher)
    vocab = None
    if task.vocab:
        key = (task.teacher, vocab_sha256(list(task.vocab)))
        if key not in _VOCABS:
            _VOCABS[key] = teacher.prepare_vocab(list(task.vocab))
        vocab = _VOCABS[key]
    k = spec.k or 0
    pool = cached_pool(task.decode)
    plans: dict[str, _VideoPlan] = {}
    leases: dict[str, Lease] = {}
    heartbeat = Heartbeat()

    def claimed():
        for video_id, path in task.videos:
            if store.has_imageqa(task.split, video_id, task.teacher_fingerprint):
                result.skipped.append(video_id)
                continue
            if not store.is_complete(video_id) or not store.has_question_bundle(task.split, video_id):
                result.failed[video_id] = "not-featurized: its frame features or question bundle are not in the store"
                continue
            lease = store.claim(video_id, task.owner, task.lease_ttl_s, kind="imageqa")
            if lease is None:
                result.skipped.append(video_id)
                continue
            leases[video_id] = lease
            heartbeat.add(lease)
            plans[video_id] = _VideoPlan.build(store, task.split, video_id, spec.frames)
            yield video_id, path

    def give_up(video_id: str) -> Lease:
        lease = leases.pop(video_id)
        heartbeat.discard(lease)
        lease.release()  # returns False, touching nothing, if another run holds it now
        return lease

    def fail(video_id: str, reason: str) -> None:
        result.failed[video_id] = reason
        give_up(video_id)
        if on_video is not None:
            on_video(video_id, 0, reason)

    try:
        with heartbeat:
            for stream in pool.imap(claimed()):
                video_id = stream.video_id
                plan = plans.pop(video_id)
                try:
                    t0 = time.perf_counter()
                    frames = plan.collect(stream)
                    result.timings["imageqa_decode"] += time.perf_counter() - t0
                except (DecodeError, FrameMismatch) as exc:
                    fail(video_id, f"{getattr(exc, 'reason', 'frame-mismatch')}: {exc}")
                    continue
                if leases[video_id].lost:  # the heartbeat found it taken over: do not even score it
                    result.lost.append(give_up(video_id).video_id)
                    continue
                try:
                    arrays = plan.score(teacher, frames, vocab, k, result)
                    leases[video_id].renew()  # checked right before publishing
                    t0 = time.perf_counter()
                    store.write_imageqa(task.split, video_id, task.teacher_fingerprint, arrays)
                    result.timings["imageqa_write"] += time.perf_counter() - t0
                except LeaseLost:  # expired, and another run holds it now
                    result.lost.append(give_up(video_id).video_id)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory: this video only
                    fail(video_id, f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
                    continue
                result.done[video_id] = len(plan.rows)
                give_up(video_id)
                if on_video is not None:
                    on_video(video_id, len(plan.rows), None)
    finally:
        for video_id in list(leases):
            give_up(video_id)
    return result


class FrameMismatch(Exception):
    """The teacher's decode did not reproduce the stored frames' presentation times."""

    reason = "frame-mismatch"


@dataclass
class _VideoPlan:
    """Which stored frames each question of a video needs, and the bundle's row order."""

    rows: list[QuestionRecord]
    """The bundle's questions, in its row order."""
    frame_sets: list[np.ndarray]
    """Per row: indices (F_q,) into the video's stored frames."""
    pts: np.ndarray
    """(T,) the stored frames' pts."""

    @classmethod
    def build(cls, store: FeatureStore, split: str, video_id: str, frames: int) -> _VideoPlan:
        rows = [_record_of(e, video_id, split) for e in store.question_entries(split, video_id)]
        pts = np.asarray(store.video_arrays(video_id)["pts"][:], dtype=np.float64)
        return cls(rows, [frame_indices(pts, frames, q.start, q.end) for q in rows], pts)

    def collect(self, stream: Any) -> dict[int, np.ndarray]:
        """Decode the video, keeping the frames any question needs: {stored index: (H, W, 3)}."""
        needed = set(int(i) for s in self.frame_sets for i in s)
        kept: dict[int, np.ndarray] = {}
        offset = 0
        for chunk in stream.chunks():
            n = len(chunk.pts)
            if offset + n > len(self.pts) or not np.allclose(chunk.pts, self.pts[offset : offset + n], atol=1e-6):
                raise FrameMismatch(
                    f"decoding again gave other frame times than the stored ones near frame {offset} "
                    "(the file changed since it was featurized?)"
                )
            for i in range(offset, offset + n):
                if i in needed:
                    kept[i] = np.array(chunk.frames[i - offset])
            offset += n
        if offset != len(self.pts):
            raise FrameMismatch(f"decoding again gave {offset} frames, the store has {len(self.pts)}")
        return kept

    def score(self, teacher: ImageQATeacher, frames: dict[int, np.ndarray], vocab: Any, k: int,
              result: ImageQAResult) -> dict[str, np.ndarray]:
        """The bundle's teacher arrays: each distinct frame set is encoded once, and all the
        questions about it are ranked in one batched call (whole-video questions of a video
        share one frame set)."""
        F = max(len(s) for s in self.frame_sets)
        C = max([len(q.candidates) for q in self.rows] + ([k] if any(not q.candidates for q in self.rows) else []))
        probs = np.zeros((len(self.rows), F, C), np.float32)
        pts = np.full((len(self.rows), F), np.nan)
        index = np.full((len(self.rows), F, C), -1, np.int64) if any(not q.candidates for q in self.rows) else None
        groups: dict[tuple[int, ...], list[int]] = {}  # frame set -> bundle rows asking about it
        for row, chosen in enumerate(self.frame_sets):
            groups.setdefault(tuple(int(i) for i in chosen), []).append(row)
        for key, rows in groups.items():
            t0 = time.perf_counter()
            images = teacher.encode_images(np.stack([frames[i] for i in key]))
            result.timings["imageqa_images"] += time.perf_counter() - t0
            result.frames_encoded += len(key)
            t0 = time.perf_counter()
            asked = [TeacherQuestion(self.rows[r].question, tuple(self.rows[r].candidates)) for r in rows]
            n = len(key)
            for row, ranked in zip(rows, rank_questions(teacher, images, asked, vocab, k)):
                if isinstance(ranked, VocabScores):
                    probs[row, :n, : ranked.probs.shape[1]] = ranked.probs
                    index[row, :n, : ranked.index.shape[1]] = ranked.index
                else:
                    probs[row, :n, : ranked.shape[1]] = ranked
                pts[row, :n] = self.pts[list(key)]
            result.timings["imageqa_rank"] += time.perf_counter() - t0
        arrays = {"imageqa": probs, "imageqa_pts": pts}
        if index is not None:
            arrays["imageqa_index"] = index
        return arrays


def _record_of(entry: dict[str, Any], video_id: str, split: str) -> QuestionRecord:
    """A bundle entry (question text, candidates, segment) as a record."""
    return QuestionRecord(qid=entry["qid"], video_id=video_id, question=entry["question"],
                          candidates=tuple(entry["candidates"]), answer=entry.get("answer"),
                          qtype=entry.get("qtype"), split=split, start=entry.get("start"), end=entry.get("end"))
