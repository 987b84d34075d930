"""The image-QA teacher's probabilities as stage two reads them (nearest frame, open-ended scatter)."""

from __future__ import annotations

import numpy as np

from vqacache.heads.data import _teacher


def test_multiple_choice_takes_the_nearest_teacher_frame():
    group = {"imageqa": np.array([[[0.9, 0.1], [0.2, 0.8], [0, 0]]], np.float32),
             "imageqa_pts": np.array([[0.0, 1.0, np.nan]])}
    out = _teacher(group, 0, np.array([0.1, 0.6, 2.0]))
    np.testing.assert_allclose(out, [[0.9, 0.1], [0.2, 0.8], [0.2, 0.8]], rtol=1e-6)


def test_open_ended_top_k_lands_on_the_answer_classes():
    # teacher vocabulary: 0 "cat", 1 "dog", 2 "red", 3 "zebra"; the head's classes: "dog", "cat", "red"
    classes = np.array([1, 0, 2, -1])  # zebra is not a class of this dataset: dropped
    group = {"imageqa": np.array([[[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]]], np.float32),
             "imageqa_index": np.array([[[3, 0, 1], [2, 1, -1]]]),
             "imageqa_pts": np.array([[0.0, 1.0]])}
    out = _teacher(group, 0, np.array([0.0, 1.0]), classes, 3)
    np.testing.assert_allclose(out, [[0.2, 0.3, 0.0], [0.4, 0.0, 0.6]])
    assert _teacher(group, 0, np.array([0.0]), None, 3) is None  # no vocabulary map: no teacher
