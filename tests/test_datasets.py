"""Dataset registry and the demo, folder and nextqa adapters."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vqacache.cache_spec.errors import UnknownName, UsageError, VqaCacheError
from vqacache.featurize.datasets import (
    MissingVideos,
    QuestionRecord,
    VideoQADataset,
    VideoRecord,
    check_videos,
    get_dataset,
    list_datasets,
)
from vqacache.featurize.datasets import demo as demo_adapter
from vqacache.featurize.datasets import demo_generator as gen

# -- registry -------------------------------------------------------------------------------


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    assert {"demo", "folder", "nextqa"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())
    with pytest.raises(UnknownName) as err:
        get_dataset("nexqa", "/tmp")
    assert isinstance(err.value, KeyError) and isinstance(err.value, VqaCacheError)
    assert "'nexqa'" in str(err.value)
    assert f"available: {', '.join(list_datasets())}" in str(err.value)  # every name, sorted


def test_unknown_option_lists_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown option.*videoroot.*accepted: video_root"):
        get_dataset("nextqa", tmp_path, videoroot=tmp_path)
    with pytest.raises(UsageError, match=r"accepted: \(none\)"):
        get_dataset("folder", tmp_path, recursive=False)


# -- demo -----------------------------------------------------------------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    get_dataset("demo", root)
    return root


def test_demo_generation_is_byte_deterministic(demo_root: Path, tmp_path: Path) -> None:
    gen.generate_demo(tmp_path)
    assert _hashes(tmp_path) == _hashes(demo_root)
    manifest = json.loads((demo_root / gen.MANIFEST).read_text())
    assert manifest["generator"] == gen.GENERATOR
    assert manifest["generator_version"] == gen.GENERATOR_VERSION
    expected = {k: v for k, v in _hashes(demo_root).items() if k != gen.MANIFEST}
    assert manifest["files"] == expected


def test_demo_splits_videos_and_questions(demo_root: Path) -> None:
    ds = get_dataset("demo", demo_root)
    assert isinstance(ds, VideoQADataset)
    assert ds.splits() == ("train", "val")
    train, val = ds.videos("train"), ds.videos("val")
    assert len(train) == 12 and len(val) == 4
    assert not {v.video_id for v in train} & {v.video_id for v in val}
    assert [v.video_id for v in ds.videos()] == [f"clip{i:02d}" for i in range(16)]
    assert all(v.path.is_absolute() and v.path.is_file() for v in ds.videos())
    assert check_videos(ds, "val") == val and ds.missing_videos() == []

    questions = ds.questions("train") + ds.questions("val")
    assert len(questions) == 64 and len({q.qid for q in questions}) == 64
    assert collections.Counter(q.qtype for q in questions) == {t: 16 for t in gen.QTYPES}
    for q in questions:
        assert isinstance(q, QuestionRecord) and q.start is None and q.end is None
        assert len(q.candidates) == gen.N_CANDIDATES == len(set(q.candidates))
        assert isinstance(q.answer, int) and 0 <= q.answer < len(q.candidates)
    with pytest.raises(UsageError, match="unknown split 'test'; available: train, val"):
        ds.questions("test")


def test_demo_answers_match_the_ground_truth(demo_root: Path) -> None:
    """Recompute every answer from scenes.json, independently of the question builder."""
    scenes = {c["video_id"]: c for c in json.loads((demo_root / gen.SCENES).read_text())["clips"]}
    ds = get_dataset("demo", demo_root)
    for q in ds.questions("train") + ds.questions("val"):
        shapes = scenes[q.video_id]["shapes"]
        labels = [f"{s['colour']} {s['kind']}" for s in shapes]
        if q.qtype == "start-colour":
            expected = [s["colour"] for s in shapes if s["appear"] == 0.0]
        elif q.qtype == "after":
            anchor = labels.index(q.question.removeprefix("What appears right after the ")[:-1])
            expected = [labels[anchor + 1]]
        elif q.qtype == "count":
            expected = [str(len(shapes))]
        else:
            expected = [lab for lab, s in zip(labels, shapes) if s["disappear"] is None]
        assert expected == [q.candidates[q.answer]], q


def _colour_and_kind(rgb: np.ndarray, background: tuple[int, int, int]) -> tuple[str, str]:
    """Nearest named colour and shape kind (by bounding-box fill) of the one shape in ``rgb``."""
    mask = np.abs(rgb.astype(int) - background).sum(-1) > 90  # (H, W)
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    kind = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    median = np.median(rgb[mask], axis=0)
    colour = min(gen.COLOURS, key=lambda c: np.abs(median - gen.COLOURS[c]).sum())
    return colour, kind


def test_demo_decoded_frames_show_the_answers(demo_root: Path) -> None:
    """The first decoded frame shows the start colour, the last one the end shape."""
    ds = get_dataset("demo", demo_root)
    answers = {(q.video_id, q.qtype): q.candidates[q.answer] for q in ds.questions("train")}
    answers |= {(q.video_id, q.qtype): q.candidates[q.answer] for q in ds.questions("val")}
    rates = set()
    for clip in gen.demo_clips():
        with av.open(str(demo_root / f"{clip.video_id}.mp4")) as container:
            stream = container.streams.video[0]
            rates.add(stream.average_rate)
            assert stream.average_rate == clip.fps
            frames = list(container.decode(stream))
        assert len(frames) == clip.n_frames
        first, last = (f.to_ndarray(format="rgb24") for f in (frames[0], frames[-1]))
        assert first.shape == (clip.height, clip.width, 3)
        background = gen.BACKGROUNDS[clip.background]
        colour, _ = _colour_and_kind(first, background)
        assert colour == answers[(clip.video_id, "start-colour")]
        colour, kind = _colour_and_kind(last, background)
        assert f"{colour} {kind}" == answers[(clip.video_id, "end-shape")]
    assert Fraction(6) in rates and Fraction(30000, 1001) in rates and len(rates) >= 8


def test_demo_mpeg4_fallback_encodes(tmp_path: Path) -> None:
    clip = gen.make_clip(3)  # the 6 fps one
    gen.encode_clip(clip, tmp_path / "c.mp4", "mpeg4")
    with av.open(str(tmp_path / "c.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4" and stream.average_rate == clip.fps
        assert sum(1 for _ in container.decode(stream)) == clip.n_frames


def test_demo_reuses_regenerates_and_refuses(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    get_dataset("demo", root)  # intact: reused, nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before

    calls = []

    def fake_generate(out: Path) -> None:  # stands in for the encoder: copies the fixture
        calls.append(out)
        shutil.copytree(demo_root, out, dirs_exist_ok=True)

    monkeypatch.setattr(gen, "generate_demo", fake_generate)
    (root / "clip03.mp4").unlink()  # ours but damaged: regenerated
    get_dataset("demo", root)
    assert len(calls) == 1 and _hashes(root) == _hashes(demo_root)
    manifest = json.loads((root / gen.MANIFEST).read_text())
    (root / gen.MANIFEST).write_text(json.dumps({**manifest, "generator_version": 0}))
    get_dataset("demo", root)  # ours but another generator version: regenerated
    assert len(calls) == 2 and _hashes(root) == _hashes(demo_root)
    assert not list(tmp_path.glob(".demo.partial-*"))

    other = tmp_path / "other"
    other.mkdir()
    (other / "holiday.mp4").write_bytes(b"not ours")
    with pytest.raises(UsageError, match="not empty.*holiday.mp4.*demo manifest.json"):
        get_dataset("demo", other)
    assert [p.name for p in other.iterdir()] == ["holiday.mp4"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        get_dataset("demo", tmp_path / "file")


def test_demo_default_root_is_data_demo_in_cwd(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert demo_adapter.DEFAULT_ROOT == Path("data/demo")
    shutil.copytree(demo_root, tmp_path / "data" / "demo")  # reuse instead of generating
    monkeypatch.chdir(tmp_path)
    ds = get_dataset("demo", None)
    assert ds.data_root == (tmp_path / "data" / "demo").resolve()


def test_demo_scenes_keep_their_constraints() -> None:
    for clip in gen.demo_clips():
        assert 2 <= len(clip.shapes) <= 5 and 2.0 <= clip.duration <= 4.1
        assert len({s.colour for s in clip.shapes}) == len(clip.shapes)
        appear = [s.appear for s in clip.shapes]
        assert appear[0] == 0.0
        assert all(b - a >= gen.MIN_GAP - 1e-9 for a, b in zip(appear, appear[1:]))
        assert len(clip.visible(0.0)) == 1
        assert len(clip.visible(clip.frame_time(clip.n_frames - 1))) == 1


# -- folder ---------------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_folder_ids_are_relative_posix_paths(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "b.MKV", "a.mp4", "sub/dir/clip.Mp4", "sub/x.y.webm", "z.ts",
        "notes.txt", "mp4", ".hidden.mp4", ".cache/c.mp4", "sub/.git/d.avi",
    )  # fmt: skip
    ds = get_dataset("folder", tmp_path)
    assert ds.splits() == ("all",) and ds.questions("all") == []
    assert [v.video_id for v in ds.videos()] == ["a", "b", "sub/dir/clip", "sub/x.y", "z"]
    clip = VideoRecord("sub/dir/clip", tmp_path.resolve() / "sub" / "dir" / "clip.Mp4")
    assert ds.videos("all")[2] == clip
    assert check_videos(ds) == ds.videos()
    (tmp_path / "z.ts").unlink()
    with pytest.raises(MissingVideos, match=r"folder: 1 of 5 videos are missing .*z -> z\.ts"):
        check_videos(ds)
    with pytest.raises(UsageError, match="unknown split 'val'; available: all"):
        ds.videos("val")


def test_folder_rejects_duplicate_ids_and_empty_roots(tmp_path: Path) -> None:
    _touch(tmp_path, "sub/a.mp4", "sub/a.AVI")
    with pytest.raises(UsageError, match=r"sub/a\.AVI and sub/a\.mp4 .* same video id 'sub/a'"):
        get_dataset("folder", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no video files .* under --data-root"):
        get_dataset("folder", tmp_path / "empty")


# -- nextqa ---------------------------------------------------------------------------------


@pytest.fixture
def nextqa_root(shared_annotations: Path) -> Path:
    return shared_annotations / "nextqa"


def test_nextqa_parses_the_real_val_csv(nextqa_root: Path) -> None:
    ds = get_dataset("nextqa", nextqa_root)
    assert ds.splits() == ("val", "test")
    val = ds.questions("val")
    assert len(val) == 4996 and len({q.qid for q in val}) == 4996
    assert len(ds.videos("val")) == 570
    assert collections.Counter(q.qtype for q in val) == {
        "CW": 1924, "TN": 895, "CH": 683, "TC": 663, "DO": 305, "DL": 295, "DC": 177, "TP": 54,
    }  # fmt: skip
    assert collections.Counter(q.answer for q in val) == {0: 1013, 1: 1013, 2: 991, 3: 967, 4: 1012}
    assert val[0] == QuestionRecord(
        qid="4010069381_6",
        video_id="4010069381",
        question="how do the two man play the instrument",
        candidates=(
            "roll the handle", "tap their feet", "strum the string", "hit with sticks",
            "pat with hand",
        ),  # fmt: skip
        answer=0,
        qtype="CH",
        split="val",
    )
    assert all(len(q.candidates) == 5 and q.qid.startswith(f"{q.video_id}_") for q in val)
    assert len(ds.questions("test")) == 8564 and len(ds.videos("test")) == 1000
    with pytest.raises(UsageError, match="unknown split 'train'; available: val, test"):
        ds.questions("train")


def test_nextqa_reports_all_missing_videos_at_once(nextqa_root: Path) -> None:
    ds = get_dataset("nextqa", nextqa_root)
    first = ds.videos("val")[0]
    mapping = json.loads((nextqa_root / "map_vid_vidorID.json").read_text())
    assert first.path == nextqa_root.resolve() / "NExTVideo" / f"{mapping[first.video_id]}.mp4"
    with pytest.raises(MissingVideos) as err:
        check_videos(ds, "val")
    assert err.value.total == 570 and len(err.value.missing) == 570
    message = str(err.value)
    assert message.startswith("nextqa: 570 of 570 videos of split 'val' are missing under ")
    under = nextqa_root.resolve() / "NExTVideo"
    assert f"{under} (first: {first.video_id} -> NExTVideo/{mapping[first.video_id]}.mp4" in message
    assert message.endswith(", ...); check --data-root") and "\n" not in message


def test_nextqa_resolves_present_videos(nextqa_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "nextqa"
    root.mkdir()
    for name in ("val.csv", "map_vid_vidorID.json"):
        shutil.copy(nextqa_root / name, root / name)
    ds = get_dataset("nextqa", root)
    assert ds.splits() == ("val",)
    present = ds.videos("val")[:2]
    for v in present:
        v.path.parent.mkdir(parents=True, exist_ok=True)
        v.path.write_bytes(b"placeholder")
    missing = ds.missing_videos("val")
    assert len(missing) == 568 and not {v.video_id for v in present} & set(missing)
    with pytest.raises(MissingVideos, match="568 of 570"):
        check_videos(ds)

    elsewhere = get_dataset("nextqa", root, video_root=tmp_path / "videos")
    assert elsewhere.videos("val")[0].path.parent.parent == (tmp_path / "videos").resolve()
    assert len(elsewhere.missing_videos()) == 570


def test_nextqa_bad_data_roots(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nextqa: --data-root is required"):
        get_dataset("nextqa", None)
    with pytest.raises(UsageError, match="does not exist; expected a folder with .*map_vid"):
        get_dataset("nextqa", tmp_path / "nope")
    with pytest.raises(UsageError, match="lacks train.csv/val.csv/test.csv and map_vid_vidorID"):
        get_dataset("nextqa", tmp_path)
    (tmp_path / "val.csv").write_text("video,question,answer\n1,why,0\n")
    with pytest.raises(UsageError, match=r"lacks map_vid_vidorID\.json \(NExT-QA"):
        get_dataset("nextqa", tmp_path)
    (tmp_path / "map_vid_vidorID.json").write_text('{"1": "0001/1"}')
    with pytest.raises(UsageError, match="lacks column.*qid, type, a0"):
        get_dataset("nextqa", tmp_path).questions("val")
    header = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
    (tmp_path / "val.csv").write_text(header + '1,9,1,1,"why, then",7,0,CW,a,b,c,d,e\n')
    with pytest.raises(UsageError, match="val.csv:2: answer index 7"):
        get_dataset("nextqa", tmp_path).questions("val")
    (tmp_path / "val.csv").write_text(header + '1,9,1,1,"why, then",4,0,CW,a,b,c,d,e\n')
    (q,) = get_dataset("nextqa", tmp_path).questions("val")
    assert q.question == "why, then" and q.candidates[q.answer] == "e" and q.qid == "1_0"


def test_folder_and_demo_bad_data_roots(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="folder: --data-root is required"):
        get_dataset("folder", None)
    (tmp_path / "f.mp4").write_bytes(b"")
    with pytest.raises(UsageError, match="is not a folder"):
        get_dataset("folder", tmp_path / "f.mp4")
