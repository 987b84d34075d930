"""Stage one, single process: dataset -> decode at fps -> encode -> store.

:func:`featurize` is what ``vqa-featurize`` calls. It opens (or creates) the store for the
(dataset, spec) pair, skips videos already complete (and, unless ``retry_failed``, videos
already recorded as failed), featurizes the rest one by one with the streaming decoder so
a long video never sits in memory, records each video that cannot be decoded with its
classified reason, and writes every question's text features. Progress goes to a
:class:`Reporter`; the library itself prints nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vqacache.cache_spec import FeatureStore, SamplingSpec, open_store, parse_fps, store_path
from vqacache.featurize.datasets import QuestionRecord, VideoQADataset, VideoRecord, check_videos, get_dataset
from vqacache.featurize.decode import DEFAULT_FPS, DecodeError, iter_decode_at_fps
from vqacache.featurize.encoders import Encoder, get_encoder

EXIT_OK = 0
EXIT_SOME_FAILED = 3


@dataclass(frozen=True)
class FeaturizeConfig:
    """Everything ``vqa-featurize`` needs. Only some fields enter the spec (see FeatureSpec)."""

    dataset: str
    encoder: str
    cache_root: Path
    data_root: Path | None = None
    weights: str | None = None
    splits: tuple[str, ...] = ()
    """Splits to featurize; empty = every split the dataset has on disk."""
    patches: bool = True
    patch_pool: int = 1
    fps: Fraction = DEFAULT_FPS
    short_side: int | None = 256
    dtype: str = "float16"
    batch_size: int | None = None
    """Frames per encoder forward; None = the encoder's hint. Operational: not in the spec."""
    device: str = "cpu"
    retry_failed: bool = False
    max_videos: int | None = None
    """Featurize at most this many (new) videos; for smoke tests and benchmarks."""


@dataclass
class FeaturizeResult:
    store_path: Path
    fingerprint: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    decoded_frames: int = 0
    questions: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0, "write": 0.0})
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def summary_line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.done} videos done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames} frames in {self.seconds:.1f} s ({fps:.1f} frames/s); "
            f"{self.questions} questions; store {self.store_path}"
        )


class Reporter(Protocol):
    """Receives progress; the CLI renders it with rich."""

    def start(self, total_videos: int, description: str) -> None: ...
    def video_done(self, video_id: str, frames: int, failed: str | None) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, total_videos: int, description: str) -> None:
        pass

    def video_done(self, video_id: str, frames: int, failed: str | None) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


def featurize(config: FeaturizeConfig, reporter: Reporter | None = None) -> FeaturizeResult:
    """Featurize ``config.dataset`` with ``config.encoder`` into the cache. See module doc."""
    reporter = reporter or SilentReporter()
    t_start = time.perf_counter()
    dataset = get_dataset(config.dataset, config.data_root)
    splits = config.splits or dataset.splits()
    for split in splits:
        check_videos(dataset, split)
    encoder = get_encoder(
        config.encoder,
        config.weights,
        device=config.device,
        patches=config.patches,
        patch_pool=config.patch_pool,
        decode_short_side=config.short_side,
    )
    spec = encoder.feature_spec(SamplingSpec(parse_fps(config.fps)), dtype=config.dtype)
    path = store_path(config.cache_root, dataset.name, encoder.name, spec.fingerprint())
    store = open_store(path, "a", spec=spec, dataset=dataset.name)
    result = FeaturizeResult(store_path=path, fingerprint=spec.fingerprint())

    videos = _videos_of(dataset, splits)
    complete = set(store.complete_videos())
    failed_before = set(store.failures())
    todo = [
        v for v in videos if v.video_id not in complete and (config.retry_failed or v.video_id not in failed_before)
    ]
    result.skipped = len(videos) - len(todo)
    if config.max_videos is not None:
        todo = todo[: config.max_videos]
    batch_size = config.batch_size or encoder.batch_size_hint

    reporter.start(len(todo), f"{dataset.name} / {encoder.name}")
    for video in todo:
        frames, reason = _featurize_video(store, encoder, video, config, batch_size, result.timings)
        if reason is None:
            result.done += 1
            result.frames += frames
        else:
            result.failed += 1
            result.failures[video.video_id] = reason
        reporter.video_done(video.video_id, frames, reason)
    reporter.finish()

    t_text = time.perf_counter()
    for split in splits:
        result.questions += _write_questions(store, encoder, split, dataset.questions(split))
    result.timings["text"] = time.perf_counter() - t_text
    result.seconds = time.perf_counter() - t_start
    return result


