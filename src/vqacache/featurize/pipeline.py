"""Stage one: dataset -> shards of videos -> workers (decode, encode, write) -> store.

:func:`featurize` is what ``vqa-featurize`` calls. It resolves the dataset and the spec,
opens (or creates) the store for the (dataset, spec) pair, cuts the videos still to do into
shards and runs :func:`vqacache.featurize.shard.run_shard` on each: on Dask workers (a
LocalCluster by default, or ``scheduler``), or in this process with ``workers=0``. Workers
write what they compute and return small metadata; progress goes to a :class:`Reporter`.

A task that kills its worker is not retried as a whole: its videos that are not complete
are resubmitted one per task, so the one video that kills a worker again is recorded as
``crashed`` and everything else is done.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import threading
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from vqacache.cache_spec import (
    FeatureSpec,
    FeatureStore,
    StoreError,
    TeacherSpec,
    UsageError,
    open_store,
    parse_fps,
    store_path,
)
from vqacache.featurize.datasets import (
    QuestionRecord,
    VideoQADataset,
    VideoRecord,
    answer_vocab_of,
    check_videos,
    get_dataset,
    parse_dataset_options,
)
from vqacache.featurize.decode import DEFAULT_FPS
from vqacache.featurize.device import check_device_options
from vqacache.featurize.encoders import resolve_name
from vqacache.featurize.imageqa.options import TeacherChoice, check_teacher_options
from vqacache.featurize.imageqa.task import (
    DEFAULT_FRAMES,
    DEFAULT_K,
    ImageQAResult,
    ImageQATask,
    TeacherArgs,
    prepare_teacher,
    run_imageqa,
)
from vqacache.featurize.shard import (
    DecodeArgs,
    EncoderArgs,
    ShardResult,
    ShardTask,
    Target,
    TextTask,
    prepare_worker,
    run_shard,
    run_text,
)

EXIT_OK = 0
EXIT_SOME_FAILED = 3
TEXT_TASK_VIDEOS = 256
"""Videos per text task."""


@dataclass(frozen=True)
class FeaturizeConfig:
    """Everything ``vqa-featurize`` needs. Only some fields enter the spec (see FeatureSpec)."""

    dataset: str
    encoder: str
    """An encoder name, or several as ``a,b,c``: each video is decoded once and fed to all."""
    cache_root: Path
    data_root: Path | None = None
    dataset_options: tuple[str, ...] = ()
    """``KEY=VALUE`` options of the dataset adapter (e.g. ``video_root=/data/videos``, ``task=count``)."""
    weights: str | None = None
    splits: tuple[str, ...] = ()
    """Splits to featurize; empty = every split the dataset has on disk."""
    patches: bool = True
    patch_pool: int = 1
    fps: Fraction = DEFAULT_FPS
    short_side: int | None = 256
    dtype: str = "float16"
    compute_dtype: str = "auto"
    """float32, float16 or bfloat16 (autocast); auto: float16 on CUDA, float32 on CPU. In the spec."""
    batch_size: int | None = None
    """Frames per encoder forward; None = the encoder's hint. Operational: not in the spec."""
    device: str = "auto"
    """auto (CUDA if the worker sees a GPU), cpu, cuda or cuda:N. Not in the spec."""
    retry_failed: bool = False
    workers: int | None = None
    """Local Dask workers (None: one per GPU, or one on CPU); 0 runs in this process."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler; overrides ``workers``."""
    jobs: Any = None
    """``--cluster slurm|pbs|...``: a :class:`vqacache.featurize.cluster.JobOptions` (None: local)."""
    shard_videos: int | None = None
    """Videos per task; None picks a size that keeps every worker busy."""
    decode_processes: int = 1
    decode_timeout_s: float = 300.0
    lease_ttl_s: float = 600.0
    imageqa: str | None = None
    """Image-QA teacher (``blip``, ``albef``) whose per-frame answer probabilities are added to
    the question bundles; None: none. Its spec is recorded apart (see TeacherSpec)."""
    imageqa_weights: str | None = None
    imageqa_frames: int = DEFAULT_FRAMES
    imageqa_k: int = DEFAULT_K
    imageqa_tokenizer: str | None = None
    imageqa_score: str | None = None
    """The teacher's answer score (None: the teacher's default; see ``--imageqa-score``)."""


