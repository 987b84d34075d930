"""Folders of numbered frames (TVQA, VLEP, EgoTaskQA) decode like a video with those timestamps.

References are independent of the code under test: the plan is ``plan_frames`` on the frame
numbers, the pixels are PIL-read images resized by ``resize_short_side``, and the 3 -> 7.5
fps repeats are worked out by hand. Images are tiny (64x48) and written here.

The pool test and the end-to-end run share one decode pool (``cached_pool`` with the
pipeline's default DecodeArgs): its spawned child imports torch once (seconds), not twice.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vqacache.cache_spec import open_store
from vqacache.cache_spec.errors import UsageError
from vqacache.cli.featurize import app as featurize_app
from vqacache.featurize.decode import DecodeError, decode_at_fps, frame_folder, iter_decode_at_fps, resize_short_side
from vqacache.featurize.decode.frame_plan import plan_frames
from vqacache.featurize.decode.pool import DecodePool
from vqacache.featurize.shard import DecodeArgs, cached_pool

FPS = Fraction(15, 2)
SIZE = (64, 48)  # (width, height)


def write_frames(folder: Path, numbers, name: str = "{:05d}.jpg", size=SIZE) -> list[Path]:  # noqa: ANN001
    """Frames with distinct, smooth content (JPEG keeps them apart), one file per number."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in numbers:
        w, h = size
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * 4 + n * 20) % 256, (y * 5 + n * 30) % 256, np.full_like(x, n * 25 % 256)], -1)
        path = folder / name.format(n)
        Image.fromarray(rgb.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, list[Path]]:
    """8 frames 00001.jpg .. 00008.jpg, 64x48."""
    folder = tmp_path / "clip"
    return folder, write_frames(folder, range(1, 9))


def reference_frames(paths: list[Path], short_side: int | None) -> np.ndarray:
    """(N, H, W, 3): each file read by PIL, resized by resize_short_side."""
    return np.stack([resize_short_side(np.array(Image.open(p).convert("RGB"))[None], short_side)[0] for p in paths])


# -- plan, pixels, info -----------------------------------------------------------------------


@pytest.mark.parametrize(("first", "frames_fps"), [(1, Fraction(3)), (10, Fraction(30000, 1001))])
def test_plan_and_pixels_match_independent_references(tmp_path: Path, first: int, frames_fps: Fraction) -> None:
    numbers = range(first, first + 8)
    paths = write_frames(tmp_path / "f", numbers, name="img_{:05d}.jpg")
    got = decode_at_fps(tmp_path / "f", FPS, short_side=32, frames_fps=frames_fps)
    plan = plan_frames([n - first for n in numbers], 1 / frames_fps, FPS, fallback_fps=frames_fps)
    np.testing.assert_array_equal(got.src_index, plan.src_index)
    np.testing.assert_array_equal(got.pts, plan.pts)
    np.testing.assert_array_equal(got.is_repeat, plan.is_repeat)
    assert got.frames.dtype == np.uint8 and got.frames.shape == (plan.n_frames, 32, 42, 3)
    np.testing.assert_array_equal(got.frames, reference_frames(paths, 32)[plan.src_index])
    info = got.info
    assert (info.backend, info.container, info.codec, info.fallback_reason) == ("frames", "frame-folder", "jpeg", None)
    assert (info.width, info.height, info.out_width, info.out_height) == (64, 48, 42, 32)
    assert (info.rotation, info.mirrored, info.path) == (0, False, str(tmp_path / "f"))
    assert Fraction(info.time_base) == 1 / frames_fps and Fraction(info.native_fps) == frames_fps
    assert (info.fps, info.n_source_frames, info.n_frames) == ("15/2", 8, plan.n_frames)
    assert info.duration == pytest.approx(float(8 / frames_fps))