def _videos_of(dataset: VideoQADataset, splits: tuple[str, ...]) -> list[VideoRecord]:
    seen: dict[str, VideoRecord] = {}
    for split in splits:
        for video in dataset.videos(split):
            seen.setdefault(video.video_id, video)
    return [seen[k] for k in sorted(seen)]


def _featurize_video(
    store: FeatureStore,
    encoder: Encoder,
    video: VideoRecord,
    config: FeaturizeConfig,
    batch_size: int,
    timings: dict[str, float],
) -> tuple[int, str | None]:
    """Decode, encode and write one video. Returns (frames written, failure reason or None)."""
    expander = RepeatExpander()
    info: dict[str, Any] = {}
    try:
        with store.write_video(video.video_id) as writer:
            chunks = iter_decode_at_fps(video.path, fps=config.fps, short_side=config.short_side)
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = next(chunks, None)
                except DecodeError:
                    raise
                except Exception as exc:  # a file no check foresaw: record it, never crash the run
                    raise DecodeError("decode-error", f"{type(exc).__name__}: {exc}") from exc
                timings["decode"] += time.perf_counter() - t0
                if chunk is None:
                    break
                info = chunk.info.to_dict()
                t0 = time.perf_counter()
                unique = _encode_in_batches(encoder, chunk.frames[~chunk.is_repeat], batch_size)
                features = expander.expand(unique, chunk.is_repeat)
                timings["encode"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                writer.append(pts=chunk.pts, src_index=chunk.src_index, is_repeat=chunk.is_repeat, **features)
                timings["write"] += time.perf_counter() - t0
            writer.group.attrs.update({"source": info})
            n_frames = writer.n_frames
    except DecodeError as exc:
        store.record_failure(video.video_id, exc.reason, str(exc))
        return 0, f"{exc.reason}: {exc}"
    return n_frames, None


def _encode_in_batches(encoder: Encoder, frames: np.ndarray, batch_size: int) -> dict[str, torch.Tensor]:
    """Encode (N, H, W, 3) uint8 frames in batches; returns each output concatenated (N, ...)."""
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, len(frames), batch_size):
        for name, value in encoder.encode_frames(frames[start : start + batch_size]).items():
            parts[name].append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


class RepeatExpander:
    """Expands features of unique frames back to every output frame, across chunks.

    A video slower than the sampling fps repeats source frames; each is encoded once.
    ``is_repeat[k]`` says output frame k shows the same source frame as frame k-1, which
    for the first frame of a chunk is the last frame of the previous chunk.
    """

    def __init__(self) -> None:
        self._last: dict[str, torch.Tensor] | None = None

    def expand(self, unique: dict[str, torch.Tensor], is_repeat: np.ndarray) -> dict[str, torch.Tensor]:
        """``unique``: name -> (U, ...) for the U non-repeated frames; returns name -> (T, ...)."""
        is_repeat = np.asarray(is_repeat, dtype=bool)
        if not unique and self._last is not None:  # a chunk made only of repeats
            unique = {name: last[None][:0] for name, last in self._last.items()}
        if self._last is None and is_repeat[0]:
            raise ValueError("the first frame of a video cannot be a repeat")
        # 1-based row of each output frame's unique frame in this chunk; 0 = previous chunk's last
        rows = torch.from_numpy(np.cumsum(~is_repeat))
        out = {}
        for name, values in unique.items():
            head = self._last[name][None] if self._last is not None else values[:1]  # row 0
            out[name] = torch.cat([head, values])[rows]
        self._last = {name: values[-1] for name, values in out.items()}
        return out