@dataclass
class FeaturizeResult:
    store_path: Path
    fingerprint: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0
    """Videos whose lease another run took over mid-way (this run stalled): left to that run."""
    frames: int = 0
    questions: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: dict[str, str] = field(default_factory=dict)
    dashboard: str | None = None
    store_paths: list[Path] = field(default_factory=list)
    """Every store written (``--encoder a,b,c``: one per encoder; ``store_path`` is the first)."""
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """store path -> videos completed in it by this run."""
    imageqa_done: int = 0
    imageqa_failures: dict[str, str] = field(default_factory=dict)
    """``{"<split>/<video id>": reason}``: videos whose questions the teacher could not score."""
    imageqa_lost: int = 0
    """Videos whose image-QA lease another run took over before this one published (left to it)."""
    jobs_lost: int | None = None
    """``--cluster slurm|...``: batch jobs lost (preempted, cancelled) and replaced or not; None: no jobs."""

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed or self.imageqa_failures else EXIT_OK

    def summary_line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        lost = f", {self.lost} lost to another run" if self.lost else ""
        parts = [
            f"{self.done} videos done, {self.skipped} skipped, {self.failed} failed{lost}",
            f"{self.frames} frames in {self.seconds:.1f} s ({fps:.1f} frames/s)",
            f"{self.questions} questions",
        ]
        if self.imageqa_done or self.imageqa_failures or self.imageqa_lost:
            left = f", {self.imageqa_lost} left to another run" if self.imageqa_lost else ""
            parts.append(f"image-QA: {self.imageqa_done} videos scored, {len(self.imageqa_failures)} failed{left}")
        if self.jobs_lost is not None:
            parts.append(f"{self.jobs_lost} jobs lost")
        parts.append(f"store {self.store_path}" if len(self.store_paths) <= 1
                     else f"stores {', '.join(str(p) for p in self.store_paths)}")
        return "; ".join(parts)

    def add(self, shard: ShardResult) -> None:
        self.done += len(shard.done)
        self.frames += sum(shard.done.values())
        self.skipped += len(shard.skipped)
        self.lost += len(shard.lost)
        self.failed += len(shard.failed)
        self.failures.update(shard.failed)
        for name, seconds in shard.timings.items():
            self.timings[name] += seconds
        for path, n in shard.written.items():
            self.written[path] += n


class Reporter(Protocol):
    """Receives progress; the CLI renders it with rich."""

    def start(self, total_videos: int, description: str) -> None: ...
    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, total_videos: int, description: str) -> None:
        pass

    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


def featurize(config: FeaturizeConfig, reporter: Reporter | None = None) -> FeaturizeResult:
    """Featurize ``config.dataset`` with ``config.encoder`` into the cache. See module doc."""
    reporter = reporter or SilentReporter()
    t_start = time.perf_counter()
    dataset = get_dataset(config.dataset, config.data_root, **parse_dataset_options(config.dataset, config.dataset_options))
    teacher = None  # every --imageqa* flag, before any video is touched
    if config.imageqa:
        teacher = check_teacher_options(config.imageqa, config.imageqa_weights, config.imageqa_tokenizer,
                                        config.imageqa_score, dataset)
    splits = config.splits or dataset.splits()
    for split in splits:
        check_videos(dataset, split)
    check_unique_qids(dataset, splits)
    names = encoder_names(config.encoder)
    for name in names:
        resolve_name(name)  # a typo fails here, before any cluster starts
    args = [
        EncoderArgs(
            name=name,
            weights=config.weights,
            device=config.device,
            patches=config.patches,
            patch_pool=config.patch_pool,
            decode_short_side=config.short_side,
            compute_dtype=config.compute_dtype,
        )
        for name in names
    ]
    fps = str(parse_fps(config.fps))
    check_device_options(config.device, config.compute_dtype)
    if teacher is not None and teacher.note:
        reporter.message(teacher.note)
    if config.workers == 0 and not config.scheduler:
        return _run(config, dataset, splits, args, fps, _InlineRunner(), reporter, t_start, teacher)
    from vqacache.featurize.cluster import connect, scheduler_warnings  # dask only when used

    if config.jobs is not None and not config.scheduler:
        from vqacache.featurize.cluster import connect_jobs

        with connect_jobs(config.jobs, reporter.message) as (client, watch):
            runner = _DaskRunner(client, died_with_job=watch.died_with_job)
            result = _run(config, dataset, splits, args, fps, runner, reporter, t_start, teacher)
            result.jobs_lost = len(watch.lost)
            return result
    with connect(config.scheduler, config.workers, config.device) as client:
        reporter.message(f"dask dashboard: {client.dashboard_link}")
        if config.scheduler:
            for warning in scheduler_warnings(client):
                reporter.message(f"warning: {warning}")
        return _run(config, dataset, splits, args, fps, _DaskRunner(client), reporter, t_start, teacher)