def test_3fps_at_7_5fps_repeats_frames_as_worked_out_by_hand(clip) -> None:  # noqa: ANN001
    got = decode_at_fps(clip[0], FPS, short_side=None, frames_fps=3)
    # output step k at k * 2/15 s = 0.4 k source frames; nearest frame, ties to the earlier
    assert got.src_index.tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7]
    assert got.is_repeat.tolist() == [False, True, False, True, False, True, True, False, True, False, True,
                                      True, False, True, False, True, True, False, True, True]
    np.testing.assert_allclose(got.pts, got.src_index / 3)
    assert got.info.n_repeats == 12 and got.frames.shape == (20, 48, 64, 3)


def test_chunks_concatenate_to_the_whole_and_each_image_is_read_once(clip, monkeypatch) -> None:  # noqa: ANN001
    whole = decode_at_fps(clip[0], FPS, short_side=None, frames_fps="3")
    reads: list[str] = []
    real_read = frame_folder._read
    monkeypatch.setattr(frame_folder, "_read", lambda p: reads.append(p.name) or real_read(p))
    chunks = list(iter_decode_at_fps(clip[0], FPS, short_side=None, chunk_frames=3, frames_fps=3))
    assert [c.frames.shape[0] for c in chunks] == [3] * 6 + [2]
    for name in ("frames", "pts", "src_index", "is_repeat"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, name) for c in chunks]), getattr(whole, name))
    assert all(c.info == whole.info for c in chunks)
    assert sorted(reads) == [p.name for p in clip[1]]  # 8 images for 20 output frames in 7 chunks


def test_frames_skipped_by_a_slower_output_are_never_read(clip, monkeypatch) -> None:  # noqa: ANN001
    reads: list[str] = []
    real_read = frame_folder._read
    monkeypatch.setattr(frame_folder, "_read", lambda p: reads.append(p.name) or real_read(p))
    got = decode_at_fps(clip[0], Fraction(1), short_side=None, frames_fps=3)
    assert got.src_index.tolist() == [0, 3, 6]
    assert reads == ["00001.jpg", "00004.jpg", "00007.jpg"]


def test_png_names_sort_by_their_last_number_and_other_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    paths = write_frames(folder, [9, 10, 11], name="s2_frame{}.PNG")  # 10 after 9, not before
    (folder / "notes.txt").write_text("not a frame")
    got = decode_at_fps(folder, FPS, short_side=None, frames_fps=3)
    assert got.info.codec == "png" and got.info.n_source_frames == 3
    np.testing.assert_array_equal(got.frames, reference_frames(paths, None)[got.src_index])


def test_egotaskqa_folder_shows_interval_frame_k_at_k_over_the_frame_rate(tmp_path: Path) -> None:
    """LEMMA's interval frame k is img_<k+1>.jpg; the adapter puts it at k / frame_rate s."""
    from vqacache.featurize.datasets import get_dataset

    item = {"question": "q?", "answer": "a", "interval": "S1_Cook|P1|2|5", "type": ["t"], "category": ["c"],
            "semantic": "s", "structural": "q", "reference": "r", "question_id": 0}
    (tmp_path / "val_qas.json").write_text(json.dumps([item]))
    paths = write_frames(tmp_path / "frames" / "S1_Cook" / "fpv1", range(1, 9), name="img_{:05d}.jpg")
    ds = get_dataset("egotaskqa", tmp_path, frame_rate=5)
    (video,), question = ds.videos(), ds.questions("val")[0]
    assert (video.frame_rate, question.start, question.end) == (5, 0.4, 1.0)
    decoded = decode_at_fps(video.path, fps=5, short_side=None, frames_fps=video.frame_rate)
    (k,) = np.flatnonzero(decoded.pts == question.start)
    np.testing.assert_array_equal(decoded.frames[k], reference_frames([paths[2]], None)[0])  # img_00003.jpg


# -- failures ------------------------------------------------------------------------------------


def decode_error(path: Path, frames_fps: object = 3) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        decode_at_fps(path, FPS, short_side=None, frames_fps=frames_fps)
    assert "\n" not in str(err.value)
    return err.value


