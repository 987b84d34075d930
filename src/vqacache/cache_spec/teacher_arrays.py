"""The image-QA teacher of a store: its spec in ``imageqa/`` and its arrays in the bundles.

One teacher per store: ``imageqa/`` (attrs ``spec``, ``fingerprint``, ``vocab``) is published
once by rename; the teacher's arrays (:data:`~vqacache.cache_spec.question_bundles.IMAGEQA_ARRAYS`)
are added to a question bundle by rewriting the bundle whole and publishing it by rename.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from vqacache.cache_spec import layout
from vqacache.cache_spec.errors import SpecMismatch, StoreError
from vqacache.cache_spec.publish import remove_tree
from vqacache.cache_spec.question_bundles import IMAGEQA_ARRAYS, bundle_group, write_bundle
from vqacache.cache_spec.teacher_spec import TeacherSpec, vocab_sha256

if TYPE_CHECKING:
    from vqacache.cache_spec.store import FeatureStore


def diff_dicts(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_dicts(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def set_teacher_spec(store: FeatureStore, spec: TeacherSpec, vocab: list[str] | None = None) -> str:
    """See :meth:`FeatureStore.set_teacher_spec`."""
    if (vocab is None) != (spec.vocab_sha256 is None) or (vocab is not None and vocab_sha256(vocab) != spec.vocab_sha256):
        raise ValueError("the vocabulary must be given exactly when the spec has one, and match its sha256")
    current = store.teacher_spec()
    if current is None:
        tmp_key = f".tmp-{uuid.uuid4().hex[:12]}-{layout.IMAGEQA}"
        attributes = {"spec": spec.to_dict(), "fingerprint": spec.fingerprint(), "vocab": vocab}
        store.root.create_group(tmp_key, attributes=attributes)
        try:
            os.rename(store.path / tmp_key, store.path / layout.IMAGEQA)
        except OSError:  # another run recorded one first: compare with it below
            remove_tree(store.path / tmp_key)
        current = store.teacher_spec()
    if current is None or current.fingerprint() != spec.fingerprint():
        changes = "; ".join(diff_dicts(current.to_dict() if current else {}, spec.to_dict())) or "fingerprints differ"
        raise SpecMismatch(
            f"store {store.path} already holds image-QA probabilities of another teacher spec ({changes}); "
            "one teacher per store: use another --cache-root for this one"
        )
    return spec.fingerprint()


def write_imageqa(store: FeatureStore, split: str, video_id: str, fingerprint: str, arrays: dict[str, np.ndarray]) -> None:
    """See :meth:`FeatureStore.write_imageqa`."""
    spec = store.teacher_spec()
    if spec is None or spec.fingerprint() != fingerprint:
        raise StoreError(f"record the teacher spec first (set_teacher_spec); {fingerprint[:12]} is not this store's")
    unknown = set(arrays) - set(IMAGEQA_ARRAYS)
    if unknown:
        raise ValueError(f"unknown image-QA arrays: {sorted(unknown)}")
    entries = store.question_entries(split, video_id)
    group = bundle_group(store, split, video_id)
    for name, value in arrays.items():
        if value.shape[0] != len(entries):
            raise ValueError(f"{name} has {value.shape[0]} rows for {len(entries)} questions")
    existing = {name: group[name][...] for name in group.array_keys() if name not in IMAGEQA_ARRAYS}
    write_bundle(store, split, video_id, entries, {**existing, **arrays}, attributes={"imageqa_fingerprint": fingerprint})