def encoder_names(value: str) -> list[str]:
    """``--encoder a,b,c`` -> ["a", "b", "c"]: each video is decoded once for all of them."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError("--encoder needs at least one name")
    if len(set(names)) != len(names):
        raise UsageError(f"--encoder names an encoder twice: {value!r}")
    return names


def _run(config, dataset, splits, args, fps, runner, reporter, t_start, teacher=None) -> FeaturizeResult:  # noqa: ANN001
    videos = _videos_of(dataset, splits)
    decode = DecodeArgs(fps=fps, short_side=config.short_side, processes=config.decode_processes,
                        timeout_s=config.decode_timeout_s, frames_fps=frames_fps_of(videos))
    specs = [FeatureSpec.from_json(runner.setup(prepare_worker, a, decode, config.dtype)) for a in args]
    t_setup = time.perf_counter() - t_start
    stores = [
        open_store(store_path(config.cache_root, dataset.name, spec.encoder, spec.fingerprint()), "a",
                   spec=spec, dataset=dataset.name)
        for spec in specs
    ]
    for s in stores:  # once per run: the numbers may move with these packages' major.minor
        drift = s.version_drift()
        if drift:
            reporter.message(f"warning: appending to {s.path}, made with other versions: {', '.join(drift)} "
                             "(the spec is the same; features may differ in the last digits)")
    store = stores[0]
    result = FeaturizeResult(store_path=store.path, fingerprint=store.fingerprint, dashboard=runner.dashboard,
                             store_paths=[s.path for s in stores])
    result.timings["setup"] = t_setup
    run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    targets = tuple(Target(str(s.path), s.fingerprint, a) for s, a in zip(stores, args))

    needed = [_Needed(s, config.retry_failed) for s in stores]
    todo = [v for v in videos if any(n.needs(v.video_id) for n in needed)]
    result.skipped = len(videos) - len(todo)
    progress = _Progress(reporter)

    def task(shard: list[VideoRecord]) -> ShardTask:
        return ShardTask(
            targets=targets, decode=decode, videos=tuple((v.video_id, str(v.path)) for v in shard),
            batch_size=config.batch_size, owner=run_id, retry_failed=config.retry_failed,
            lease_ttl_s=config.lease_ttl_s, progress_topic=runner.progress_topic,
        )

    def finished(video: VideoRecord) -> bool:
        return all(s.is_complete(video.video_id) for s in stores)

    size = config.shard_videos or max(1, min(16, len(todo) // max(1, 4 * runner.workers)))
    shards = [todo[i : i + size] for i in range(0, len(todo), size)]
    reporter.start(len(todo), f"{dataset.name} / {' + '.join(s.spec.encoder for s in stores)}")
    crashed: list[list[VideoRecord]] = []
    for shard, outcome in runner.map(run_shard, [(s, task(s)) for s in shards], on_video=progress.video):
        if isinstance(outcome, ShardResult):
            result.add(outcome)
            progress.shard(shard, outcome)
        elif len(shard) > 1 or runner.died_with_job(outcome):
            # a worker died (or its batch job was lost, --cluster slurm|...): retry its unfinished videos one per task
            unfinished = [v for v in shard if not finished(v)]
            for v in unfinished:  # the dead worker's leases (this run's) would block the retry
                for s in stores:
                    s.break_lease(v.video_id, run_id)
            crashed += [[v] for v in unfinished]
            done = [v for v in shard if v not in unfinished]
            result.done += len(done)
            result.frames += sum(store.video_arrays(v.video_id)["pts"].shape[0] for v in done)
            progress.shard(done, None)
        else:
            _record_crash(stores, shard[0], outcome, result, progress, run_id)
    while crashed:  # again while batch jobs are lost under them (--cluster slurm|...)
        retry, crashed = crashed, []
        for shard, outcome in runner.map(run_shard, [(s, task(s)) for s in retry], on_video=progress.video):
            if isinstance(outcome, ShardResult):
                result.add(outcome)
                progress.shard(shard, outcome)
            elif runner.died_with_job(outcome):
                for s in stores:
                    s.break_lease(shard[0].video_id, run_id)
                crashed.append(shard)
            else:
                _record_crash(stores, shard[0], outcome, result, progress, run_id)
    reporter.finish()

    t_text = time.perf_counter()
    for s, a, spec in zip(stores, args, specs):
        questions = sum(_write_text(s, dataset, split, a, spec, runner) for split in splits)
    result.questions = questions
    result.timings["text"] = time.perf_counter() - t_text
    if config.imageqa:
        t_teacher = time.perf_counter()
        _imageqa(store, dataset, splits, config, runner, reporter, run_id, result, decode.frames_fps, teacher)
        result.timings["imageqa"] = time.perf_counter() - t_teacher
    result.seconds = time.perf_counter() - t_start
    for s in stores:
        _log_run(s, run_id, config, result, runner)
    return result


class _Needed:
    """Whether a store still needs a video: not complete, and not failed (unless retrying)."""

    def __init__(self, store: FeatureStore, retry_failed: bool) -> None:
        self.complete = set(store.complete_videos())
        self.failed = set() if retry_failed else set(store.failures())

    def needs(self, video_id: str) -> bool:
        return video_id not in self.complete and video_id not in self.failed


class _Progress:
    """Feeds the reporter once per video: from per-video events as they arrive (any thread),
    and from each shard's result for whatever its events did not cover (events may arrive
    late, or not at all); a video is never counted twice."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.counted: set[str] = set()
        self.lock = threading.Lock()

    def video(self, video_id: str, frames: int, failure: str | None) -> None:
        with self.lock:
            if video_id in self.counted:
                return
            self.counted.add(video_id)
            self.reporter.advance(1, frames, {video_id: failure} if failure else {})

    def shard(self, shard: list[VideoRecord], outcome: ShardResult | None) -> None:
        """Count the shard's videos not counted yet (``outcome`` None: they are complete)."""
        for video in shard:
            vid = video.video_id
            if outcome is None:
                self.video(vid, 0, None)
            elif vid in outcome.done:
                self.video(vid, outcome.done[vid], None)
            else:
                self.video(vid, 0, outcome.failed.get(vid))