def test_a_gap_in_the_numbering_fails(tmp_path: Path) -> None:
    write_frames(tmp_path / "f", [1, 2, 4])
    error = decode_error(tmp_path / "f")
    assert error.reason == "decode-error"
    assert str(error) == f"{tmp_path / 'f'}: frame 3 missing (numbering jumps from 2 to 4)"


def test_a_number_twice_fails(tmp_path: Path) -> None:
    write_frames(tmp_path / "f", [1, 2, 3])
    write_frames(tmp_path / "f", [3], name="img_{}.png")
    error = decode_error(tmp_path / "f")
    assert error.reason == "decode-error" and "frame 3 twice" in str(error)


def test_an_image_without_a_number_fails(tmp_path: Path) -> None:
    write_frames(tmp_path / "f", [1, 2])
    write_frames(tmp_path / "f", [0], name="cover.jpg")
    error = decode_error(tmp_path / "f")
    assert error.reason == "decode-error" and "cover.jpg has no frame number" in str(error)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_image_fails_naming_the_file(clip, damage: str) -> None:  # noqa: ANN001
    broken = clip[1][4]
    data = broken.read_bytes()
    broken.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    error = decode_error(clip[0])
    assert error.reason == "decode-error" and str(broken) in str(error)


def test_frames_of_another_size_fail(clip) -> None:  # noqa: ANN001
    write_frames(clip[0], [5], size=(48, 64))
    error = decode_error(clip[0])
    assert error.reason == "decode-error" and "00005.jpg: 48x64 pixels, frame 1 has 64x48" in str(error)


def test_empty_missing_and_rateless_folders(tmp_path: Path, clip) -> None:  # noqa: ANN001
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    assert decode_error(tmp_path / "empty").reason == "zero-frames"
    assert decode_error(tmp_path / "absent").reason == "missing"
    with pytest.raises(DecodeError) as err:
        list(frame_folder.iter_decode_frame_folder(tmp_path / "absent", FPS, 3, None, 8))
    assert err.value.reason == "missing"
    error = decode_error(clip[0], frames_fps=None)
    assert error.reason == "unreadable"
    assert str(error) == f"{clip[0]}: a folder of frames needs its frame rate (frames_fps)"
    for bad in ("fast", 0, -3, True):
        with pytest.raises(UsageError, match="frames_fps must be a positive number"):
            decode_at_fps(clip[0], FPS, frames_fps=bad)


def test_nothing_is_read_before_the_first_next(clip, monkeypatch) -> None:  # noqa: ANN001
    listed: list[Path] = []
    real_list = frame_folder.list_frames
    monkeypatch.setattr(frame_folder, "list_frames", lambda folder: listed.append(folder) or real_list(folder))
    chunks = iter_decode_at_fps(clip[0], FPS, frames_fps=3)
    assert listed == []
    assert next(chunks).info.container == "frame-folder" and listed == [clip[0]]


# -- through the decode pool and the pipeline ---------------------------------------------------

PIPELINE_DECODE = DecodeArgs(fps="15/2", short_side=256, processes=1, timeout_s=300.0, frames_fps="3")
"""What ``vqa-featurize --workers 0`` builds for 3 fps frame folders with default options."""


def test_decode_pool_passes_frames_fps_to_its_children(clip, tmp_path: Path) -> None:  # noqa: ANN001
    write_frames(tmp_path / "gap", [1, 3])
    with pytest.raises(UsageError, match="frames_fps"):
        DecodePool(1, frames_fps="fast")
    pool = cached_pool(PIPELINE_DECODE)  # a DecodePool(1, fps="15/2", short_side=256, frames_fps=3)
    expected = list(iter_decode_at_fps(clip[0], FPS, short_side=256, chunk_frames=8, frames_fps=3))
    streams = []
    for stream in pool.imap([("clip", clip[0]), ("gap", tmp_path / "gap")]):
        try:
            streams.append(list(stream.chunks()))
        except DecodeError as e:
            streams.append(e)
    got, gap = streams
    for name in ("frames", "pts", "src_index", "is_repeat"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, name) for c in got]),
                                      np.concatenate([getattr(c, name) for c in expected]))
    assert got[0].info == expected[0].info
    assert isinstance(gap, DecodeError) and gap.reason == "decode-error" and "frame 2 missing" in str(gap)


