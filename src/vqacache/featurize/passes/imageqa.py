"""Pass 3 (``--imageqa blip|albef``): the image-QA teacher's per-frame answer probabilities,
added to every question bundle of the first store that lacks them for this teacher spec.

A worker death is not retried here: its videos are recorded as failed for this run (a rerun
redoes them; nothing of theirs was published)."""

from __future__ import annotations

from vqacache.cache_spec import FeatureStore, TeacherSpec, UsageError
from vqacache.featurize.config import shard_size
from vqacache.featurize.datasets import answer_vocab_of
from vqacache.featurize.imageqa.options import TeacherChoice
from vqacache.featurize.imageqa.task import ImageQAResult, ImageQATask, TeacherArgs, prepare_teacher, run_imageqa
from vqacache.featurize.passes.context import RunContext
from vqacache.featurize.progress import VideoProgress
from vqacache.featurize.shard import DecodeArgs


def imageqa_pass(ctx: RunContext, store: FeatureStore, frames_fps: str | None, teacher: TeacherChoice | None) -> None:
    """Score every question bundle of ``store`` lacking this teacher's probabilities.

    ``frames_fps``: the run's folders of frames' rate, as the features pass decoded them;
    ``teacher``: the checked ``--imageqa*`` flags, with the tokenizer to use.
    """
    config, dataset, result, runner = ctx.config, ctx.dataset, ctx.result, ctx.runner
    open_ended = any(not q.candidates for split in ctx.splits for q in dataset.questions(split))
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
    for split in ctx.splits:
        todo = [v for v in dataset.videos(split)
                if store.has_question_bundle(split, v.video_id) and not store.has_imageqa(split, v.video_id, teacher_fp)]
        if not todo:
            continue
        size = shard_size(config, len(todo), runner.workers)
        tasks = [
            (shard, ImageQATask(str(store.path), store.fingerprint, teacher_fp, args, decode, split,
                                tuple((v.video_id, str(v.path)) for v in shard), vocab, ctx.run_id, config.lease_ttl_s,
                                runner.progress_topic))
            for shard in (todo[i : i + size] for i in range(0, len(todo), size))
        ]
        progress = VideoProgress(ctx.reporter)
        ctx.reporter.start(len(todo), f"image-QA {config.imageqa} / {split}")
        for shard, outcome in runner.map(run_imageqa, tasks, on_video=progress.video):
            if isinstance(outcome, ImageQAResult):
                result.imageqa_done += len(outcome.done)
                result.imageqa_lost += len(outcome.lost)
                result.imageqa_failures.update({f"{split}/{v}": why for v, why in outcome.failed.items()})
                for name, seconds in outcome.timings.items():
                    result.timings[name] += seconds
                progress.videos(shard, outcome.done, outcome.failed)
            else:  # the worker died: no retry for the teacher pass; rerun to redo these videos
                for v in shard:
                    store.break_lease(v.video_id, ctx.run_id, kind="imageqa")
                    if not store.has_imageqa(split, v.video_id, teacher_fp):
                        why = f"crashed: the worker process died while scoring it ({type(outcome).__name__})"
                        result.imageqa_failures[f"{split}/{v.video_id}"] = why
                        progress.video(v.video_id, 0, why)
        ctx.reporter.finish()