def _never(error: BaseException) -> bool:
    return False


def _record_crash(stores: list[FeatureStore], video: VideoRecord, error: BaseException, result: FeaturizeResult,
                  progress: _Progress, run_id: str) -> None:
    for store in stores:
        store.break_lease(video.video_id, run_id)  # its holder died with the worker
    incomplete = [s for s in stores if not s.is_complete(video.video_id)]
    if not incomplete:
        result.done += 1
        frames = stores[0].video_arrays(video.video_id)["pts"].shape[0]
        result.frames += frames
        progress.video(video.video_id, frames, None)
        return
    message = f"the worker process died while featurizing it ({type(error).__name__}: {error})"
    for store in incomplete:
        store.record_failure(video.video_id, "crashed", message)
    result.failed += 1
    result.failures[video.video_id] = f"crashed: {message}"
    progress.video(video.video_id, 0, f"crashed: {message}")


def _write_text(store: FeatureStore, dataset: VideoQADataset, split: str, args: EncoderArgs, spec: FeatureSpec, runner) -> int:  # noqa: ANN001
    by_video: dict[str, list[QuestionRecord]] = defaultdict(list)
    for q in dataset.questions(split):
        by_video[q.video_id].append(q)
    todo = [v for v in sorted(by_video) if not store.has_question_bundle(split, v)]
    tasks = []
    for i in range(0, len(todo), TEXT_TASK_VIDEOS):
        questions = tuple(q for v in todo[i : i + TEXT_TASK_VIDEOS] for q in by_video[v])
        tasks.append((None, TextTask(str(store.path), spec.fingerprint(), args, split, questions)))
    for _, outcome in runner.map(run_text, tasks):
        if isinstance(outcome, BaseException):
            raise outcome
    return sum(len(qs) for qs in by_video.values())


