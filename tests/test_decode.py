"""The decoder against an independent PyAV reference, on synthetic and real videos."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from synthetic_videos import (
    WrittenVideo,
    read_indices,
    write_audio_only,
    write_no_frames,
    write_video,
)

from vqacache.cache_spec.errors import UsageError, VqaCacheError
from vqacache.featurize.decode import (
    DEFAULT_FPS,
    DecodeError,
    Orientation,
    decode_at_fps,
    iter_decode_at_fps,
    output_size,
    resize_short_side,
)

# -- an independent reference: PyAV only, the rule written out plainly -----------------------


def reference_decode(
    path: Path, fps: Fraction = DEFAULT_FPS, short_side: int | None = 256
) -> tuple[list[int], list[float], np.ndarray]:
    """(src_index, pts seconds, (T, H, W, 3) frames) by decoding every frame with PyAV.

    Written without frame_plan: decode all frames, take their pts, apply the rule with
    Fractions and brute force. Decoders emit frames in presentation order; MPEG-4 AVI with
    B-frames labels them with packet-order pts, so the i-th emitted frame is paired with
    the i-th smallest pts.
    """
    images, stamps = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            stamps.append(frame.pts)
            time_base = Fraction(frame.time_base)
    stamps.sort()
    seconds = [(s - stamps[0]) * time_base for s in stamps]
    gaps = sorted(b - a for a, b in zip(seconds, seconds[1:]) if b > a)
    duration = seconds[-1] + gaps[(len(gaps) - 1) // 2]
    chosen: list[int] = []
    while Fraction(len(chosen)) / fps < duration:
        t = Fraction(len(chosen)) / fps
        chosen.append(min(range(len(seconds)), key=lambda i: (abs(seconds[i] - t), i)))
    frames = resize_short_side(np.stack([images[i] for i in chosen]), short_side)
    return chosen, [float(seconds[i]) for i in chosen], frames


def _packets_reordered(path: Path) -> bool:
    """True when packets arrive out of pts order, i.e. the stream has B-frames."""
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    return any(b < a for a, b in zip(pts, pts[1:]))


# -- real videos -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_matches_reference_on_shared_videos(shared_videos: Path, backend: str) -> None:
    paths = sorted(p for p in shared_videos.iterdir() if p.is_file())
    assert paths
    for path in paths:
        src, pts, frames = reference_decode(path)
        got = decode_at_fps(path, backend=backend)
        assert got.src_index.tolist() == src, path.name
        np.testing.assert_allclose(got.pts, pts, rtol=0, atol=1e-9, err_msg=path.name)
        assert got.frames.shape == frames.shape and np.array_equal(got.frames, frames), path.name
        assert got.is_repeat.tolist() == [False] + [a == b for a, b in zip(src, src[1:])]
        assert got.info.n_frames == len(src) and got.info.rotation == 0
        assert min(got.frames.shape[1:3]) == 256


def test_backend_choice_on_shared_videos(shared_videos: Path) -> None:
    infos = {p.name: decode_at_fps(p, short_side=32).info for p in shared_videos.iterdir()}
    avi = infos.pop("mpeg4_25fps_320x240.avi")
    assert avi.backend == "pyav" and "AVI with B-frames" in avi.fallback_reason
    assert avi.codec == "mpeg4" and avi.native_fps == "25/1"
    for name, info in infos.items():
        assert info.backend == "decord" and info.fallback_reason is None, name
    assert infos["ntsc_29.97fps_426x240.mp4"].native_fps == "30000/1001"
    assert infos["lowfps_6fps_340x256.mp4"].n_repeats > 0
    assert infos["kinetics_28fps_340x256.mp4"].n_frames == 75  # grid point at D excluded


# -- synthetic videos with the frame index drawn in ----------------------------------------

VFR_TICKS = np.cumsum([0] + [33, 40, 20, 100, 33, 33, 67, 10, 33] * 3 + [33, 33]).tolist()

# decord2 3.4 returns 4-channel garbage for some narrow widths (32, 48, 96 and 144 at height 64;
# decord 0.6 did for 48 and 72; benchmarks/decoders.py measures real videos): the cases meant to
# take the decord path use a width it decodes, "width48" checks that the fallback catches it.
DECORD_OK = dict(width=112, height=64)

CASES = {
    "h264_bframes": dict(n_frames=50, codec="libx264", rate=25, options={"bf": "3"}, **DECORD_OK),
    "mpeg4_avi_bframes": dict(n_frames=50, codec="mpeg4", rate=25, max_b_frames=2),
    "vfr": dict(n_frames=30, rate=30, time_base=Fraction(1, 1000), pts_ticks=VFR_TICKS, **DECORD_OK),
    "ntsc_start_offset": dict(
        n_frames=40, rate=Fraction(30000, 1001), time_base=Fraction(1, 30000),
        pts_ticks=[9009 + 1001 * i for i in range(40)], **DECORD_OK,
    ),
    "rot90": dict(n_frames=20, rate=10, width=64, height=96, rotation=90),
    "rot180": dict(n_frames=20, rate=10, rotation=180),
    "rot270_mirrored": dict(n_frames=20, rate=10, width=64, height=96, rotation=270, hflip=True),
    "fps6": dict(n_frames=24, rate=6, **DECORD_OK),
    "width48": dict(n_frames=20, rate=10, width=48, height=64),  # decord returns 4 channels
}

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, WrittenVideo]:
    folder = tmp_path_factory.mktemp("synthetic")
    videos = {}
    for name, kwargs in CASES.items():
        suffix = ".avi" if "avi" in name else ".mp4"
        videos[name] = write_video(folder / f"{name}{suffix}", **kwargs)
    return videos


@pytest.mark.parametrize("name", list(CASES))
def test_synthetic_frames_are_the_planned_ones(synthetic: dict, name: str) -> None:
    video = synthetic[name]
    auto = decode_at_fps(video.path)
    pyav = decode_at_fps(video.path, backend="pyav")
    for got in (auto, pyav):
        assert read_indices(got.frames).tolist() == got.src_index.tolist()
        assert got.frames.shape[1:] == (*output_size(video.height, video.width, 256), 3)
    assert np.array_equal(auto.src_index, pyav.src_index)
    assert np.array_equal(auto.frames, pyav.frames)
    if not CASES[name].get("rotation"):  # the reference does not rotate
        src, pts, frames = reference_decode(video.path)
        assert auto.src_index.tolist() == src and np.array_equal(auto.frames, frames)
        np.testing.assert_allclose(auto.pts, pts, rtol=0, atol=1e-9)
    # The written times, through the rule by brute force, give the same frames.
    assert auto.src_index.tolist() == _plan_from_written(video, DEFAULT_FPS)


def _plan_from_written(video: WrittenVideo, fps: Fraction) -> list[int]:
    """The rule by brute force on the timestamps given to the encoder."""
    exact = [(t - video.pts_ticks[0]) * video.time_base for t in video.pts_ticks]
    gaps = sorted(b - a for a, b in zip(exact, exact[1:]) if b > a)
    duration = exact[-1] + gaps[(len(gaps) - 1) // 2]
    out: list[int] = []
    while Fraction(len(out)) / fps < duration:
        t = Fraction(len(out)) / fps
        out.append(min(range(len(exact)), key=lambda i: (abs(exact[i] - t), i)))
    return out


def test_synthetic_backends_and_metadata(synthetic: dict) -> None:
    info = {name: decode_at_fps(v.path, short_side=None).info for name, v in synthetic.items()}
    assert _packets_reordered(synthetic["h264_bframes"].path)
    assert info["h264_bframes"].backend == "decord"
    assert _packets_reordered(synthetic["mpeg4_avi_bframes"].path)
    assert info["mpeg4_avi_bframes"].backend == "pyav"
    assert info["mpeg4_avi_bframes"].codec == "mpeg4"
    assert info["vfr"].native_fps == "1000/33"  # lower median of the deltas
    assert info["ntsc_start_offset"].native_fps == "30000/1001"
    assert (info["rot90"].rotation, info["rot90"].mirrored) == (90, False)
    assert (info["rot90"].width, info["rot90"].height) == (96, 64)  # stored landscape
    assert (info["rot90"].out_width, info["rot90"].out_height) == (64, 96)  # shown portrait
    assert (info["rot180"].rotation, info["rot180"].mirrored) == (180, False)
    assert (info["rot270_mirrored"].rotation, info["rot270_mirrored"].mirrored) == (270, True)
    for name in ("rot90", "rot180", "rot270_mirrored"):
        assert info[name].backend == "pyav" and "display matrix" in info[name].fallback_reason
    assert info["fps6"].n_repeats > 0 and info["fps6"].native_fps == "6/1"
    assert info["width48"].backend == "pyav" and "frame 0" in info["width48"].fallback_reason


def test_decord_is_refused_where_unreliable(synthetic: dict) -> None:
    with pytest.raises(UsageError, match="AVI with B-frames"):
        decode_at_fps(synthetic["mpeg4_avi_bframes"].path, backend="decord")
    forced = decode_at_fps(synthetic["fps6"].path, backend="decord")
    assert forced.info.backend == "decord"


def test_edit_list_preroll_is_not_a_frame(tmp_path: Path) -> None:
    # Frames with negative pts become edit-list pre-roll: demuxed as discard, never shown.
    video = write_video(tmp_path / "preroll.mp4", 30, pts_ticks=[i - 3 for i in range(30)])
    got = decode_at_fps(video.path, short_side=None)
    assert got.info.n_source_frames == 27
    assert read_indices(got.frames).tolist() == (got.src_index + 3).tolist()
    assert got.info.backend == "pyav" and "decord counts 30" in got.info.fallback_reason


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("name", ["fps6", "h264_bframes"])
def test_streaming_concatenates_to_whole(synthetic: dict, name: str, backend: str) -> None:
    path = synthetic[name].path
    whole = decode_at_fps(path, short_side=48, backend=backend)
    for chunk_frames in (1, 4, 7, 1000):
        chunks = list(
            iter_decode_at_fps(path, short_side=48, chunk_frames=chunk_frames, backend=backend)
        )
        assert all(len(c.frames) <= chunk_frames for c in chunks)
        assert all(len(c.frames) == chunk_frames for c in chunks[:-1])
        assert all(c.info == whole.info for c in chunks)
        for field in ("frames", "pts", "src_index", "is_repeat"):
            joined = np.concatenate([getattr(c, field) for c in chunks])
            assert np.array_equal(joined, getattr(whole, field)), (chunk_frames, field)


def test_fps_forms_and_native_size(synthetic: dict) -> None:
    path = synthetic["h264_bframes"].path
    a = decode_at_fps(path, fps=7.5, short_side=None)
    b = decode_at_fps(path, fps="15/2", short_side=None)
    c = decode_at_fps(path, fps=Fraction(15, 2), short_side=None)
    assert a.frames.shape == (15, 64, 112, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.frames, c.frames)
    assert a.info.fps == "15/2"
    # 2 s of 25 fps at 2 fps: t = 1.5 s falls between frames 37 and 38, a tie -> 37.
    assert decode_at_fps(path, fps="2", short_side=None).src_index.tolist() == [0, 12, 25, 37]
    for bad in (0, -1, "abc", "1/0"):
        with pytest.raises(UsageError):
            decode_at_fps(path, fps=bad)
    with pytest.raises(UsageError):
        decode_at_fps(path, short_side=0)


# -- broken inputs -------------------------------------------------------------------------


def test_broken_inputs_raise_decode_error(tmp_path: Path, synthetic: dict) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 100)
    full = synthetic["h264_bframes"].path.read_bytes()  # index (moov) at the end
    (tmp_path / "cut_index.mp4").write_bytes(full[: len(full) // 2])
    fast = write_video(tmp_path / "fast.mp4", 50, container_options={"movflags": "faststart"})
    data = fast.path.read_bytes()  # index at the start: frames known, data missing
    (tmp_path / "cut_data.mp4").write_bytes(data[: len(data) * 3 // 4])
    expected = {
        "missing.mp4": "missing",
        "empty.mp4": "unreadable",
        "random.mp4": "unreadable",
        "text.mp4": "unreadable",
        "cut_index.mp4": "unreadable",
        "cut_data.mp4": "decode-error",
        "audio.wav": "no-video-stream",
        "no_frames.mkv": "zero-frames",
    }
    write_audio_only(tmp_path / "audio.wav")
    write_no_frames(tmp_path / "no_frames.mkv")
    for name, reason in expected.items():
        with pytest.raises(DecodeError) as caught:
            decode_at_fps(tmp_path / name)
        assert caught.value.reason == reason, (name, str(caught.value))
        assert "\n" not in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncation_never_loses_frames_silently(tmp_path: Path, faststart: bool) -> None:
    options = {"movflags": "faststart"} if faststart else None
    video = write_video(tmp_path / "v.mp4", 40, gop_size=8, container_options=options)
    data = video.path.read_bytes()
    cut = tmp_path / "cut.mp4"
    for end in np.linspace(len(data) * 0.05, len(data) - 1, 25).astype(int):
        cut.write_bytes(data[:end])
        try:
            got = decode_at_fps(cut, short_side=None)
        except DecodeError:
            continue
        # Only trailing metadata was cut: every frame must still be there and right.
        assert got.info.n_source_frames == 40
        assert read_indices(got.frames).tolist() == got.src_index.tolist()


def test_pyav_path_checks_the_decoded_frame_count(synthetic: dict, monkeypatch) -> None:
    import vqacache.featurize.decode as decode

    real_decode = av.container.InputContainer.decode

    def drop_last(self, *args, **kwargs):
        frames = list(real_decode(self, *args, **kwargs))
        return iter(frames[:-1])

    monkeypatch.setattr(av.container.InputContainer, "decode", drop_last)
    with pytest.raises(DecodeError) as caught:
        decode.decode_at_fps(synthetic["fps6"].path, backend="pyav")
    assert caught.value.reason == "decode-error" and "decoded 23 frames" in str(caught.value)


def test_decode_error_type() -> None:
    error = DecodeError("zero-frames", "x.mp4: the video stream has no frames")
    assert isinstance(error, VqaCacheError) and isinstance(error, RuntimeError)
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, str(again)) == ("zero-frames", str(error))
    with pytest.raises(ValueError):
        DecodeError("nope", "message")


# -- orientation and size --------------------------------------------------------------------


def _display_matrix(ccw_degrees: int, hflip: bool) -> list[int]:
    """FFmpeg's av_display_rotation_set(-degrees) then av_display_matrix_flip(hflip)."""
    radians = np.deg2rad(ccw_degrees)
    c, s = np.cos(radians), np.sin(radians)
    m = [c, -s, 0, s, c, 0, 0, 0, 1]
    fixed = [int(round(v * (1 << 16))) for v in m[:8]] + [1 << 30]
    if hflip:
        fixed[0], fixed[3], fixed[6] = -fixed[0], -fixed[3], -fixed[6]
    return fixed


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_orientation_from_display_matrix(degrees: int, hflip: bool) -> None:
    image = np.arange(2 * 3 * 1).reshape(1, 2, 3, 1)
    orientation = Orientation.from_display_matrix(np.array(_display_matrix(degrees, hflip)))
    expected = np.rot90(image[0, :, :, 0], degrees // 90)
    expected = np.fliplr(expected) if hflip else expected
    assert np.array_equal(orientation.apply(image)[0, :, :, 0], expected)
    assert (orientation.rotation, orientation.mirrored) == (degrees, hflip)
    assert orientation.is_identity == (degrees == 0 and not hflip)


def test_orientation_edge_cases() -> None:
    assert Orientation.from_display_matrix(None).is_identity
    assert Orientation.from_display_matrix(np.zeros(9, dtype=np.int32)).is_identity
    with pytest.raises(ValueError, match="90 degrees"):
        Orientation.from_display_matrix(np.array(_display_matrix(45, False)))


def test_output_size_and_resize() -> None:
    assert output_size(240, 426, 256) == (256, 454)  # long side floored
    assert output_size(640, 360, 256) == (455, 256)
    assert output_size(240, 320, None) == (240, 320)
    frames = np.random.default_rng(0).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    small = resize_short_side(frames, 12)
    assert small.shape == (3, 12, 16, 3) and small.dtype == np.uint8
    assert np.array_equal(resize_short_side(frames[1:2], 12), small[1:2])  # batch-independent
    assert resize_short_side(frames, 24) is frames
    flat = np.full((1, 24, 32, 3), 77, dtype=np.uint8)
    assert (resize_short_side(flat, 13) == 77).all()
