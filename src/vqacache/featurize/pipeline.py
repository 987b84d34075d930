"""Stage one: dataset -> shards of videos -> workers (decode, encode, write) -> store.

:func:`featurize` is what ``vqa-featurize`` calls. It checks every flag and the dataset
before any work, picks where tasks run (:mod:`.runners`: in this process with ``workers=0``,
a LocalCluster by default, an existing ``scheduler``, or batch jobs with ``--cluster``),
opens (or creates) one store per encoder for the (dataset, spec) pair and runs the passes
(:mod:`.passes`): features, text, and the image-QA teacher when asked. Workers write what
they compute and return small metadata; progress goes to a :class:`Reporter`; each store
gets a run log.

The pieces: :class:`FeaturizeConfig` (:mod:`.config`), :class:`FeaturizeResult`
(:mod:`.result`), :class:`Reporter` (:mod:`.progress`), runners (:mod:`.runners`), passes
(:mod:`.passes`).
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import time
import uuid

from vqacache.cache_spec import FeatureSpec, FeatureStore, UsageError, open_store, parse_fps, store_path
from vqacache.featurize.config import FeaturizeConfig, encoder_names, patch_fps_of
from vqacache.featurize.datasets import (
    QuestionRecord,
    VideoQADataset,
    VideoRecord,
    check_videos,
    get_dataset,
    parse_dataset_options,
)
from vqacache.featurize.device import check_device_options
from vqacache.featurize.encoders import resolve_name
from vqacache.featurize.imageqa.options import TeacherChoice, check_teacher_options
from vqacache.featurize.passes import RunContext, features_pass, imageqa_pass, text_pass
from vqacache.featurize.progress import Reporter, SilentReporter
from vqacache.featurize.result import EXIT_OK, EXIT_SOME_FAILED, FeaturizeResult
from vqacache.featurize.runners import DaskRunner, InlineRunner, Runner
from vqacache.featurize.shard import DecodeArgs, EncoderArgs, Target, prepare_worker

__all__ = [
    "EXIT_OK", "EXIT_SOME_FAILED", "FeaturizeConfig", "FeaturizeResult", "Reporter", "SilentReporter",
    "check_unique_qids", "encoder_names", "featurize", "frames_fps_of",
]


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
            patch_fps=patch_fps_of(config),
        )
        for name in names
    ]
    parse_fps(config.fps)  # a bad --fps fails here, before any cluster starts
    check_device_options(config.device, config.compute_dtype)
    if teacher is not None and teacher.note:
        reporter.message(teacher.note)

    def run(runner: Runner) -> FeaturizeResult:
        return run_passes(config, dataset, tuple(splits), args, runner, reporter, t_start, teacher)

    if config.workers == 0 and not config.scheduler:
        return run(InlineRunner())
    from vqacache.featurize.cluster import connect, scheduler_warnings  # dask only when used

    if config.jobs is not None and not config.scheduler:
        from vqacache.featurize.cluster import connect_jobs

        with connect_jobs(config.jobs, reporter.message) as (client, watch):
            result = run(DaskRunner(client, died_with_job=watch.died_with_job))
            result.jobs_lost = len(watch.lost)
            return result
    with connect(config.scheduler, config.workers, config.device) as client:
        reporter.message(f"dask dashboard: {client.dashboard_link}")
        if config.scheduler:
            for warning in scheduler_warnings(client):
                reporter.message(f"warning: {warning}")
        return run(DaskRunner(client))


def run_passes(config: FeaturizeConfig, dataset: VideoQADataset, splits: tuple[str, ...], args: list[EncoderArgs],
               runner: Runner, reporter: Reporter, t_start: float, teacher: TeacherChoice | None = None) -> FeaturizeResult:
    """Open the stores (the workers' spec decides the fingerprint), run the passes, log the run."""
    videos = videos_of(dataset, splits)
    decode = DecodeArgs(fps=str(parse_fps(config.fps)), short_side=config.short_side,
                        processes=config.decode_processes, timeout_s=config.decode_timeout_s,
                        frames_fps=frames_fps_of(videos))
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
    result = FeaturizeResult(store_path=stores[0].path, fingerprint=stores[0].fingerprint,
                             dashboard=runner.dashboard, store_paths=[s.path for s in stores])
    result.timings["setup"] = t_setup
    ctx = RunContext(config=config, dataset=dataset, splits=splits, runner=runner, reporter=reporter,
                     run_id=new_run_id(), result=result)

    targets = tuple(Target(str(s.path), s.fingerprint, a) for s, a in zip(stores, args))
    features_pass(ctx, stores, targets, decode, videos)
    t_text = time.perf_counter()
    result.questions = text_pass(ctx, stores, args, specs)
    result.timings["text"] = time.perf_counter() - t_text
    if config.imageqa:
        t_teacher = time.perf_counter()
        imageqa_pass(ctx, stores[0], decode.frames_fps, teacher)
        result.timings["imageqa"] = time.perf_counter() - t_teacher
    result.seconds = time.perf_counter() - t_start
    for s in stores:
        log_run(s, ctx)
    return result


def new_run_id() -> str:
    """``<UTC time>-<host>-<pid>-<random>``: lease owner and run log name of this run."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def log_run(store: FeatureStore, ctx: RunContext) -> None:
    """The run's record in ``store``'s run logs: counts, stage seconds, operational settings."""
    config, result = ctx.config, ctx.result
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
            "workers": ctx.runner.workers,
            "scheduler": config.scheduler,
            "device": config.device,
            "decode_processes": config.decode_processes,
        },
    }
    store.write_run_log(ctx.run_id, record)


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


def videos_of(dataset: VideoQADataset, splits: tuple[str, ...]) -> list[VideoRecord]:
    """Every video of ``splits`` once (a video in two splits is featurized once), by id."""
    seen: dict[str, VideoRecord] = {}
    for split in splits:
        for video in dataset.videos(split):
            seen.setdefault(video.video_id, video)
    return [seen[k] for k in sorted(seen)]
