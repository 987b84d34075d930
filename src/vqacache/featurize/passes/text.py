"""Pass 2: the question bundles (text features of questions and candidates) of every split,
for each store whose encoder has a text tower; bundles already there are kept."""

from __future__ import annotations

from collections import defaultdict

from vqacache.cache_spec import FeatureSpec, FeatureStore
from vqacache.featurize.datasets import QuestionRecord
from vqacache.featurize.passes.context import RunContext
from vqacache.featurize.shard import EncoderArgs, TextTask, run_text

TEXT_TASK_VIDEOS = 256
"""Videos per text task."""


def text_pass(ctx: RunContext, stores: list[FeatureStore], args: list[EncoderArgs], specs: list[FeatureSpec]) -> int:
    """Write every missing question bundle of ``ctx.splits`` into each store (one per encoder);
    returns the number of questions listed (per store)."""
    questions = 0
    for store, a, spec in zip(stores, args, specs):
        questions = sum(_write_split(ctx, store, split, a, spec) for split in ctx.splits)
    return questions


def _write_split(ctx: RunContext, store: FeatureStore, split: str, args: EncoderArgs, spec: FeatureSpec) -> int:
    by_video: dict[str, list[QuestionRecord]] = defaultdict(list)
    for q in ctx.dataset.questions(split):
        by_video[q.video_id].append(q)
    todo = [v for v in sorted(by_video) if not store.has_question_bundle(split, v)]
    tasks = []
    for i in range(0, len(todo), TEXT_TASK_VIDEOS):
        questions = tuple(q for v in todo[i : i + TEXT_TASK_VIDEOS] for q in by_video[v])
        tasks.append((None, TextTask(str(store.path), spec.fingerprint(), args, split, questions)))
    for _, outcome in ctx.runner.map(run_text, tasks):
        if isinstance(outcome, BaseException):
            raise outcome
    return sum(len(qs) for qs in by_video.values())
