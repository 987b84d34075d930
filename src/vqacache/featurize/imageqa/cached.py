"""The ALBEF teacher's per-frame probabilities recomputed from cached ViT tokens (no decoding).

After :mod:`.finetune`, every question's probabilities are scored again with the fine-tuned
teacher: the frames are chosen by the same rule as the decoding pass (``frame_indices`` over
the target store's frames, :class:`~vqacache.featurize.imageqa.task._VideoPlan`), their tokens
read from the ``albef`` token store (``cls_hidden`` + unpooled ``patch``) instead of decoding and
encoding the video, and ranked by the teacher's own ``rank_many``; the arrays go into the target
store's question bundles exactly as the decoding pass writes them, under a teacher spec of their
own (the fine-tuned checkpoint's sha256, ``extra.tokens_from`` naming the token store's
fingerprint and ``extra.finetune`` the fine-tuning run). The target store's frames must be the
token store's (same pts). A run log records the frames read from the cache and the frames
decoded (always 0).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from vqacache.cache_spec import FeatureStore, TeacherSpec, vocab_sha256
from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.imageqa.albef import AlbefImages, AlbefTeacher
from vqacache.featurize.imageqa.finetune import cached_images, check_token_store
from vqacache.featurize.imageqa.task import ImageQAResult, _VideoPlan


class CachedTokensTeacher:
    """The teacher with its vision pass replaced by reads from the token store: ``encode_images``
    takes stored frame rows (F,) of ``video_id`` instead of decoded pixels."""

    def __init__(self, teacher: AlbefTeacher, store: FeatureStore, video_id: str) -> None:
        self.teacher, self.store, self.video_id = teacher, store, video_id

    def encode_images(self, rows: np.ndarray) -> AlbefImages:
        return cached_images(self.store, self.video_id, np.asarray(rows, dtype=np.int64).reshape(-1),
                             self.teacher.device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.teacher, name)


def recompute_probabilities(
    teacher: AlbefTeacher, tokens: FeatureStore, target: FeatureStore, splits: list[str], frames: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Score every question bundle of ``splits`` in ``target`` from ``tokens``; returns counts.

    Open-ended questions rank over the answer vocabulary an earlier teacher pass recorded in
    either store (``teacher_vocab``), top ``teacher.k_test``."""
    check_token_store(tokens)
    vocab_list = target.teacher_vocab() or tokens.teacher_vocab()
    plans: list[tuple[str, str, _VideoPlan]] = []
    for split in splits:
        for video_id in sorted({target.read_question(q).video_id for q in target.questions(split)}):
            if target.has_question_bundle(split, video_id) and tokens.is_complete(video_id):
                plans.append((split, video_id, _VideoPlan.build(target, split, video_id, frames)))
    if not plans:
        raise UsageError(f"--splits {','.join(splits)}: no question bundle of {target.path} has its video in {tokens.path}")
    open_ended = any(not q.candidates for _, _, p in plans for q in p.rows)
    if open_ended and not vocab_list:
        raise UsageError("open-ended questions need the answer vocabulary an earlier teacher pass recorded "
                         f"(vqa-featurize --imageqa ...); neither {target.path} nor {tokens.path} has one")
    vocab = teacher.prepare_vocab(list(vocab_list)) if open_ended else None
    k = teacher.k_test if open_ended else 0
    spec = TeacherSpec(
        teacher=teacher.name, model=teacher.teacher_spec(), frames=frames, decode_short_side=None,
        vocab_size=len(vocab_list) if open_ended else None,
        vocab_sha256=vocab_sha256(list(vocab_list)) if open_ended else None, k=k if open_ended else None,
        extra={"tokens_from": tokens.fingerprint, **extra},
    )
    fp = target.set_teacher_spec(spec, list(vocab_list) if open_ended else None)
    result = ImageQAResult()
    t0 = time.perf_counter()
    questions = 0
    for split, video_id, plan in plans:
        tok_pts = np.asarray(tokens.video_arrays(video_id)["pts"][:], dtype=np.float64)
        if len(tok_pts) != len(plan.pts) or not np.allclose(tok_pts, plan.pts, atol=1e-6):
            result.failed[video_id] = "frame-mismatch: the token store's frames are not the target store's"
            continue
        rows = {int(i): np.int64(i) for s in plan.frame_sets for i in s}  # stored row -> itself
        arrays = plan.score(CachedTokensTeacher(teacher, tokens, video_id), rows, vocab, k, result)
        target.write_imageqa(split, video_id, fp, arrays)
        result.done[video_id] = len(plan.rows)
        questions += len(plan.rows)
    record = {
        "kind": "imageqa-from-cached-tokens", "teacher_fingerprint": fp, "tokens_store": str(tokens.path),
        "videos": len(result.done), "questions": questions, "failed": result.failed,
        "frames_read_from_cache": result.frames_encoded, "frames_decoded": 0,
        "seconds": time.perf_counter() - t0,
    }
    target.write_run_log(f"imageqa-cached-{uuid.uuid4().hex[:12]}", record)
    return record
