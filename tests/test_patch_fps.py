"""``--patch-fps F`` (issue 12, the cache side, part 2): patch tokens on a coarser sub-grid of
the sampled frames, CLS on every frame, the rule shared by the writer, ``verify`` and stage two.

Mutations tried (each fails a test here):
- ties to the later frame (``<`` for ``<=`` in the selector's comparison);
- ``t_j < last pts`` instead of ``<=`` (the last grid time dropped when it lands on a frame);
- repeated frames: the selector's ``prev`` updated on equal pts (picks the last repeat);
- the writer forgetting the carried row (a block boundary right before a chosen row's decider);
- ``patch_fps`` written into the spec when None (every old fingerprint changes);
- verify not recomputing the rule (a shifted ``patch_pts`` that is still a subset of ``pts``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from spec_factory import make_spec
from synthetic_videos import write_video
from test_spec import V1_FINGERPRINT

from vqacache.cache_spec import FeatureSpec, SpecError, open_store, patch_frame_rows, subgrid_rows, verify_store, with_patch_fps
from vqacache.cache_spec.checksum import checksum_arrays
from vqacache.cache_spec.patch_frames import SubgridSelector
from vqacache.featurize import shard
from vqacache.featurize.shard import DecodeArgs, EncoderArgs, ShardTask, Target, encoder_spec, run_shard

PTS_75 = np.arange(20) / 7.5  # a 7.5 fps grid: 0, .133, .267, ..., 2.533


def _brute_force(pts: np.ndarray, fps: float) -> np.ndarray:
    """The rule, independently: every grid time, the first frame within 1 ns of the nearest."""
    rows, j = [], 0
    while j / fps <= pts[-1] + 1e-9:
        d = np.abs(pts - j / fps)
        row = int(np.flatnonzero(d <= d.min() + 1e-9)[0])
        if not rows or rows[-1] != row:
            rows.append(row)
        j += 1
    return np.array(rows, dtype=np.int64)


# -- the rule -------------------------------------------------------------------------------------


def test_subgrid_rule_by_hand() -> None:
    # t = 0, .5, 1, 1.5, 2, 2.5 on the 7.5 fps grid: .5 -> .533 (row 4); 1.0 is exactly between
    # .933 and 1.067 -> the earlier (row 7); 1.5 -> 1.467 (11); 2.0 -> row 15; 2.5 -> 2.533 (19)
    assert subgrid_rows(PTS_75, 2).tolist() == [0, 4, 7, 11, 15, 19]
    assert subgrid_rows(PTS_75, 1).tolist() == [0, 7, 15]  # t = 3 > 2.533: not on the grid
    assert subgrid_rows(PTS_75[:16], 1).tolist() == [0, 7, 15]  # t = 2 == last pts: included
    assert subgrid_rows(PTS_75[:15], 1).tolist() == [0, 7]  # last pts 1.867 < 2
    assert subgrid_rows(PTS_75, Fraction(15, 2)).tolist() == list(range(20))  # F = fps: every frame
    # a slow video: repeated frames share a pts; the first of them is chosen, each frame once
    slow = np.array([0.0, 0.0, 0.0, 0.4, 0.4, 0.4, 0.8, 0.8])
    assert subgrid_rows(slow, 5).tolist() == [0, 3, 6]  # t = .2 ties 0/.4 -> row 0 (deduplicated)
    assert subgrid_rows(slow, 2).tolist() == [0, 3]  # t = .5 -> .4 (row 3); t = 1 > .8
    # irregular pts
    irregular = np.array([0.0, 0.3, 0.35, 1.2, 1.9])
    assert subgrid_rows(irregular, 1).tolist() == [0, 3]  # t = 1 -> 1.2; t = 2 > 1.9
    for pts, fps in ((PTS_75, 2), (PTS_75, 1), (slow, 5), (irregular, 3), (np.sort(np.random.default_rng(0).random(50) * 9), 1.5)):
        np.testing.assert_array_equal(subgrid_rows(pts, fps), _brute_force(pts, fps))


def test_streaming_selector_equals_the_whole_video_rule() -> None:
    rng = np.random.default_rng(1)
    pts = np.sort(np.concatenate([PTS_75, PTS_75[3:9]]))  # some repeats
    whole = subgrid_rows(pts, 2)
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, len(pts)), size=rng.integers(0, 6), replace=False))
        selector, rows = SubgridSelector(2), []
        for block in np.split(pts, cuts):
            rows += selector.push(block)
        assert rows == whole.tolist()


# -- the spec ---------------------------------------------------------------------------------------


def test_patch_fps_enters_the_fingerprint_only_when_set() -> None:
    spec = make_spec()
    assert spec.fingerprint() == V1_FINGERPRINT and "patch_fps" not in spec.to_dict()["outputs"]
    assert with_patch_fps(spec, None).fingerprint() == V1_FINGERPRINT
    two = with_patch_fps(spec, 2)
    assert two.outputs.patch_fps == "2/1" and two.to_dict()["outputs"]["patch_fps"] == "2/1"
    assert two.fingerprint() != V1_FINGERPRINT and with_patch_fps(spec, "1").fingerprint() not in (two.fingerprint(), V1_FINGERPRINT)
    assert FeatureSpec.from_json(two.to_json()) == two and FeatureSpec.from_json(spec.to_json()) == spec
    assert two.diff(spec) == ["outputs.patch_fps: '2/1' != None"]
    assert with_patch_fps(make_spec(patches=False), 2).outputs.patch_fps is None  # no patches: ignored
    with pytest.raises(SpecError, match="above the sampling fps"):
        with_patch_fps(spec, 15)
    with pytest.raises(SpecError, match="positive"):
        with_patch_fps(spec, 0)


# -- the writer, readers, verify -------------------------------------------------------------------


def _write(store, video_id: str, pts: np.ndarray, cuts: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(pts)
    full = {
        "cls": rng.standard_normal((n, 8)).astype(np.float32),
        "cls_hidden": rng.standard_normal((n, 6)).astype(np.float32),
        "patch": rng.standard_normal((n, 4, 6)).astype(np.float32),
        "pts": pts,
        "src_index": np.arange(n),
        "is_repeat": np.r_[False, pts[1:] == pts[:-1]],
    }
    with store.write_video(video_id) as writer:
        for part in np.split(np.arange(n), cuts):
            writer.append(**{k: v[part] for k, v in full.items()})
    return full


def test_writer_keeps_subgrid_rows_with_their_pts(tmp_path: Path) -> None:
    spec = with_patch_fps(make_spec(dtype="float32"), 2)
    store = open_store(tmp_path / "s.zarr", "a", spec=spec, dataset="demo")
    pts = np.sort(np.concatenate([PTS_75, PTS_75[3:9]]))
    rows = subgrid_rows(pts, 2)
    for i, cuts in enumerate(([], [1, 2, 3], [5, 6], list(range(1, len(pts))))):  # block boundaries all over
        full = _write(store, f"v{i}", pts, cuts, seed=i)
        arrays = store.video_arrays(f"v{i}")
        assert arrays["patch"].shape == (len(rows), 4, 6) and arrays["cls"].shape == (len(pts), 8)
        np.testing.assert_array_equal(arrays["patch"][:], full["patch"][rows])
        np.testing.assert_array_equal(arrays["patch_pts"][:], pts[rows])
        np.testing.assert_array_equal(patch_frame_rows(arrays), rows)
        assert store.verify_video(f"v{i}")
    v = store.read_video("v0")
    np.testing.assert_array_equal(v.patch_pts, pts[rows]) and np.testing.assert_array_equal(patch_frame_rows(v), rows)
    part = store.read_video("v0", frames=slice(4, 16))  # patch rows of the frames read
    keep = rows[(rows >= 4) & (rows < 16)]
    np.testing.assert_array_equal(part.patch_pts, pts[keep])
    np.testing.assert_array_equal(part.patch, store.read_video("v0").patch[np.isin(rows, keep)])
    report = verify_store(store)
    assert report.clean and report.ok == 4


def test_stores_without_a_subgrid_have_every_row() -> None:
    store = open_store(Path(__file__).resolve().parent / "fixtures" / "format_v1.zarr")
    arrays = store.video_arrays("clip/a b")
    assert "patch_pts" not in arrays and store.read_video("clip/a b").patch_pts is None
    np.testing.assert_array_equal(patch_frame_rows(arrays), np.arange(arrays["pts"].shape[0]))


def test_verify_checks_patch_pts_against_the_rule(tmp_path: Path) -> None:
    spec = with_patch_fps(make_spec(dtype="float32"), 2)
    store = open_store(tmp_path / "s.zarr", "a", spec=spec, dataset="demo")
    _write(store, "ok", PTS_75, [7])
    _write(store, "shifted", PTS_75, [7])
    _write(store, "short", PTS_75, [7])
    group = store.root["videos"]["shifted"]
    group["patch_pts"][1] = PTS_75[5]  # still a frame time, not the rule's
    group = store.root["videos"]["short"]
    group["patch_pts"][3] = 99.0  # not a frame time
    for key in ("shifted", "short"):  # a forged but self-consistent checksum
        g = store.root["videos"][key]
        g.attrs["checksum"] = checksum_arrays(dict(g.arrays()))
    report = verify_store(store)
    assert report.ok == 1 and {p.id: p.detail for p in report.corrupt} == {
        "shifted": "patch_pts is not the 2/1 fps sub-grid of pts (6 rows, the rule gives 6)",
        "short": "patch_pts holds times that are not frame times (pts)",
    }


# -- end to end: a synthetic video through the shard runner ---------------------------------------------


def _run(cache: Path, video: Path, tiny_clip: str, patch_fps: str | None):
    args = EncoderArgs(name=tiny_clip, weights="random", patch_fps=patch_fps)
    spec = FeatureSpec.from_json(encoder_spec(args, "15/2", "float32"))
    store = open_store(cache / "s.zarr", "a", spec=spec, dataset="folder")
    task = ShardTask(targets=(Target(str(store.path), store.fingerprint, args),), decode=DecodeArgs(fps="15/2"),
                     videos=(("clip", str(video)),), batch_size=8, owner="test")
    result = run_shard(task)
    assert result.done == {"clip": 24} and not result.failed
    return open_store(store.path)


def test_featurize_with_patch_fps_2(tmp_path: Path, tiny_clip: str) -> None:
    video = write_video(tmp_path / "clip.mp4", 80, rate=25).path  # 3.2 s at 25 fps -> 24 frames at 7.5 fps (t_k < 3.2)
    full = _run(tmp_path / "full", video, tiny_clip, None)
    sub = _run(tmp_path / "sub", video, tiny_clip, "2")
    plain = shard.cached_encoder(EncoderArgs(name=tiny_clip, weights="random")).feature_spec(full.spec.sampling, dtype="float32")
    assert full.fingerprint == plain.fingerprint() and "patch_fps" not in full.spec.to_dict()["outputs"]  # None: as before
    assert sub.fingerprint != full.fingerprint and sub.spec.diff(full.spec) == ["outputs.patch_fps: '2/1' != None"]

    a, b = full.read_video("clip"), sub.read_video("clip")
    np.testing.assert_array_equal(a.pts, b.pts)
    np.testing.assert_array_equal(a.cls, b.cls)  # CLS on every frame
    assert len(b.cls) == len(b.pts) == 24
    # frames: the 25 fps source frames nearest k/7.5: 0, .12, .28, .4, .52, ..., .92, 1.08, ..., 2.92, 3.08;
    # t = 0, .5, ..., 3 (<= 3.08) picks 0, .52, .92 (t = 1 is .08 from .92 and 1.08: the earlier),
    # 1.48, 2.0, 2.52, 2.92 (t = 3: .08 from 2.92 and 3.08 again)
    np.testing.assert_allclose(a.pts[[0, 4, 7, 8, 22, 23]], [0.0, 0.52, 0.92, 1.08, 2.92, 3.08], atol=1e-9)
    np.testing.assert_allclose(b.patch_pts, [0.0, 0.52, 0.92, 1.48, 2.0, 2.52, 2.92], atol=1e-9)
    expected = _brute_force(a.pts, 2.0)
    assert b.patch_pts.tolist() == a.pts[expected].tolist() and len(expected) == 7
    np.testing.assert_array_equal(b.patch, a.patch[expected])  # the same numbers, on the sub-grid
    np.testing.assert_array_equal(patch_frame_rows(sub.video_arrays("clip")), expected)
    assert verify_store(sub, expected_ids=["clip"]).clean and verify_store(full, expected_ids=["clip"]).clean


def test_featurize_config_patch_fps(tmp_path: Path, tiny_clip: str) -> None:
    from vqacache.featurize.config import FeaturizeConfig
    from vqacache.featurize.pipeline import featurize

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "clip.mp4", 80, rate=25)
    result = featurize(FeaturizeConfig(dataset="folder", data_root=tmp_path / "videos", encoder=tiny_clip, weights="random",
                                       cache_root=tmp_path / "cache", patch_fps="2", dtype="float32", workers=0))
    assert result.exit_code == 0 and result.done == 1
    store = open_store(result.store_path)
    assert store.spec.outputs.patch_fps == "2/1"
    v = store.read_video("clip")
    rows = _brute_force(v.pts, 2.0)
    assert v.cls.shape[0] == 24 and v.patch.shape[0] == len(rows) == 7
    np.testing.assert_array_equal(v.patch_pts, v.pts[rows])
    assert verify_store(store, expected_ids=["clip"]).clean


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patch-fps", "15"], "--patch-fps 15 is above --fps 7.5"),
        (["--patch-fps", "0"], "--patch-fps"),
        (["--patch-fps", "2", "--no-patches"], "--patch-fps needs patch tokens"),
    ],
)
def test_patch_fps_usage_errors_are_one_line_exit_2(tmp_path: Path, demo_root: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from vqacache.cli.featurize import app

    result = CliRunner().invoke(app, ["--dataset", "demo", "--data-root", str(demo_root), "--encoder", "clip-b16",
                                      "--weights", "random", "--cache-root", str(tmp_path), "--workers", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 2
