"""The nearest-pts-v1 sampling rule on hand-made timestamp lists, and against brute force."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest

from vqacache.featurize.decode.frame_plan import native_frame_ticks, plan_frames

FPS = Fraction(15, 2)


def test_constant_30fps() -> None:
    plan = plan_frames(list(range(30)), Fraction(1, 30), FPS)  # 1 s of 30 fps
    assert plan.native_fps == 30 and plan.duration == 1
    assert plan.src_index.tolist() == [0, 4, 8, 12, 16, 20, 24, 28]  # t_k * 30 = 4k exactly
    assert plan.src_index.dtype == np.int64 and plan.pts.dtype == np.float64
    np.testing.assert_allclose(plan.pts, np.arange(8) * 4 / 30, rtol=0, atol=1e-12)
    assert not plan.is_repeat.any() and plan.n_repeats == 0


def test_ntsc_2997() -> None:
    plan = plan_frames([1001 * i for i in range(300)], Fraction(1, 30000), FPS)
    assert plan.native_fps == Fraction(30000, 1001)
    assert plan.duration == Fraction(10010, 1000)  # 300 * 1001 / 30000 s
    assert plan.n_frames == 76  # ceil(10.01 * 7.5) = ceil(75.075)
    # t_k = 4000 k ticks; frame i sits at 1001 i: nearest i = round(4000 k / 1001).
    assert plan.src_index[:6].tolist() == [0, 4, 8, 12, 16, 20]
    assert plan.src_index[62] == 248  # 248000 / 1001 = 247.75 -> 248
    assert plan.src_index[75] == 299  # 300000 / 1001 = 299.7, past the last frame -> 299


def test_25fps_thirds() -> None:
    plan = plan_frames(list(range(50)), Fraction(1, 25), FPS)  # 2 s
    assert plan.n_frames == 15
    # t_k in frames = 10k/3: 0, 3.33, 6.67, 10, 13.33, 16.67, ...
    assert plan.src_index[:7].tolist() == [0, 3, 7, 10, 13, 17, 20]


def test_6fps_repeats_frames() -> None:
    plan = plan_frames(list(range(6)), Fraction(1, 6), FPS)  # 1 s of 6 fps
    assert plan.n_frames == 8  # t_k < 1 for k = 0..7
    # t_k in frames = 0.8 k: 0, .8, 1.6, 2.4, 3.2, 4.0, 4.8, 5.6
    assert plan.src_index.tolist() == [0, 1, 2, 2, 3, 4, 5, 5]
    assert plan.is_repeat.tolist() == [False, False, False, True, False, False, False, True]
    assert plan.n_repeats == 2


def test_variable_frame_rate() -> None:
    ticks = [0, 10, 20, 200, 210, 400]  # ms; positive deltas 10, 10, 180, 10, 190
    plan = plan_frames(ticks, Fraction(1, 1000), Fraction(10))
    assert plan.native_fps == 100  # lower median delta 10 ms, not the mean
    assert plan.duration == Fraction(410, 1000)
    # t = 0, 100, 200, 300, 400 ms: 100 is nearer 20 (80) than 200 (100); 300 nearer 210.
    assert plan.src_index.tolist() == [0, 2, 3, 4, 5]
    np.testing.assert_allclose(plan.pts, [0, 0.02, 0.2, 0.21, 0.4], rtol=0, atol=1e-12)


def test_grid_point_exactly_at_duration_is_excluded() -> None:
    # Like a real 10 s, 28 fps file: D = 280 * 512 / 14336 = 10 s exactly, and 75 / 7.5 = 10.
    plan = plan_frames([512 * i for i in range(280)], Fraction(1, 14336), FPS)
    assert plan.duration == 10
    assert plan.n_frames == 75
    # An NTSC-style case: D = 30 * 1001 / 30000 s and fps = 10000 / 1001 put t_10 on D.
    plan = plan_frames([1001 * i for i in range(30)], Fraction(1, 30000), Fraction(10000, 1001))
    assert plan.n_frames == 10


def test_ties_go_to_the_earlier_frame() -> None:
    plan = plan_frames([0, 100, 200], Fraction(1, 1000), Fraction(20))  # t = 0, 50, ..., 250
    assert plan.src_index.tolist() == [0, 0, 1, 1, 2, 2]
    # Frames sharing a timestamp: the first of them.
    plan = plan_frames([0, 100, 100, 200], Fraction(1, 1000), Fraction(10))
    assert plan.src_index.tolist() == [0, 1, 3]
    assert plan.native_fps == 10  # the zero delta carries no rate


def test_nonzero_start_is_relative() -> None:
    ticks = [1001 * i for i in range(300)]
    shifted = plan_frames([t + 123457 for t in ticks], Fraction(1, 30000), FPS)
    plain = plan_frames(ticks, Fraction(1, 30000), FPS)
    assert np.array_equal(shifted.src_index, plain.src_index)
    assert np.array_equal(shifted.pts, plain.pts)
    assert shifted.pts[0] == 0.0


def test_decode_order_input_is_sorted() -> None:
    presentation = [512 * i for i in range(100)]
    decode_order = presentation[:]
    random.Random(0).shuffle(decode_order)
    a = plan_frames(decode_order, Fraction(1, 12800), FPS)
    b = plan_frames(presentation, Fraction(1, 12800), FPS)
    assert np.array_equal(a.src_index, b.src_index) and np.array_equal(a.pts, b.pts)


def test_single_frame_uses_declared_rate() -> None:
    plan = plan_frames([7], Fraction(1, 90000), FPS, fallback_fps=Fraction(2))
    assert plan.duration == Fraction(1, 2) and plan.native_fps == 2
    assert plan.src_index.tolist() == [0, 0, 0, 0]  # t = 0, .13, .27, .4 < 0.5
    assert plan.n_repeats == 3
    plan = plan_frames([7], Fraction(1, 90000), FPS)  # no declared rate: one output step
    assert plan.src_index.tolist() == [0]


def test_native_frame_ticks_is_lower_median_of_positive_deltas() -> None:
    assert native_frame_ticks([0, 10, 30, 60]) == 20  # deltas 10, 20, 30
    assert native_frame_ticks([0, 10, 30]) == 10  # deltas 10, 20 -> lower median
    assert native_frame_ticks([5, 5]) is None and native_frame_ticks([5]) is None


@pytest.mark.parametrize(
    "ticks, time_base, fps",
    [([], Fraction(1, 25), FPS), ([0, 1.5], Fraction(1, 25), FPS), ([0, 1], Fraction(0), FPS),
     ([0, 1], Fraction(1, 25), Fraction(0))],
)
def test_invalid_inputs(ticks: list, time_base: Fraction, fps: Fraction) -> None:
    with pytest.raises(ValueError):
        plan_frames(ticks, time_base, fps)


def _brute_force(ticks: list[int], time_base: Fraction, fps: Fraction) -> list[int]:
    """The rule written the slow, obvious way, in Fractions."""
    rel = sorted(t - min(ticks) for t in ticks)
    deltas = sorted(b - a for a, b in zip(rel, rel[1:]) if b > a)
    duration = (rel[-1] + deltas[(len(deltas) - 1) // 2]) * time_base
    seconds = [r * time_base for r in rel]
    out, k = [], 0
    while Fraction(k) / fps < duration:
        t = Fraction(k) / fps
        out.append(min(range(len(rel)), key=lambda i: (abs(seconds[i] - t), i)))
        k += 1
    return out


def test_matches_brute_force_on_random_timestamps() -> None:
    rng = random.Random(1)
    for _ in range(200):
        time_base = Fraction(1, rng.choice([25, 1000, 30000, 90000]))
        span = int(rng.uniform(0.1, 3) / time_base) + 2  # at most ~3 s of video
        ticks = rng.sample(range(span), rng.randint(2, min(40, span)))
        ticks += rng.sample(ticks, rng.randint(0, 2))  # a few duplicates
        rng.shuffle(ticks)
        fps = rng.choice([Fraction(15, 2), Fraction(1), Fraction(30000, 1001), Fraction(24)])
        plan = plan_frames(ticks, time_base, fps)
        assert plan.src_index.tolist() == _brute_force(ticks, time_base, fps)