def test_a_run_has_one_frame_rate_for_its_frame_folders(tmp_path: Path) -> None:
    from vqacache.featurize.datasets import VideoRecord
    from vqacache.featurize.pipeline import frames_fps_of

    file, a, b = (VideoRecord("f", tmp_path / "f.mp4"), VideoRecord("a", tmp_path / "a", Fraction(3)),
                  VideoRecord("b", tmp_path / "b", Fraction(30000, 1001)))
    assert frames_fps_of([file]) is None and frames_fps_of([]) is None
    assert frames_fps_of([file, a, a]) == "3" and frames_fps_of([b]) == "30000/1001"
    with pytest.raises(UsageError, match="share one frame rate, got 3, 30000/1001 fps") as err:
        frames_fps_of([a, file, b])
    assert "\n" not in str(err.value)


def test_featurize_tvqa_frame_folders_end_to_end(tmp_path: Path, tiny_clip: str, monkeypatch) -> None:  # noqa: ANN001
    """A TVQA-style data root with frames only: both clips stored complete, as frame folders,
    and the image-QA pass decodes the same folders again (at the same rate) for the teacher."""
    from vqacache.featurize.imageqa import registry

    monkeypatch.setitem(registry.TEACHERS, "fake", "fake_teacher:build_fake_teacher")
    data = tmp_path / "tvqa"
    write_frames(data / "frames_hq" / "bbt_frames" / "s01e01_seg01_clip_00", range(1, 9))
    write_frames(data / "frames_hq" / "friends_s01e01_seg01_clip_00", range(1, 7))  # flat layout
    lines = [{"qid": i, "q": f"question {i}?", **{f"a{j}": f"answer {j}" for j in range(5)}, "ts": "0.5-1.5",
              "vid_name": vid, "show_name": "x"}
             for i, vid in enumerate(["s01e01_seg01_clip_00", "friends_s01e01_seg01_clip_00"])]
    (data / "tvqa_test_public.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = tmp_path / "cache"
    assert cached_pool(PIPELINE_DECODE) is not None  # the pool the run below uses
    result = CliRunner().invoke(featurize_app, [
        "--dataset", "tvqa", "--data-root", str(data), "--encoder", tiny_clip, "--weights", "random",
        "--cache-root", str(cache), "--no-patches", "--workers", "0", "--imageqa", "fake", "--imageqa-frames", "3"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = open_store(next(cache.glob("*/*.zarr")))
    assert store.complete_videos() == ["friends_s01e01_seg01_clip_00", "s01e01_seg01_clip_00"]
    for vid, n_source in [("s01e01_seg01_clip_00", 8), ("friends_s01e01_seg01_clip_00", 6)]:
        video = store.read_video(vid)
        plan = plan_frames(list(range(n_source)), Fraction(1, 3), FPS)
        np.testing.assert_array_equal(video.pts, plan.pts)
        np.testing.assert_array_equal(video.is_repeat, plan.is_repeat)
        source = video.attrs["source"]
        assert (source["container"], source["backend"], source["codec"]) == ("frame-folder", "frames", "jpeg")
        assert (source["native_fps"], source["n_source_frames"], source["n_frames"]) == ("3/1", n_source, plan.n_frames)
        assert source["path"].endswith(vid)
    for qid in store.questions("test"):
        q = store.read_question(qid)  # the segment 0.5-1.5 s: its frames, scored by the teacher
        assert q.imageqa.shape == (3, 5) and np.allclose(q.imageqa.sum(axis=1), 1.0)
        assert np.all((q.imageqa_pts >= 0.0) & (q.imageqa_pts <= 1.5)), q.imageqa_pts
