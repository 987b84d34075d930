"""Stage two over several stores of one dataset, and question lists from a dataset adapter."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import SamplingSpec, SpecMismatch, UnknownName, UsageError, open_store
from vqacache.cli.train_head import app, parse_stores
from vqacache.heads.data import NoQuestions, QADataset, frame_indices
from vqacache.heads.questions import MissingQuestions, Question
from vqacache.heads.stores import FrameMisaligned, StoreSet, match_frames
from vqacache.heads.synthetic import make_temporal_store, synthetic_spec
from vqacache.heads.train import TrainConfig, checkpoint_dataset, load_checkpoint, train

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}
KW = dict(splits={"train": 6, "val": 2}, n_frames=10, dim=16, n_patches=2)


def frames_store(path, spec, videos, dataset="synthetic-temporal"):
    """A store holding only videos: ``videos`` = {video_id: (cls (T, E), patch (T, P, W) or None, pts (T,))}."""
    store = open_store(path, "a", spec=spec, dataset=dataset)
    for vid, (cls, patch, pts) in videos.items():
        blocks = {"cls": cls, "pts": pts, "src_index": np.arange(len(pts)), "is_repeat": np.zeros(len(pts), bool)}
        if patch is not None:
            blocks["patch"] = patch
        with store.write_video(vid) as w:
            w.append(**blocks)
    return open_store(path)


def variant(name, **changes):
    """The synthetic spec with another fingerprint (and the given field changes)."""
    spec = synthetic_spec(seed=0)
    return dataclasses.replace(spec, extra={**spec.extra, "variant": name}, **changes)


def random_frames(rng, t, patch=True):
    return rng.standard_normal((t, 16)), rng.standard_normal((t, 2, 16)) if patch else None


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    a = make_temporal_store(root / "a.zarr", **KW)
    b = make_temporal_store(root / "b.zarr", seed=1, **KW)  # same videos and pts, other features
    bare = make_temporal_store(root / "bare.zarr", teacher=False, **KW)
    rng = np.random.default_rng(5)
    vids = a.complete_videos()
    dense, shifted, gap, fps15, nopatch, other = {}, {}, {}, {}, {}, {}
    for vid in vids:
        cls, patch = random_frames(rng, 20)
        dense[vid] = (cls, patch, np.arange(20) / 15)  # a's frame k (k/7.5 s) is index 2k here
        shifted[vid] = (cls[:10], patch[:10], np.arange(10) / 7.5 + 0.05)
        fps15[vid] = (cls, patch, np.arange(20) / 15)
        nopatch[vid] = (cls[:10], None, np.arange(10) / 7.5)
        other[vid] = (cls[:10], patch[:10], np.arange(10) / 7.5)
        if vid != "train00001":
            gap[vid] = (cls[:10], patch[:10], np.arange(10) / 7.5)
    no_patch_outputs = dataclasses.replace(synthetic_spec().outputs, patch_layer=None)
    return {
        "a": a.path, "b": b.path, "bare": bare.path,
        "dense": frames_store(root / "dense.zarr", variant("dense"), dense).path,
        "shifted": frames_store(root / "shifted.zarr", variant("shifted"), shifted).path,
        "gap": frames_store(root / "gap.zarr", variant("gap"), gap).path,
        "fps15": frames_store(root / "fps15.zarr", variant("fps15", sampling=SamplingSpec("15")), fps15).path,
        "nopatch": frames_store(root / "nopatch.zarr", variant("np", outputs=no_patch_outputs), nopatch).path,
        "otherdata": frames_store(root / "other.zarr", variant("o"), other, dataset="another-set").path,
    }


def test_each_role_reads_its_own_store(stores):
    a, b = open_store(stores["a"]), open_store(stores["b"])
    ds = QADataset(stores["a"], "train", num_frames=8, patch_frames="all", roles={"patch": stores["b"]})
    assert ds.fingerprints == {"cls": a.fingerprint, "patch": b.fingerprint, "text": a.fingerprint,
                               "imageqa": a.fingerprint}
    for i in (0, 5):
        s = ds[i]
        va, vb = a.read_video(s["video_id"]), b.read_video(s["video_id"])
        idx = frame_indices(va.pts, 8)
        assert np.allclose(s["cls"].numpy(), va.cls[idx]) and np.allclose(s["patch"].numpy(), vb.patch[idx])
        assert not np.allclose(s["patch"].numpy(), va.patch[idx])
        assert np.allclose(s["text"].numpy(), a.read_question(s["qid"]).text)
    clone = pickle.loads(pickle.dumps(ds))  # a DataLoader worker reopens every store
    assert torch.equal(clone[5]["patch"], ds[5]["patch"]) and torch.equal(clone[5]["cls"], ds[5]["cls"])
    # the teacher from another store: a store without one gains it, identical to the teacher store's own
    bare = QADataset(stores["bare"], "train", num_frames=8)
    assert "imageqa" not in bare[0]
    with_teacher = QADataset(stores["bare"], "train", num_frames=8, roles={"imageqa": stores["a"]})
    assert torch.equal(with_teacher[3]["imageqa"], QADataset(stores["a"], "train", num_frames=8)[3]["imageqa"])


def test_patch_frames_are_matched_by_pts_not_index(stores):
    dense = open_store(stores["dense"])
    ds = QADataset(stores["a"], "train", num_frames=8, patch_frames="all", roles={"patch": stores["dense"]})
    s = ds[2]
    idx = frame_indices(open_store(stores["a"]).read_video(s["video_id"]).pts, 8)
    assert np.allclose(s["patch"].numpy(), dense.read_video(s["video_id"]).patch[2 * idx])
    uni = QADataset(stores["a"], "train", num_frames=8, patch_frames="uniform", num_patch_frames=3,
                    roles={"patch": stores["dense"]})
    chosen = idx[[0, 4, 7]]  # uniform positions 0, 3.5 -> 4, 7 among the 8
    assert np.allclose(uni[2]["patch"].numpy(), dense.read_video(s["video_id"]).patch[2 * chosen])
    assert match_frames(np.array([0.0, 0.4, 0.4]), np.arange(20) / 15, "v").tolist() == [0, 6, 6]
    with pytest.raises(FrameMisaligned, match="0.050 s"):
        match_frames(np.array([0.05]), np.arange(20) / 15, "v")


def test_mismatched_stores_are_refused(stores):
    a = stores["a"]
    with pytest.raises(SpecMismatch, match="15/1 fps"):
        QADataset(a, "train", num_frames=8, patch_frames="all", roles={"patch": stores["fps15"]})
    with pytest.raises(FrameMisaligned, match="decoded this video differently"):
        QADataset(a, "train", num_frames=8, patch_frames="all", roles={"patch": stores["shifted"]})
    with pytest.raises(SpecMismatch, match="another-set"):
        StoreSet(a, {"patch": stores["otherdata"]})
    with pytest.raises(SpecMismatch, match="not 'nextqa'"):
        StoreSet(a, dataset="nextqa")
    with pytest.raises(UnknownName, match="valid: cls, imageqa, patch, text"):
        StoreSet(a, {"patches": stores["b"]})
    with pytest.raises(UsageError, match="--store patch=PATH"):
        QADataset(a, "train", patch_frames="all", roles={"patch": stores["nopatch"]})
    b_fp = open_store(stores["b"]).fingerprint
    with pytest.raises(SpecMismatch, match="the patch store"):
        QADataset(a, "train", patch_frames="all", roles={"patch": stores["dense"]}, expect_fingerprints={"patch": b_fp})
    # patches not read: the patch store is not consulted for frames
    assert len(QADataset(a, "train", num_frames=8, roles={"patch": stores["shifted"]})) == 12


def test_questions_without_features_are_reported(stores):
    a = open_store(stores["a"])
    listed = [
        Question(qid=q.qid, video_id=q.video_id, split="train", question=q.question, candidates=q.candidates,
                 answer=q.answer, qtype=q.qtype)
        for q in (a.read_question(qid) for qid in a.questions("train"))
    ]
    flipped = dataclasses.replace(listed[0], answer=(listed[0].answer + 1) % 4)  # annotations win over the store
    stale = dataclasses.replace(listed[4], candidates=("a", "b", "c", "d"))
    ghost = Question(qid="ghost_0", video_id="ghost", split="train", question="?", candidates=("x", "y"), answer=0)
    questions = [flipped, *listed[1:4], stale, *listed[5:], ghost]
    ds = QADataset(stores["a"], "train", num_frames=8, patch_frames="all", roles={"patch": stores["gap"]},
                   questions=questions)
    missing = ds.coverage.missing
    assert missing == {
        "without a question bundle in the text store": ["ghost_0"],
        "whose stored text differs from the annotations (featurize the text again)": [stale.qid],
        "whose video is not complete in the patch store": ["train00001_0", "train00001_1"],
    }
    assert ds.coverage.listed == 13 and len(ds) == ds.coverage.used == 9
    assert "4 of 13 questions listed by the dataset adapter" in ds.coverage.summary()
    first = next(i for i, r in enumerate(ds.refs) if r.qid == flipped.qid)
    assert ds[first]["answer"] == flipped.answer != listed[0].answer
    # store-driven lists report the same gaps instead of dropping them silently
    store_driven = QADataset(stores["a"], "train", num_frames=8, patch_frames="all", roles={"patch": stores["gap"]})
    assert store_driven.coverage.missing == {"whose video is not complete in the patch store": ["train00001_0",
                                                                                                 "train00001_1"]}
    with pytest.raises(NoQuestions):
        QADataset(stores["a"], "train", questions=[ghost])


class Messages:
    def __init__(self):
        self.lines = []

    def start(self, total_steps, description): ...
    def advance(self, steps, logs): ...
    def finish(self): ...

    def message(self, text):
        self.lines.append(text)


def test_checkpoint_records_every_store_and_resume_checks_them(stores, tmp_path):
    fp = {k: open_store(stores[k]).fingerprint for k in ("a", "b", "dense")}
    cfg = dict(method="uniform", store=str(stores["a"]), batch_size=4, lr=1e-3, args=SMALL, epochs=2,
               out=str(tmp_path / "run"))
    train(TrainConfig(stop_after=1, stores={"patch": str(stores["b"])}, **cfg))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["store_fingerprints"] == {"cls": fp["a"], "patch": fp["b"], "text": fp["a"], "imageqa": fp["a"]}
    assert ckpt["store_specs"]["patch"]["extra"]["seed"] == 1 and ckpt["store_fingerprint"] == fp["a"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["store_roles"]["patch"]["fingerprint"] == fp["b"] and config["questions"]["train"]["used"] == 12
    with pytest.raises(SpecMismatch, match=r"the patch store .*\(it used .*b\.zarr\)"):  # the override forgotten
        train(TrainConfig(resume=True, **cfg))
    with pytest.raises(SpecMismatch, match="the patch store"):
        train(TrainConfig(resume=True, stores={"patch": str(stores["dense"])}, **cfg))
    with pytest.raises(SpecMismatch, match="the checkpoint expects"):
        checkpoint_dataset(ckpt, stores["a"], "val")
    assert len(checkpoint_dataset(ckpt, stores["a"], "val", {"patch": stores["b"]})) == 4
    messages = Messages()
    last = train(TrainConfig(resume=True, stores={"patch": str(stores["b"])}, **cfg), messages)
    assert last["epoch"] == 1 and messages.lines[-1].startswith("epoch 1")
    assert not any(line.startswith("warning") for line in messages.lines)


def test_adapter_question_list_reports_and_can_require_all(stores, tmp_path):
    a = open_store(stores["a"])
    train_q = [
        Question(qid=q.qid, video_id=q.video_id, split="train", question=q.question, candidates=q.candidates,
                 answer=q.answer, qtype=q.qtype)
        for q in (a.read_question(qid) for qid in a.questions("train"))
    ]
    ghost = Question(qid="ghost_0", video_id="ghost", split="train", question="?", candidates=("x", "y"), answer=0)
    cfg = dict(method="uniform", store=str(stores["a"]), batch_size=4, lr=1e-3, args=SMALL, epochs=1)
    messages = Messages()
    train(TrainConfig(out=str(tmp_path / "warn"), **cfg), messages, {"train": [*train_q, ghost]})
    warning = [m for m in messages.lines if m.startswith("warning")]
    assert len(warning) == 1 and "1 of 13 questions" in warning[0] and "ghost_0" in warning[0]
    config = json.loads((tmp_path / "warn" / "config.json").read_text())
    assert config["questions"]["train"]["missing"] == {
        "without a question bundle in the text store": {"count": 1, "first": ["ghost_0"]}}
    assert config["questions"]["val"] == {"source": f"text store {stores['a'].name}", "listed": 4, "used": 4,
                                          "missing": {}}
    with pytest.raises(MissingQuestions, match="ghost_0"):
        train(TrainConfig(out=str(tmp_path / "strict"), require_all_questions=True, **cfg), None,
              {"train": [*train_q, ghost]})


def test_parse_store_options():
    assert parse_stores(["a.zarr", "patch=/x/b.zarr", "imageqa=c=d.zarr"]) == (
        Path("a.zarr"), {"patch": "/x/b.zarr", "imageqa": "c=d.zarr"})
    assert parse_stores(["./odd=name.zarr"]) == (Path("./odd=name.zarr"), {})
    with pytest.raises(UsageError, match="two primary stores"):
        parse_stores(["a.zarr", "b.zarr"])
    with pytest.raises(UsageError, match="given twice"):
        parse_stores(["patch=a.zarr", "patch=b.zarr"])


@pytest.fixture(scope="module")
def demo_store(demo_root, tmp_path_factory):
    """A store of the demo dataset (random features) missing clip01's frames and clip02's questions."""
    from vqacache.featurize.datasets import get_dataset

    adapter = get_dataset("demo", demo_root)
    path = tmp_path_factory.mktemp("demo-store") / "demo.zarr"
    store = open_store(path, "a", spec=variant("demo"), dataset="demo")
    rng = np.random.default_rng(0)
    for split in adapter.splits():
        by_video = {}
        for q in adapter.questions(split):
            by_video.setdefault(q.video_id, []).append(q)
        for vid, qs in sorted(by_video.items()):
            if vid != "clip01" and not store.is_complete(vid):
                cls, patch = random_frames(rng, 12)
                with store.write_video(vid) as w:
                    w.append(cls=cls, patch=patch, pts=np.arange(12) / 7.5, src_index=np.arange(12),
                             is_repeat=np.zeros(12, bool))
            if vid == "clip02":
                continue
            Q, C = len(qs), max(len(q.candidates) for q in qs)
            entries = [{"qid": q.qid, "question": q.question, "candidates": list(q.candidates), "answer": q.answer,
                        "qtype": q.qtype, "start": q.start, "end": q.end} for q in qs]
            store.write_questions(split, vid, entries, {
                "text": rng.standard_normal((Q, 16)), "text_tokens": np.zeros((Q, 1, 16)),
                "text_len": np.ones(Q, np.int64), "cand": rng.standard_normal((Q, C, 16)),
                "cand_tokens": np.zeros((Q, C, 1, 16)), "cand_len": np.ones((Q, C), np.int64),
            })
    split_of = {q.video_id: q.split for s in adapter.splits() for q in adapter.questions(s)}
    return path, split_of


def test_cli_questions_from_the_dataset_adapter(demo_root, demo_store, tmp_path):
    path, split_of = demo_store
    assert split_of["clip01"] == split_of["clip02"] == "train"  # so both gaps show in the train split
    runner = CliRunner()
    common = ["--method", "uniform", "--dataset", "demo", "--data-root", str(demo_root), "--store", str(path),
              "--epochs", "1", "--num-frames", "8", "--num-select", "2", "--num-layers", "1", "--num-heads", "2",
              "--dim", "16"]
    ok = runner.invoke(app, [*common, "--out", str(tmp_path / "run")])
    assert ok.exit_code == 0, ok.output
    text = " ".join(ok.output.split())  # rich wraps long lines
    assert "warning: split 'train': 8 of 48 questions listed by the dataset adapter" in text
    assert "4 whose video is not complete in the cls store (clip01_" in text
    assert "4 without a question bundle in the text store (clip02_" in text
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["questions"]["train"]["used"] == 40 and config["questions"]["val"]["used"] == 16
    strict = runner.invoke(app, [*common, "--out", str(tmp_path / "strict"), "--require-all-questions"])
    assert strict.exit_code == 2 and "8 of 48 questions" in " ".join(strict.output.split())
    wrong = runner.invoke(app, ["--method", "uniform", "--dataset", "nextqa", "--store", str(path),
                                "--out", str(tmp_path / "w")])
    assert wrong.exit_code == 2 and "not 'nextqa'" in wrong.output
    role = runner.invoke(app, ["--method", "uniform", "--store", str(path), "--store", f"patches={path}",
                               "--out", str(tmp_path / "r")])
    assert role.exit_code == 2 and "valid: cls, imageqa, patch, text" in role.output
    no_adapter = runner.invoke(app, ["--method", "uniform", "--store", str(path), "--data-root", str(demo_root),
                                     "--out", str(tmp_path / "n")])
    assert no_adapter.exit_code == 2 and "--data-root needs --dataset" in no_adapter.output


def test_real_nextqa_annotations_against_a_partial_store(shared_annotations, tmp_path):
    """NExT-QA's real val list (4996 questions) against a store holding 3 of its videos."""
    from vqacache.cli.train_head import adapter_questions

    listed = adapter_questions("nextqa", shared_annotations / "nextqa", ("val",))["val"]
    videos = sorted({q.video_id for q in listed})[:3]
    store = open_store(tmp_path / "nextqa.zarr", "a", spec=variant("nextqa"), dataset="nextqa")
    rng = np.random.default_rng(0)
    for vid in videos:
        qs = [q for q in listed if q.video_id == vid]
        cls, patch = random_frames(rng, 12)
        with store.write_video(vid) as w:
            w.append(cls=cls, patch=patch, pts=np.arange(12) / 7.5, src_index=np.arange(12),
                     is_repeat=np.zeros(12, bool))
        Q = len(qs)
        entries = [{"qid": q.qid, "question": q.question, "candidates": list(q.candidates), "answer": q.answer,
                    "qtype": q.qtype, "start": q.start, "end": q.end} for q in qs]
        store.write_questions("val", vid, entries, {
            "text": rng.standard_normal((Q, 16)), "text_tokens": np.zeros((Q, 1, 16)), "text_len": np.ones(Q, np.int64),
            "cand": rng.standard_normal((Q, 5, 16)), "cand_tokens": np.zeros((Q, 5, 1, 16)),
            "cand_len": np.ones((Q, 5), np.int64),
        })
    ds = QADataset(store.path, "val", num_frames=8, questions=listed, dataset="nextqa")
    expected = sorted(q.qid for q in listed if q.video_id in videos)
    assert [r.qid for r in ds.refs] == expected and len(listed) == 4996
    assert ds.coverage.missing.keys() == {"without a question bundle in the text store"}
    assert ds.coverage.n_missing == 4996 - len(expected)
    by_qid = {q.qid: q for q in listed}
    for i in (0, len(ds) - 1):
        s = ds[i]
        assert s["answer"] == by_qid[s["qid"]].answer and s["qtype"] == by_qid[s["qid"]].qtype
        assert s["cand"].shape == (5, 16)