def _imageqa(store: FeatureStore, dataset: VideoQADataset, splits: tuple[str, ...], config: FeaturizeConfig,
             runner, reporter: Reporter, run_id: str, result: FeaturizeResult,  # noqa: ANN001
             frames_fps: str | None, teacher: TeacherChoice | None = None) -> None:
    """Add the teacher's per-frame answer probabilities to every question bundle lacking them
    (``frames_fps``: the run's folders of frames' rate, as the features pass decoded them;
    ``teacher``: the checked flags, with the tokenizer to use)."""
    open_ended = any(not q.candidates for split in splits for q in dataset.questions(split))
    vocab = tuple(answer_vocab_of(dataset)) if open_ended else None
    if open_ended and not vocab:
        raise UsageError(f"dataset {dataset.name} has open-ended questions but no answer vocabulary "
                         "(it is built from the train split: is its annotation file there?)")
    k = min(config.imageqa_k, len(vocab)) if vocab else config.imageqa_k  # k_test <= the vocabulary
    args = TeacherArgs(config.imageqa, config.imageqa_weights, config.device, config.compute_dtype,
                       config.imageqa_frames, k, teacher.tokenizer if teacher else config.imageqa_tokenizer,
                       config.imageqa_score)
    fps = str(store.spec.sampling.fps)
    spec = TeacherSpec.from_json(runner.setup(prepare_teacher, args, fps, config.decode_processes,
                                              config.decode_timeout_s, vocab, frames_fps))
    teacher_fp = store.set_teacher_spec(spec, list(vocab) if vocab else None)
    decode = DecodeArgs(fps=fps, short_side=spec.decode_short_side, processes=config.decode_processes,
                        timeout_s=config.decode_timeout_s, frames_fps=frames_fps)
    for split in splits:
        todo = [v for v in dataset.videos(split)
                if store.has_question_bundle(split, v.video_id) and not store.has_imageqa(split, v.video_id, teacher_fp)]
        if not todo:
            continue
        size = config.shard_videos or max(1, min(16, len(todo) // max(1, 4 * runner.workers)))
        tasks = [
            (shard, ImageQATask(str(store.path), store.fingerprint, teacher_fp, args, decode, split,
                                tuple((v.video_id, str(v.path)) for v in shard), vocab, run_id, config.lease_ttl_s,
                                runner.progress_topic))
            for shard in (todo[i : i + size] for i in range(0, len(todo), size))
        ]
        progress = _Progress(reporter)
        reporter.start(len(todo), f"image-QA {config.imageqa} / {split}")
        for shard, outcome in runner.map(run_imageqa, tasks, on_video=progress.video):
            if isinstance(outcome, ImageQAResult):
                result.imageqa_done += len(outcome.done)
                result.imageqa_lost += len(outcome.lost)
                result.imageqa_failures.update({f"{split}/{v}": why for v, why in outcome.failed.items()})
                for name, seconds in outcome.timings.items():
                    result.timings[name] += seconds
                for v in shard:
                    progress.video(v.video_id, outcome.done.get(v.video_id, 0), outcome.failed.get(v.video_id))
            else:  # the worker died: no retry for the teacher pass; rerun to redo these videos
                for v in shard:
                    store.break_lease(v.video_id, run_id, kind="imageqa")
                    if not store.has_imageqa(split, v.video_id, teacher_fp):
                        why = f"crashed: the worker process died while scoring it ({type(outcome).__name__})"
                        result.imageqa_failures[f"{split}/{v.video_id}"] = why
                        progress.video(v.video_id, 0, why)
        reporter.finish()


def _log_run(store: FeatureStore, run_id: str, config: FeaturizeConfig, result: FeaturizeResult, runner) -> None:  # noqa: ANN001
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 3),
        "videos_done": result.done,
        "videos_written_here": result.written.get(str(store.path), 0),
        "videos_failed": result.failed,
        "videos_skipped": result.skipped,
        "frames": result.frames,
        "stage_seconds": {k: round(v, 3) for k, v in result.timings.items()},
        "imageqa": {"teacher": config.imageqa, "videos_done": result.imageqa_done,
                    "videos_failed": len(result.imageqa_failures), "videos_lost": result.imageqa_lost}
        if config.imageqa else None,
        "settings": {
            "batch_size": config.batch_size,
            "workers": runner.workers,
            "scheduler": config.scheduler,
            "device": config.device,
            "decode_processes": config.decode_processes,
        },
    }
    store.write_run_log(run_id, record)