def _write_questions(store: FeatureStore, encoder: Encoder, split: str, questions: list[QuestionRecord]) -> int:
    """Encode and store the text features of every question, one bundle per (split, video).

    Texts repeat a lot (candidates such as "yes", "two", "red"), so each group of videos
    encodes its distinct strings once.
    """
    by_video: dict[str, list[QuestionRecord]] = defaultdict(list)
    for q in questions:
        by_video[q.video_id].append(q)
    todo = [v for v in sorted(by_video) if not store.has_question_bundle(split, v)]
    for start in range(0, len(todo), TEXT_GROUP_VIDEOS):
        group = todo[start : start + TEXT_GROUP_VIDEOS]
        texts = TextFeatures(encoder, [t for v in group for q in by_video[v] for t in (q.question, *q.candidates)])
        for video_id in group:
            records = by_video[video_id]
            store.write_questions(split, video_id, [_entry(q) for q in records], texts.bundle(records))
    return len(questions)


TEXT_GROUP_VIDEOS = 64
"""Videos whose distinct texts are encoded together (bounds memory: ~40 KiB per text)."""
TEXT_BATCH = 64
"""Texts per text-tower forward."""


class TextFeatures:
    """Text features of a set of distinct strings, encoded once each, sorted by length so a
    batch pads little; assembled into question bundles by :meth:`bundle`."""

    def __init__(self, encoder: Encoder, texts: list[str]) -> None:
        distinct = sorted(set(texts), key=lambda t: (len(t), t))
        self.emb: dict[str, torch.Tensor] = {}  # text -> (E,)
        self.tokens: dict[str, torch.Tensor] = {}  # text -> (L_text, W)
        for start in range(0, len(distinct), TEXT_BATCH):
            batch = distinct[start : start + TEXT_BATCH]
            out = encoder.encode_text(batch)
            for i, text in enumerate(batch):
                self.emb[text] = out["emb"][i]
                self.tokens[text] = out["tokens"][i, : int(out["length"][i])]
        self.width = encoder.dims["text_tokens"][0]

    def _stack(self, texts: list[str], longest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n,) texts -> emb (n, E), tokens (n, longest, W) zero-padded, lengths (n,)."""
        emb = torch.stack([self.emb[t] for t in texts])
        tokens = torch.zeros(len(texts), longest, self.width)
        lengths = np.array([len(self.tokens[t]) for t in texts], dtype=np.int64)
        for i, t in enumerate(texts):
            tokens[i, : lengths[i]] = self.tokens[t]
        return emb.numpy(), tokens.numpy(), lengths

    def bundle(self, records: list[QuestionRecord]) -> dict[str, np.ndarray]:
        """The arrays of FeatureStore.write_questions for one video's questions."""
        questions = [q.question for q in records]
        longest = max(len(self.tokens[t]) for t in questions)
        text, text_tokens, text_len = self._stack(questions, longest)
        arrays = {"text": text, "text_tokens": text_tokens, "text_len": text_len}
        n_cand = max(len(q.candidates) for q in records)
        if n_cand == 0:
            return arrays
        cands = [c for q in records for c in q.candidates]
        longest = max(len(self.tokens[c]) for c in cands)
        emb, tokens, lengths = self._stack(cands, longest)
        cand = np.zeros((len(records), n_cand, emb.shape[1]), emb.dtype)
        cand_tokens = np.zeros((len(records), n_cand, longest, self.width), tokens.dtype)
        cand_len = np.zeros((len(records), n_cand), np.int64)  # 0 marks a padding slot
        row = 0
        for i, q in enumerate(records):
            c = len(q.candidates)
            cand[i, :c], cand_tokens[i, :c], cand_len[i, :c] = emb[row : row + c], tokens[row : row + c], lengths[row : row + c]
            row += c
        arrays.update(cand=cand, cand_tokens=cand_tokens, cand_len=cand_len)
        return arrays


def _entry(q: QuestionRecord) -> dict[str, Any]:
    return {
        "qid": q.qid,
        "question": q.question,
        "candidates": list(q.candidates),
        "answer": q.answer,
        "qtype": q.qtype,
        "start": q.start,
        "end": q.end,
    }
