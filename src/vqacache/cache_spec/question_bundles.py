"""Question bundles: one group per (split, video) holding that video's questions.

``questions/<split key>/<video key>/``: attrs ``entries`` (one JSON record per question, in
row order), ``video_id``, ``split``, ``checksum``, ``complete``; arrays with one row per
question (:data:`QUESTION_ARRAYS`). A bundle is built under a temporary key and published
with :func:`~vqacache.cache_spec.publish.replace` (old one aside, new one in, old one
deleted), so a reader sees the old bundle or the new one, never a partial one, and a crash
never loses both.

Question ids are unique in a store: a bundle with two records of one qid is refused at write
time naming both, and a qid found in two bundles makes reading refuse with both named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from vqacache.cache_spec import layout
from vqacache.cache_spec.checksum import checksum_arrays
from vqacache.cache_spec.errors import InvalidVideoId, StoreError
from vqacache.cache_spec.keys import id_to_key, validate_id
from vqacache.cache_spec.publish import is_temporary, remove_tree, replace, temp_key
from vqacache.cache_spec.video_writer import utcnow

if TYPE_CHECKING:
    from vqacache.cache_spec.store import FeatureStore

IMAGEQA_ARRAYS = ("imageqa", "imageqa_pts", "imageqa_index")
"""A bundle's teacher arrays, Q questions: ``imageqa`` (Q, F, K) float32 probabilities (K = the
candidates, or the top-k of the vocabulary; padding is 0), ``imageqa_pts`` (Q, F) float64
seconds (NaN marks the padding past a question's own frame count), ``imageqa_index`` (Q, F, K)
int64 vocabulary indices (open-ended only; padding -1)."""
QUESTION_ARRAYS = ("text", "text_tokens", "text_len", "cand", "cand_tokens", "cand_len", *IMAGEQA_ARRAYS)
KEEP_DTYPE = ("imageqa", "imageqa_pts")
"""Question arrays stored as given rather than in the spec's dtype: probabilities stay float32
(float16 loses small ones) and times float64."""


class DuplicateQuestion(StoreError, ValueError):
    """Two records share one question id."""


@dataclass
class QuestionFeatures:
    """One question's text features. ``C`` candidates (0 for open-ended).

    ``text`` (E,) sentence vector; ``text_tokens`` (L, W) token states (L = its own length);
    ``cand`` (C, E) candidate sentence vectors; ``cand_tokens`` list of C arrays (L_c, W).
    """

    qid: str
    video_id: str
    split: str
    question: str
    candidates: tuple[str, ...]
    answer: int | str | None
    qtype: str | None
    start: float | None
    end: float | None
    text: np.ndarray | None
    """None when the store's encoder has no text tower (``spec.outputs.text`` is None)."""
    text_tokens: np.ndarray | None
    cand: np.ndarray | None
    cand_tokens: list[np.ndarray] | None
    imageqa: np.ndarray | None = None
    """The image-QA teacher's probabilities (F, C) (open-ended: (F, k) over ``imageqa_index``)."""
    imageqa_pts: np.ndarray | None = None
    """(F,) seconds of the teacher's frames."""
    imageqa_index: np.ndarray | None = None
    """(F, k) vocabulary indices of ``imageqa``'s columns (open-ended), else None."""
    imageqa_fingerprint: str | None = None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        """``"cand" in q``: whether the field exists and holds a value."""
        return getattr(self, name, None) is not None


def json_safe(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars and tuples become plain JSON values."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def check_unique_qids(entries: list[dict[str, Any]], where: str) -> None:
    """Refuse two entries with one qid, naming both (``where``: the bundle's name)."""
    seen: dict[str, int] = {}
    for row, entry in enumerate(entries):
        qid = validate_id(entry["qid"], "question id")
        if qid in seen:
            first = entries[seen[qid]]
            raise DuplicateQuestion(
                f"question id {qid!r} appears twice in {where}: {_describe(first)} and {_describe(entry)}"
            )
        seen[qid] = row


def _describe(entry: dict[str, Any]) -> str:
    return repr(str(entry.get("question", ""))[:60])


def write_bundle(
    store: FeatureStore, split: str, video_id: str, entries: list[dict[str, Any]], arrays: dict[str, np.ndarray],
    attributes: dict[str, Any] | None = None,
) -> None:
    """Build the bundle under a temporary key and publish it (see the module docstring)."""
    check_unique_qids(entries, f"bundle ({split!r}, {video_id!r})")
    unknown = set(arrays) - set(QUESTION_ARRAYS)
    if unknown:
        raise ValueError(f"unknown question arrays: {sorted(unknown)}")
    questions = store.root[layout.QUESTIONS]
    split_key = id_to_key(split, "split")
    try:
        splits = questions.require_group(split_key)
    except Exception:  # created by a concurrent writer between the check and the write
        splits = questions[split_key]
    key = id_to_key(video_id)
    tmp_key = temp_key(key)
    split_dir = store.path / layout.QUESTIONS / split_key
    try:
        group = splits.create_group(tmp_key, attributes={"video_id": video_id, "split": split, "complete": False})
        stored: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and name not in KEEP_DTYPE:
                value = value.astype(store.spec.dtype)
            group.create_array(name, data=value, chunks=value.shape or (1,), compressors=None)
            stored[name] = value
        group.attrs.update(
            {**json_safe(attributes or {}), "entries": json_safe(entries), "checksum": checksum_arrays(stored),
             "complete": True, "written": utcnow()}
        )
        replace(split_dir / tmp_key, split_dir / key)
    except BaseException:
        remove_tree(split_dir / tmp_key)
        raise


def complete_bundles(root: zarr.Group, split_key: str | None = None) -> list[tuple[str, str, zarr.Group]]:
    """``(split key, video key, group)`` of every complete bundle (optionally one split's)."""
    out = []
    try:
        parent = root[layout.QUESTIONS]
    except KeyError:
        return out
    for s_key, split_group in parent.groups():
        if split_key is not None and s_key != split_key:
            continue
        for key, group in split_group.groups():
            if not is_temporary(key) and group.attrs.get("complete") is True and _owns(key, group):
                out.append((s_key, key, group))
    return out


def build_index(root: zarr.Group) -> dict[str, tuple[str, str, int]]:
    """``{qid: (split key, bundle key, row)}``; a qid in two bundles raises, naming both."""
    index: dict[str, tuple[str, str, int]] = {}
    for split_key, key, group in complete_bundles(root):
        attrs = group.attrs
        for row, entry in enumerate(attrs["entries"]):
            qid = entry["qid"]
            if qid in index:
                other_split, other_key, _ = index[qid]
                other = root[f"{layout.QUESTIONS}/{other_split}/{other_key}"].attrs
                raise DuplicateQuestion(
                    f"question id {qid!r} is in two bundles: ({other.get('split')!r}, {other.get('video_id')!r}) "
                    f"and ({attrs.get('split')!r}, {attrs.get('video_id')!r})"
                )
            index[qid] = (split_key, key, row)
    return index


def bundle_group(store: FeatureStore, split: str, video_id: str) -> zarr.Group | None:
    """The complete bundle of (split, video), or None."""
    try:
        group = store.root[f"{layout.QUESTIONS}/{id_to_key(split, 'split')}/{id_to_key(video_id)}"]
    except KeyError:
        return None
    if not isinstance(group, zarr.Group) or group.attrs.get("complete") is not True:
        return None
    return group if group.attrs.get("video_id") == video_id else None  # not one moved here by hand


def _owns(key: str, group: zarr.Group) -> bool:
    """Whether the bundle under ``key`` is its own video's (``verify`` reports the others)."""
    video_id = group.attrs.get("video_id")
    try:
        return isinstance(video_id, str) and id_to_key(video_id) == key
    except InvalidVideoId:
        return False


def read_question(store: FeatureStore, location: tuple[str, str, int], qid: str) -> QuestionFeatures:
    """Question ``qid`` at ``location`` (from :func:`build_index`)."""
    split_key, key, row = location
    group = store.root[f"{layout.QUESTIONS}/{split_key}/{key}"]
    entry = group.attrs["entries"][row]
    cand = cand_tokens = text = text_tokens = None
    n_cand = len(entry["candidates"])
    if "text_len" in group:  # absent for vision-only encoders (spec.outputs.text is None)
        text, text_tokens = group["text"][row], group["text_tokens"][row, : int(group["text_len"][row])]
    if n_cand and "cand" in group:
        cand = group["cand"][row, :n_cand]
        lengths = group["cand_len"][row, :n_cand]
        block = group["cand_tokens"][row, :n_cand]
        cand_tokens = [block[c, : int(lengths[c])] for c in range(n_cand)]
    return QuestionFeatures(
        qid=qid,
        video_id=group.attrs["video_id"],
        split=group.attrs["split"],
        question=entry["question"],
        candidates=tuple(entry["candidates"]),
        answer=entry.get("answer"),
        qtype=entry.get("qtype"),
        start=entry.get("start"),
        end=entry.get("end"),
        text=text,
        text_tokens=text_tokens,
        cand=cand,
        cand_tokens=cand_tokens,
        **_imageqa_of(group, row, n_cand),
    )


def _imageqa_of(group: zarr.Group, row: int, n_cand: int) -> dict[str, Any]:
    """The teacher fields of QuestionFeatures for bundle row ``row`` (all None without them):
    ``imageqa`` (F, C) for multiple choice or (F, k) open-ended, ``imageqa_pts`` (F,),
    ``imageqa_index`` (F, k) or None, ``imageqa_fingerprint``; F = this question's frames."""
    if "imageqa" not in group:
        return {}
    pts = group["imageqa_pts"][row]
    n_frames = int(np.count_nonzero(~np.isnan(pts)))
    probs = group["imageqa"][row, :n_frames]
    index = group["imageqa_index"][row, :n_frames] if "imageqa_index" in group else None
    if index is None and n_cand:
        probs = probs[:, :n_cand]
    return {"imageqa": probs, "imageqa_pts": pts[:n_frames], "imageqa_index": index,
            "imageqa_fingerprint": group.attrs.get("imageqa_fingerprint")}
