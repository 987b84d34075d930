"""The exact count, before training, of open-ended training answers outside the teacher's top-k
(``sparc.count_outside_topk``), on a hand-made open-ended store.

Planted mutations (each made the test fail):

1. a zero-probability top-k entry counted as ranked (``& (probs[row] > 0)`` dropped) -> 2 of 4
   instead of 3 of 4 [1 failed].
2. only the first frame read (``index[row, 0]``) -> 4 of 4 [1 failed].
3. multiple-choice questions counted too (the ``candidates`` test dropped) -> 4 of 5 [1 failed].
   (Tried and not caught: ``& (a >= 0)`` dropped; the padding's probability is 0 by the bundle
   format, so the guard is redundant on valid stores.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import TeacherSpec, open_store, vocab_sha256  # noqa: E402
from vqacache.heads.methods.sparc import OutsideTopK, count_outside_topk  # noqa: E402

VOCAB = ["red", "blue", "two", "cat"]


def test_outside_topk_count_is_exact(tmp_path):
    store = open_store(tmp_path / "t.zarr", "a", spec=make_spec(patches=False), dataset="toy")
    fp = store.set_teacher_spec(TeacherSpec(teacher="synthetic", model={"test": True}, frames=2, vocab_size=len(VOCAB),
                                            vocab_sha256=vocab_sha256(VOCAB), k=2), VOCAB)
    # video a: q0 "red" ranked on frame 1 (in); q1 "cat" only with probability 0 (out)
    # video b: q2 "blue" never ranked (out); q3 "dog" not in the vocabulary (out, padding -1 present);
    #          q4 multiple choice and q5 unlabelled: not counted
    rows = {
        "a": ([("q0", "red", []), ("q1", "cat", [])],
              np.array([[[2, 1], [0, 3]], [[3, 2], [2, 1]]]), np.array([[[.6, .4], [.7, .3]], [[0., .9], [.5, .5]]])),
        "b": ([("q2", "blue", []), ("q3", "dog", []), ("q4", 1, ["x", "y"]), ("q5", None, [])],
              np.array([[[0, 2], [3, -1]], [[0, -1], [1, -1]], [[0, 1], [0, 1]], [[1, 0], [1, 0]]]),
              np.array([[[.5, .5], [1., 0.]], [[1., 0.], [1., 0.]], [[.5, .5], [.5, .5]], [[.5, .5], [.5, .5]]])),
    }
    for vid, (qs, index, probs) in rows.items():
        entries = [{"qid": f"{vid}_{q}", "question": "?", "candidates": c, "answer": a, "qtype": "x", "start": None,
                    "end": None} for q, a, c in qs]
        store.write_questions("train", vid, entries, {})
        store.write_imageqa("train", vid, fp, {"imageqa": probs.astype(np.float32),
                                               "imageqa_pts": np.tile([0.0, 0.5], (len(qs), 1)),
                                               "imageqa_index": index.astype(np.int64)})
    assert count_outside_topk(store) == OutsideTopK(outside=3, total=4)
    assert count_outside_topk(store, "val") == OutsideTopK(0, 0)