def check_unique_qids(dataset: VideoQADataset, splits: tuple[str, ...]) -> None:
    """Refuse a dataset listing one question id twice (the store keys questions by qid), naming
    both records, before any work."""
    seen: dict[str, QuestionRecord] = {}
    for split in splits:
        for q in dataset.questions(split):
            first = seen.setdefault(q.qid, q)
            if first is not q:
                raise UsageError(
                    f"question id {q.qid!r} is listed twice in {dataset.name}: video {first.video_id!r} "
                    f"({first.split}, {first.question[:50]!r}) and video {q.video_id!r} ({q.split}, {q.question[:50]!r})"
                )


def frames_fps_of(videos: list[VideoRecord]) -> str | None:
    """The one source frame rate of the run's folders of frames (``"3"``, ``"30000/1001"``),
    None when every video is a file: a run's decode pool has one ``frames_fps``."""
    rates = sorted({v.frame_rate for v in videos if v.frame_rate is not None})
    if len(rates) > 1:
        raise UsageError(f"the folders of frames of one run must share one frame rate, got "
                         f"{', '.join(map(str, rates))} fps; featurize them in separate runs")
    return str(rates[0]) if rates else None


def _videos_of(dataset: VideoQADataset, splits: tuple[str, ...]) -> list[VideoRecord]:
    seen: dict[str, VideoRecord] = {}
    for split in splits:
        for video in dataset.videos(split):
            seen.setdefault(video.video_id, video)
    return [seen[k] for k in sorted(seen)]


class _InlineRunner:
    """Runs tasks in this process, one after the other (``--workers 0``)."""

    workers = 1
    dashboard = None
    progress_topic = None
    died_with_job = staticmethod(_never)

    def setup(self, fn, *args):  # noqa: ANN001, ANN002
        return fn(*args)

    def map(self, fn, items, on_video=None):  # noqa: ANN001
        """``fn(item)`` for each item; ``fn(item, on_video)`` when a per-video callback is given."""
        for key, item in items:
            yield key, (fn(item) if on_video is None else fn(item, on_video))


class _DaskRunner:
    """Submits tasks to a Dask cluster; yields (key, result or the task's exception) as they complete."""

    def __init__(self, client: Any, died_with_job: Callable[[BaseException], bool] = _never) -> None:
        self.client = client
        self.died_with_job = died_with_job
        """Whether a task's error means its worker's batch job was lost (``--cluster slurm|...``):
        its videos are then retried, not recorded as crashed."""
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.dashboard = client.dashboard_link
        self.progress_topic = f"vqacache-progress-{uuid.uuid4().hex[:8]}"

    def setup(self, fn, *args):  # noqa: ANN001, ANN002
        """Run ``fn(*args)`` once on every worker there is now, at the same time (each worker's
        one-off start-up), and return its result, which must be the same everywhere: workers
        that would produce another spec are refused before any video is touched. Workers that
        join later do the same on their first shard (``run_shard`` checks the spec)."""
        workers = list(self.client.scheduler_info().get("workers", {})) or [None]
        futures = [self.client.submit(fn, *args, pure=False, workers=None if w is None else [w],
                                      allow_other_workers=w is None) for w in workers]
        results = self.client.gather(futures)
        if len(set(results)) > 1:
            raise StoreError(
                "the Dask workers produce different specs (different weights or library versions?); "
                "featurize with workers that agree, or one at a time"
            )
        return results[0]

    @contextlib.contextmanager
    def _events(self, on_video):  # noqa: ANN001
        """Per-video progress events from the workers (see ``run_shard``) while the block runs;
        ``on_video`` is called on the client's event-loop thread."""
        if on_video is None:
            yield
            return

        def handler(event) -> None:  # noqa: ANN001 - (timestamp, message)
            message = event[1]
            on_video(message["video"], message["frames"], message["failure"])

        self.client.subscribe_topic(self.progress_topic, handler)
        try:
            yield
        finally:
            self.client.unsubscribe_topic(self.progress_topic)

    def map(self, fn, items, on_video=None):  # noqa: ANN001
        """Submit ``fn(item)`` for each item; yield (key, result or worker death) as they complete.
        ``on_video`` gets the tasks' per-video events (``ShardTask.progress_topic``)."""
        from distributed import as_completed

        with self._events(on_video):
            futures = {}
            for key, item in items:
                futures[self.client.submit(fn, item, pure=False)] = key
            for future in as_completed(futures):
                key = futures.pop(future)
                if future.status == "error":
                    error = future.exception()
                    if not _is_worker_death(error):
                        raise error
                    yield key, error
                else:
                    yield key, future.result()
                future.release()


def _is_worker_death(error: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)
