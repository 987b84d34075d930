"""Which questions a split has, where their features live, and which ones are missing.

The question list of a split comes from one of two places:

* **the text store** (default): every complete question bundle of the split in the store of
  the ``text`` role (:mod:`vqacache.heads.stores`), with the metadata stored beside it;
* **a dataset adapter**: a list of :class:`Question` (the CLI converts the adapter's
  records; heads never import featurize). Answers, types and segments then come from the
  annotations, and each question is looked up in the stores by ``(split, video, qid)``.

Either way a question is *used* only when all its features are there: its bundle and row in
the text store, with the same question text and candidates as the adapter's (otherwise the
stored vectors are of another text), and its video complete in the stores of the frame roles
the method reads. The others are not dropped silently: :class:`Coverage` counts them by
reason with their ids; the training loop reports them as a warning (train on the featurized
subset, but know it) or refuses them (:class:`MissingQuestions`) when asked to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vqacache.cache_spec.errors import VqaCacheError
from vqacache.cache_spec.keys import id_to_key
from vqacache.heads.stores import StoreSet

SHOW_IDS = 3
"""Ids shown per reason in a one-line summary."""


class MissingQuestions(VqaCacheError, ValueError):
    """Questions of the list have no features in the stores and the run requires all of them."""


@dataclass(frozen=True)
class Question:
    """One annotated question, as a dataset adapter lists it.

    ``answer``: the correct candidate's index (multiple choice), the answer text
    (open-ended) or None (unlabelled). ``start``/``end``: the segment in seconds, None = the
    whole video. ``question`` and ``candidates`` are compared with the stored bundle's.
    """

    qid: str
    video_id: str
    split: str
    question: str
    candidates: tuple[str, ...] = ()
    answer: int | str | None = None
    qtype: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class QuestionRef:
    """Where one question's features live and its metadata.

    ``bundle_key``/``row``: its question bundle and row in the text store;
    ``teacher_key``/``teacher_row``: the same in the imageqa store (None: not there).
    """

    qid: str
    video_id: str
    split_key: str
    bundle_key: str
    row: int
    answer: Any
    qtype: str | None
    start: float | None
    end: float | None
    n_candidates: int
    teacher_key: str | None = None
    teacher_row: int | None = None


@dataclass
class Coverage:
    """How many of a split's listed questions have features, and why the others have none.

    ``missing``: reason -> qids (sorted).
    """

    split: str
    source: str
    listed: int
    missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return sum(len(v) for v in self.missing.values())

    @property
    def used(self) -> int:
        return self.listed - self.n_missing

    def summary(self) -> str:
        """One line: counts, reasons and the first few ids of each."""
        parts = [
            f"{len(ids)} {reason} ({', '.join(ids[:SHOW_IDS])}{', ...' if len(ids) > SHOW_IDS else ''})"
            for reason, ids in sorted(self.missing.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
        return (
            f"split {self.split!r}: {self.n_missing} of {self.listed} questions listed by the {self.source} "
            f"have no features and are left out: {'; '.join(parts)}"
        )

    def to_dict(self, max_ids: int = 20) -> dict[str, Any]:
        return {
            "source": self.source, "listed": self.listed, "used": self.used,
            "missing": {r: {"count": len(ids), "first": ids[:max_ids]} for r, ids in sorted(self.missing.items())},
        }


def _bundles(stores: StoreSet, role: str, split_key: str) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """``{video_id: (bundle key, entries)}`` of the split's complete bundles in ``role``'s store
    (reads only the bundles' JSON attributes, never the arrays)."""
    try:
        group = stores.store(role).root[f"questions/{split_key}"]
    except KeyError:
        return {}
    out = {}
    for key, bundle in group.groups():
        attrs = bundle.attrs
        if key.startswith(".tmp-") or attrs.get("complete") is not True:
            continue
        out[attrs["video_id"]] = (key, list(attrs["entries"]))
    return out


def _from_entry(e: dict[str, Any], video_id: str, split: str) -> Question:
    return Question(
        qid=e["qid"], video_id=video_id, split=split, question=e.get("question", ""),
        candidates=tuple(e.get("candidates") or ()), answer=e.get("answer"), qtype=e.get("qtype"),
        start=e.get("start"), end=e.get("end"),
    )


def resolve_questions(
    stores: StoreSet,
    split: str,
    frame_roles: tuple[str, ...],
    questions: Sequence[Question] | None = None,
) -> tuple[list[QuestionRef], Coverage]:
    """The split's usable questions (sorted by qid) and the coverage of the list.

    ``questions``: an adapter's list (None: the text store's bundles). ``frame_roles``: the
    roles whose store must hold the question's video complete (``("cls", "patch")``).
    """
    split_key = id_to_key(split, "split")
    text = _bundles(stores, "text", split_key)
    from_adapter = questions is not None
    if questions is None:
        questions = [_from_entry(e, vid, split) for vid, (_, entries) in text.items() for e in entries]
    teacher = text if stores.same("imageqa", "text") else _bundles(stores, "imageqa", split_key)
    teacher_rows = {e["qid"]: (key, row) for key, entries in teacher.values() for row, e in enumerate(entries)}
    complete = {role: set(stores.store(role).complete_videos()) for role in stores.distinct_roles(frame_roles)}
    rows = {vid: {e["qid"]: row for row, e in enumerate(entries)} for vid, (_, entries) in text.items()}

    refs: list[QuestionRef] = []
    coverage = Coverage(split, "dataset adapter" if from_adapter else f"text store {stores.paths['text'].name}",
                        len(questions))
    for q in questions:
        reason = None
        if q.video_id not in text:
            reason = "without a question bundle in the text store"
        elif q.qid not in rows[q.video_id]:
            reason = "missing from their bundle in the text store"
        else:
            key, entries = text[q.video_id]
            row = rows[q.video_id][q.qid]
            stored = entries[row]
            if from_adapter and (
                stored.get("question") != q.question or tuple(stored.get("candidates") or ()) != q.candidates
            ):
                reason = "whose stored text differs from the annotations (featurize the text again)"
        if reason is None:
            for role, videos in complete.items():
                if q.video_id not in videos:
                    reason = f"whose video is not complete in the {role} store"
                    break
        if reason is not None:
            coverage.missing.setdefault(reason, []).append(q.qid)
            continue
        tkey, trow = teacher_rows.get(q.qid, (None, None))
        refs.append(
            QuestionRef(
                qid=q.qid, video_id=q.video_id, split_key=split_key, bundle_key=key, row=row, answer=q.answer,
                qtype=q.qtype, start=q.start, end=q.end, n_candidates=len(q.candidates), teacher_key=tkey,
                teacher_row=trow,
            )
        )
    for ids in coverage.missing.values():
        ids.sort()
    return sorted(refs, key=lambda r: r.qid), coverage
