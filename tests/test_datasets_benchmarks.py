"""Benchmark adapters on the real annotation files in ../shared/data/annotations.

Counts are checked against FORMATS.md or against a few lines of plain json/csv reading the
raw file here; spot checks use records quoted verbatim in FORMATS.md. Formats with no real
file in ../shared (EgoTaskQA, original MSRVTT-QA JSON, STAR train/val, AGQA train,
CLEVRER train) are tested on small files written here in the documented format.
"""

from __future__ import annotations

import collections
import csv
import functools
import json
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import SHARED_ANNOTATIONS

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.featurize.datasets import (
    MissingVideos,
    QuestionRecord,
    VideoQADataset,
    answer_vocab_of,
    check_videos,
    dry_run_report,
    get_dataset,
    list_datasets,
)

BENCHMARKS = (
    "nextqa", "nextqa_oe", "msrvtt_qa", "msvd_qa", "activitynet_qa", "tgif_qa", "agqa", "star",
    "how2qa", "tvqa", "vlep", "clevrer", "egotaskqa", "jsonl",
)  # fmt: skip


@functools.cache
def _load(name: str, folder: str, **options) -> VideoQADataset:  # noqa: ANN003
    """One adapter per (name, folder) for the whole module: parsing the real files is slow."""
    return get_dataset(name, SHARED_ANNOTATIONS / folder, **options)


@pytest.fixture
def real(shared_annotations: Path):  # noqa: ANN201
    """``real(name, folder)`` -> the adapter over a real annotation folder (skips without it)."""
    return _load


def _count(items) -> dict:  # noqa: ANN001
    return dict(collections.Counter(items))


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _one_line_error(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


# -- registry ---------------------------------------------------------------------------------


def test_every_benchmark_is_registered_and_unknown_names_list_them() -> None:
    assert set(BENCHMARKS) <= set(list_datasets())
    with pytest.raises(UnknownName) as err:
        get_dataset("msrvtt", "/tmp")
    message = str(err.value)
    assert "'msrvtt'" in message and ", ".join(list_datasets()) in message
    assert "msrvtt_qa" in message and "egotaskqa" in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "folder"),
    [("nextqa_oe", "nextqa_oe"), ("msvd_qa", "msvd_qa"), ("tgif_qa", "tgif_qa"), ("star", "star"),
     ("how2qa", "how2qa"), ("tvqa", "tvqa"), ("vlep", "vlep"), ("clevrer", "clevrer"),
     ("agqa", "agqa"), ("activitynet_qa", "activitynet_qa"), ("nextgqa", "nextgqa"),
     ("msrvtt_qa", "msrvtt_qa_docdoc_csv")],
)  # fmt: skip
def test_adapters_satisfy_the_protocol(real, name: str, folder: str) -> None:  # noqa: ANN001
    ds = real(name, folder)
    assert isinstance(ds, VideoQADataset) and ds.name == name
    assert callable(ds.answer_vocab) and ds.splits()
    with pytest.raises(UsageError, match=f"{name}: unknown split 'nope'; available: "):
        ds.questions("nope")


# -- NExT-QA (MC), NExT-OE, NExT-GQA ------------------------------------------------------------


def test_nextqa_is_multiple_choice_without_vocab(real) -> None:  # noqa: ANN001
    ds = real("nextqa", "nextqa")
    assert ds.answer_vocab() == [] and answer_vocab_of(ds) == []
    assert all(q.start is None and q.end is None for q in ds.questions("test"))


def test_nextqa_oe_counts_types_and_records(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("nextqa_oe", "nextqa_oe")
    assert ds.splits() == ("train", "val", "test")
    sizes = {s: len(ds.questions(s)) for s in ds.splits()}
    assert sizes == {"train": 37523, "val": 5343, "test": 9178}  # FORMATS.md
    assert len(ds.videos("train")) == 3870
    for split in ds.splits():
        with (shared_annotations / "nextqa_oe" / f"{split}.csv").open(newline="") as f:
            raw = list(csv.DictReader(f))
        questions = ds.questions(split)
        assert _count(q.qtype for q in questions) == _count(r["type"] for r in raw)
        assert [q.answer for q in questions] == [r["answer"] for r in raw]
        assert len({q.qid for q in questions}) == len(questions)
        assert all(q.candidates == () for q in questions)
    assert ds.questions("train")[0] == QuestionRecord(
        qid="3606518674_1",
        video_id="3606518674",
        question="is the man on guitar proficient in playing it",
        candidates=(),
        answer="yes",
        qtype="DB",
        split="train",
    )
    repeats = sorted(q.qid for q in ds.questions("train") if "#" in q.qid)
    assert repeats == ["3617262562_2#2", "4598213889_2#2", "4598213889_5#2"]
    refs = ds.extra_references()
    assert len(refs) == 4632 and refs["5772591393_2"] == "home"  # FORMATS: 4,632 answers


def test_nextqa_oe_vocab_is_every_train_answer_by_frequency(real) -> None:  # noqa: ANN001
    ds = real("nextqa_oe", "nextqa_oe")
    answers = [q.answer for q in ds.questions("train")]
    expected = [a for a, _ in collections.Counter(answers).most_common()]
    vocab = ds.answer_vocab()
    assert vocab == expected and vocab[:2] == ["yes", "no"]


def test_nextqa_oe_map_and_video_root(real, shared_annotations: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ds = real("nextqa_oe", "nextqa_oe")
    assert ds.videos("val")[0].path == ds.data_root / "NExTVideo" / "10001787725.mp4"
    mapped = get_dataset(
        "nextqa_oe",
        shared_annotations / "nextqa_oe",
        map_file=shared_annotations / "nextqa" / "map_vid_vidorID.json",
        video_root=tmp_path,
    )
    mapping = json.loads((shared_annotations / "nextqa" / "map_vid_vidorID.json").read_text())
    first = mapped.videos("val")[0]
    assert first.path == tmp_path.resolve() / f"{mapping[first.video_id]}.mp4"
    first.path.parent.mkdir(parents=True)
    first.path.write_bytes(b"x")
    assert (
        len(mapped.missing_videos("val")) == 569 and first.video_id not in mapped.missing_videos()
    )
    with pytest.raises(UsageError, match="map_file .* does not exist"):
        get_dataset("nextqa_oe", shared_annotations / "nextqa_oe", map_file=tmp_path / "nope.json")


def test_nextgqa_text_answers_and_grounding(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("nextgqa", "nextgqa")
    assert {s: len(ds.questions(s)) for s in ds.splits()} == {"val": 3358, "test": 5553}
    with (shared_annotations / "nextgqa" / "val.csv").open(newline="") as f:
        raw = list(csv.DictReader(f))
    for q, r in zip(ds.questions("val"), raw, strict=True):
        assert q.candidates[q.answer] == r["answer"] and q.qid == f"{r['video_id']}_{r['qid']}"
    assert not {q.qtype for q in ds.questions("test")} & {"DC", "DL", "DO"}
    spans = ds.grounding("val")
    assert len(spans) == 3358 and spans["10001787725_3"] == [
        (12.1, 17.1),
        (20.0, 23.5),
        (29.7, 33.2),
    ]


# -- MSVD-QA, MSRVTT-QA ---------------------------------------------------------------------


def test_msvd_qa_counts_types_and_records(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("msvd_qa", "msvd_qa")
    sizes = {s: len(ds.questions(s)) for s in ds.splits()}
    assert sizes == {"train": 30933, "val": 6415, "test": 13157}  # FORMATS.md
    for split, (lo, hi) in {"train": (1, 1200), "val": (1201, 1450), "test": (1451, 1970)}.items():
        ids = {int(v.video_id.removeprefix("vid")) for v in ds.videos(split)}
        assert lo <= min(ids) and max(ids) <= hi
    assert _count(q.qtype for q in ds.questions("test")) == {
        "what": 8149,
        "who": 4552,
        "how": 370,
        "when": 58,
        "where": 28,
    }  # fmt: skip  FORMATS.md
    assert ds.questions("train")[0] == QuestionRecord(
        qid="0", video_id="vid1", question="what is chewing on a nut?", candidates=(),
        answer="animal", qtype="what", split="train",
    )  # fmt: skip
    first_test = ds.questions("test")[0]
    assert (first_test.qid, first_test.video_id, first_test.answer) == (
        "37348",
        "vid1451",
        "someone",
    )
    assert first_test.question == "who opened the box that held an automatic weapon in a gun?"
    vid1 = ds.videos("train")[0]
    assert vid1.path == ds.data_root / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi"
    raw = json.loads((shared_annotations / "msvd_qa" / "test_qa.json").read_text())
    colour = sum("color" in r["question"] for r in raw)
    just_ask = get_dataset("msvd_qa", shared_annotations / "msvd_qa", color_qtype=True)
    assert _count(q.qtype for q in just_ask.questions("test"))["color"] == colour == 16


def test_msvd_qa_answer_vocab(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("msvd_qa", "msvd_qa")
    shipped = (shared_annotations / "msvd_qa" / "answer_set.txt").read_text().split("\n")
    vocab = ds.answer_vocab()
    assert vocab == [a for a in shipped if a] and len(vocab) == 1000
    test = ds.questions("test")
    coverage = sum(q.answer in set(vocab) for q in test) / len(test)
    assert round(coverage, 3) == 0.908  # FORMATS: answer_set.txt covers 90.8% of test
    counts = collections.Counter(q.answer for q in ds.questions("train"))
    computed = get_dataset("msvd_qa", ds.data_root, vocab_size=1000).answer_vocab()
    assert len(computed) == 1000 and computed[:5] == vocab[:5] == [
        "man",
        "woman",
        "person",
        "someone",
        "two",
    ]
    # the same top-1000 up to the order among equally frequent answers
    assert sorted(counts[a] for a in computed) == sorted(counts[a] for a in vocab)
    assert min(counts[a] for a in computed) >= max(
        c for a, c in counts.items() if a not in computed
    )


def test_msrvtt_qa_docdoc_csv(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("msrvtt_qa", "msrvtt_qa_docdoc_csv")
    assert {s: len(ds.questions(s)) for s in ds.splits()} == {"val": 12278, "test": 72821}
    assert (len(ds.videos("val")), len(ds.videos("test"))) == (497, 2990)
    assert ds.questions("val")[0] == QuestionRecord(
        qid="158581", video_id="video6513", question="what are three people sitting on",
        candidates=(), answer="couch", qtype="what", split="val",
    )  # fmt: skip
    with (shared_annotations / "msrvtt_qa_docdoc_csv" / "test.csv").open(newline="") as f:
        raw = list(csv.DictReader(f))
    assert _count(q.qtype for q in ds.questions("test")) == _count(
        r["question"].split()[0] for r in raw
    )
    just_ask = get_dataset("msrvtt_qa", ds.data_root, color_qtype=True)
    assert _count(q.qtype for q in just_ask.questions("test")) == {
        "what": 49355,
        "who": 20251,
        "how": 1637,
        "when": 674,
        "color": 658,
        "where": 246,
    }  # fmt: skip  FORMATS.md
    assert ds.videos("val")[0].path == ds.data_root / "videos" / "video6513.mp4"
    shipped = json.loads(
        (shared_annotations / "msrvtt_qa_docdoc_csv" / "ans_word.json").read_text()
    )
    assert ds.answer_vocab() == shipped and len(shipped) == 4000
    with pytest.raises(UsageError, match="built from the train split"):
        get_dataset("msrvtt_qa", ds.data_root, vocab_size=1000).answer_vocab()


def test_msrvtt_qa_original_json_matches_the_csv(shared_annotations: Path, tmp_path: Path) -> None:
    """The original release's JSON (schema from FORMATS.md) gives the same records as the CSV."""
    with (shared_annotations / "msrvtt_qa_docdoc_csv" / "val.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:50]
    original = [
        {"question": r["question"], "answer": r["answer"], "category_id": int(r["type"]),
         "video_id": int(r["video"]), "id": int(r["qid"])}
        for r in rows
    ]  # fmt: skip
    (tmp_path / "val_qa.json").write_text(json.dumps(original))
    with (tmp_path / "val.csv").open("w", newline="") as f:  # the JSON wins over a CSV
        f.write("video,question,answer,qid,type\n1,what,x,1,0\n")
    train = [{"question": "who sings", "answer": a, "category_id": 0, "video_id": 0, "id": i}
             for i, a in enumerate(["man", "woman", "man", "girl", "woman", "man"])]  # fmt: skip
    (tmp_path / "train_qa.json").write_text(json.dumps(train))
    ds = get_dataset("msrvtt_qa", tmp_path)
    from_csv = _load("msrvtt_qa", "msrvtt_qa_docdoc_csv").questions("val")[:50]
    assert ds.questions("val") == from_csv
    assert ds.answer_vocab() == ["man", "woman", "girl"]  # no ans_word.json: top-4000 of train
    assert get_dataset("msrvtt_qa", tmp_path, vocab_size=2).answer_vocab() == ["man", "woman"]
    videos = tmp_path / "TestVideo"
    videos.mkdir()
    (videos / "video6513.mp4").write_bytes(b"x")
    assert ds.videos("val")[0].path == videos / "video6513.mp4"
    assert ds.videos("train")[0].path == tmp_path / "videos" / "video0.mp4"


# -- ActivityNet-QA ---------------------------------------------------------------------------


def test_activitynet_qa_counts_types_and_vocab(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("activitynet_qa", "activitynet_qa")
    sizes = {s: (len(ds.questions(s)), len(ds.videos(s))) for s in ds.splits()}
    assert sizes == {"train": (32000, 3200), "val": (18000, 1800), "test": (8000, 800)}
    assert _count(q.qtype for q in ds.questions("test")) == {
        "free/yes_no": 2094,
        "free/other": 1499,
        "motion": 800,
        "spatial": 800,
        "temporal": 800,
        "free/color": 697,
        "free/number": 606,
        "free/location": 386,
        "free/object": 318,
    }  # fmt: skip  FORMATS.md
    assert ds.questions("val")[0] == QuestionRecord(
        qid="v_TIEzvhv6xaI_2", video_id="TIEzvhv6xaI", question="is the no.3 athlete playing indoor",
        candidates=(), answer="yes", qtype="free/yes_no", split="val",
    )  # fmt: skip
    train_a = json.loads((shared_annotations / "activitynet_qa" / "train_a.json").read_text())
    counts = collections.Counter(a["answer"] for a in train_a)
    vocab = ds.answer_vocab()
    assert len(vocab) == 1654 and set(vocab) == {a for a, c in counts.items() if c >= 2}
    assert [counts[a] for a in vocab] == sorted((counts[a] for a in vocab), reverse=True)
    assert len(get_dataset("activitynet_qa", ds.data_root, min_count=1).answer_vocab()) == 5199


def test_activitynet_qa_video_extensions(shared_annotations: Path, tmp_path: Path) -> None:
    ds = get_dataset("activitynet_qa", shared_annotations / "activitynet_qa", video_root=tmp_path)
    (tmp_path / "okC18bPTils.webm").write_bytes(b"x")
    (tmp_path / "v_ALjodjboELk.mkv").write_bytes(b"x")
    paths = {v.video_id: v.path for v in ds.videos("train")}
    assert paths["okC18bPTils"] == tmp_path / "okC18bPTils.webm"
    assert paths["ALjodjboELk"] == tmp_path / "v_ALjodjboELk.mkv"
    assert paths["_ucD-3rUWWE"] == tmp_path / "v__ucD-3rUWWE.mp4"
    assert len(ds.missing_videos("train")) == 3198


# -- TGIF-QA ------------------------------------------------------------------------------------


def test_tgif_qa_tasks_counts_and_records(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("tgif_qa", "tgif_qa")
    test = ds.questions("test")
    by_type = _count(q.qtype for q in test)
    assert {t: n for t, n in by_type.items() if not t.startswith("frameqa")} == {
        "action": 2274,
        "transition": 6232,
        "count": 3554,
    }  # fmt: skip  FORMATS.md
    assert {t: n for t, n in by_type.items() if t.startswith("frameqa")} == {
        "frameqa/object": 5586,
        "frameqa/number": 3148,
        "frameqa/color": 3904,
        "frameqa/location": 1053,
    }  # fmt: skip  FORMATS.md (13,691)
    train = _count(q.qtype for q in ds.questions("train"))
    assert train == {"action": 20471, "count": 26839}  # no official frameqa/transition train
    by_qid = {q.qid: q for q in test}
    frameqa = by_qid["FRAMEQA1159"]
    assert (frameqa.question, frameqa.answer, frameqa.qtype, frameqa.video_id) == (
        "what is being placed in the white ice cream cone ?", "cookie", "frameqa/object", "27138",
    )  # fmt: skip
    trans = by_qid["TRANS23"]
    assert trans.question == "What does the man do before point to the camera ?"
    assert trans.candidates == (
        "vacuum with unnattached tube", "tilt head", "tip hat", "removes glasses",
        "sing passionately",
    )  # fmt: skip
    assert trans.answer == 4 and trans.video_id == "23"
    count = by_qid["COUNT12"]
    assert (count.answer, count.candidates, count.video_id) == ("3", (), "52")
    paths = {v.video_id: v.path for v in ds.videos("test")}
    assert paths["27138"] == ds.data_root / "gifs" / "tumblr_no73q2fm0I1uuf348o1_250.gif"
    raw = _tsv(shared_annotations / "tgif_qa" / "Test_transition_question.csv")
    assert [q for q in test if q.qtype == "transition"] == [
        QuestionRecord(
            qid=r["vid_id"], video_id=r["key"], question=r["question"],
            candidates=tuple(r[f"a{i}"] for i in range(1, 6)), answer=int(r["answer"]),
            qtype="transition", split="test",
        )
        for r in raw
    ]  # fmt: skip
    assert len(ds.videos("test")) == len({r["key"] for f in ("action", "transition", "count",
        "frameqa") for r in _tsv(shared_annotations / "tgif_qa" / f"Test_{f}_question.csv")})  # fmt: skip
    with pytest.raises(UsageError, match="FrameQA train answer.*not under --data-root"):
        ds.answer_vocab()


def test_tgif_qa_single_task_and_unknown_task(shared_annotations: Path) -> None:
    root = shared_annotations / "tgif_qa"
    action = get_dataset("tgif_qa", root, task="action")
    assert {s: len(action.questions(s)) for s in action.splits()} == {"train": 20471, "test": 2274}
    assert action.answer_vocab() == []
    transition = get_dataset("tgif_qa", root, task="transition")
    assert transition.splits() == ("test",)
    with pytest.raises(
        UsageError, match="unknown task 'frame'; available: action, transition, count, frameqa"
    ):
        get_dataset("tgif_qa", root, task="frame")


def test_tgif_qa_docdoc_frameqa_train(real, shared_annotations: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ds = real("tgif_qa", "tgif_qa_docdoc_csv")
    train = ds.questions("train")
    assert ds.splits() == ("train",) and len(train) == 39392  # FORMATS.md
    assert train[0] == QuestionRecord(
        qid="FRAMEQA39922", video_id="49923", question="what is the color of the hair",
        candidates=(), answer="brown", qtype="frameqa", split="train",
    )  # fmt: skip
    shipped = json.loads(
        (shared_annotations / "tgif_qa_docdoc_csv" / "frameqa_ans_word.json").read_text()
    )
    counts = collections.Counter(q.answer for q in train)
    assert ds.answer_vocab() == shipped and set(shipped) == set(counts) and len(shipped) == 1540
    assert ds.videos("train")[0].path == ds.data_root / "gifs" / "1.gif"  # no official file: key


def test_tgif_qa_docdoc_train_with_official_files(shared_annotations: Path, tmp_path: Path) -> None:
    """doc-doc rows carry only the GIF key; any official file in the folder names the GIF."""
    with (shared_annotations / "tgif_qa_docdoc_csv" / "frameqa_train.csv").open(newline="") as f:
        head = [next(f) for _ in range(6)]  # header + 5 rows
    (tmp_path / "frameqa_train.csv").write_text("".join(head))
    keys = [line.split(",")[0] for line in head[1:]]
    (tmp_path / "Total_count_question.csv").write_text(
        "gif_name\tquestion\tanswer\tvid_id\tkey\r\n"
        f"tumblr_a\tHow many times ?\t2\tCOUNT1\t{keys[0]}\r\n"
        f"tumblr_b\tHow many times ?\t3\tCOUNT2\t{keys[1]}\r\n"
    )
    (tmp_path / "Test_frameqa_question.csv").write_text(
        "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\r\n"
        'tumblr_c\twhat is "it" ?\tdog\t3\tFRAMEQA7\t99\ta "dog" .\r\n'
    )
    ds = get_dataset("tgif_qa", tmp_path, task="frameqa")  # Total_count only names GIFs
    assert {s: len(ds.questions(s)) for s in ds.splits()} == {"train": 5, "test": 1}
    assert ds.questions("test")[0].question == 'what is "it" ?'  # bare quotes kept
    assert ds.questions("test")[0].qtype == "frameqa/location"
    paths = {v.video_id: v.path for v in ds.videos()}
    assert paths[keys[0]] == tmp_path / "gifs" / "tumblr_a.gif"
    assert paths[keys[1]] == tmp_path / "gifs" / "tumblr_b.gif"
    assert paths[keys[2]] == tmp_path / "gifs" / f"{keys[2]}.gif"
    assert paths["99"] == tmp_path / "gifs" / "tumblr_c.gif"
    answers = [line.split(",")[4] for line in head[1:]]
    assert ds.answer_vocab() == [a for a, _ in collections.Counter(answers).most_common()]
    assert get_dataset("tgif_qa", tmp_path).splits() == (
        "train",
        "test",
    )  # count needs Train_/Test_


# -- AGQA -----------------------------------------------------------------------------------------


def test_agqa_excerpt_and_raw_fields(real, shared_annotations: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ds = real("agqa", "agqa")
    test = {q.qid: q for q in ds.questions("test")}
    assert list(test) == ["YSKX3-8", "YSKX3-9", "YSKX3-11", "LSKA2-2205"]
    assert test["YSKX3-9"] == QuestionRecord(
        qid="YSKX3-9", video_id="YSKX3",
        question="Was a blanket one of the things they were interacting with?",
        candidates=(), answer="yes", qtype="object/verify", split="test",
    )  # fmt: skip
    assert (test["LSKA2-2205"].answer, test["LSKA2-2205"].qtype) == ("after", "relation/compare")
    raw = ds.annotations("test")
    assert (
        raw["LSKA2-2205"]["global"] == ["rel-act", "sequencing"]
        and raw["LSKA2-2205"]["novel_comp"] == 1
    )
    assert ds.videos("test")[0].path == ds.data_root / "Charades_v1_480" / "LSKA2.mp4"
    with pytest.raises(UsageError, match="agqa: the answer vocabulary .* train split"):
        ds.answer_vocab()
    folder = tmp_path / "AGQA_balanced"
    folder.mkdir()
    train = {f"V{i}-{i}": {"question": "q?", "answer": a, "video_id": f"V{i}", "semantic": "object",
                           "structural": "query"} for i, a in enumerate(["cup", "yes", "cup", "no"])}  # fmt: skip
    (folder / "train_balanced.txt").write_text(json.dumps(train))
    full = get_dataset("agqa", tmp_path)
    assert full.splits() == ("train",) and full.answer_vocab() == ["cup", "yes", "no"]


# -- STAR -----------------------------------------------------------------------------------------


def test_star_test_file(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("star", "star")
    test = ds.questions("test")
    assert len(test) == 7377 and ds.splits() == ("test",)
    assert _count(q.qtype for q in test) == {
        "Sequence": 3514,
        "Interaction": 2572,
        "Prediction": 716,
        "Feasibility": 575,
    }  # fmt: skip  FORMATS.md
    raw = json.loads((shared_annotations / "star" / "STAR_test.json").read_text())
    assert len(ds.videos("test")) == len({r["video_id"] for r in raw})
    assert [(q.start, q.end) for q in test] == [(r["start"], r["end"]) for r in raw]
    assert test[0] == QuestionRecord(
        qid="Interaction_T1_0", video_id="YSKX3", question="Which object was put down by the person?",
        candidates=("The food.", "The laptop.", "The book.", "The pillow."), answer=None,
        qtype="Interaction", split="test", start=12.1, end=18.0,
    )  # fmt: skip
    assert ds.answer_vocab() == []


def test_star_train_record_answer_index(shared_annotations: Path, tmp_path: Path) -> None:
    """The one verbatim train/val record: the answer text selects the choice index."""
    sample = json.loads((shared_annotations / "star" / "sample_question.json").read_text())
    (tmp_path / "STAR_val.json").write_text(json.dumps([sample]))
    (q,) = get_dataset("star", tmp_path).questions("val")
    assert q.candidates[q.answer] == "The closet/cabinet." and q.answer == 0
    assert (q.qid, q.qtype, q.video_id, q.start, q.end) == (
        "Interaction_T1_3772",
        "Interaction",
        "WBS4I",
        8.9,
        15.5,
    )
    (tmp_path / "STAR_val.json").write_text(json.dumps([{**sample, "answer": "The moon."}]))
    with pytest.raises(
        UsageError, match="answer 'The moon.' is none of the choices of Interaction_T1_3772"
    ) as err:
        get_dataset("star", tmp_path).questions("val")
    _one_line_error(err, tmp_path / "STAR_val.json")


# -- How2QA, TVQA, VLEP ---------------------------------------------------------------------------


def test_how2qa_val(real, shared_annotations: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ds = real("how2qa", "how2qa")
    val = ds.questions("val")
    rows = [
        json.loads(line)
        for line in (shared_annotations / "how2qa" / "how2qa_val_release.jsonl").open()
    ]
    assert len(val) == len(rows) == 3115
    assert [q.answer for q in val] == [r["answer_idx"] for r in rows]
    assert val[0] == QuestionRecord(
        qid="30351", video_id="25848", question="What website is shown during this video?",
        candidates=("Www.lyndalepl.com.", "Www.plants.com.", "Www.lyndaleplants.com.", "Www.lyndale.com."),
        answer=2, qtype=None, split="val", start=36.58, end=58.52,
    )  # fmt: skip
    unmapped = set(ds.unmapped_videos("val"))
    assert sum(q.video_id not in unmapped for q in val) == 2939  # FORMATS: 2,939 of 3,115 map
    paths = {v.video_id: v.path for v in ds.videos("val")}
    assert paths["25848"] == ds.data_root / "videos" / "XdnZ13OdJck_60_120.mp4"
    elsewhere = get_dataset("how2qa", ds.data_root, video_root=tmp_path)
    gone = next(iter(unmapped))
    (tmp_path / f"{gone}.webm").write_bytes(b"x")
    assert {v.video_id: v.path for v in elsewhere.videos("val")}[gone] == tmp_path / f"{gone}.webm"


def test_tvqa_test_and_tvqa_plus(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("tvqa", "tvqa")
    assert ds.splits() == ("test", "plus_val")
    test = ds.questions("test")
    assert len(test) == 7623 and all(q.answer is None for q in test)
    assert sum(q.start is None and q.end is None for q in test) == 3  # "NaN-NaN"
    assert test[0] == QuestionRecord(
        qid="137292", video_id="s03e21_seg02_clip_08",
        question="Who does Sheldon say he'll send an email to after coming out of the bathroom?",
        candidates=("The yogurt manufacturer. ", "The people who make toilet seats.", "Stan Lee.",
                    "Leonard's mom.", "The person who didn't make the apartment walls soundproof."),
        answer=None, qtype=None, split="test", start=48.62, end=60.02,
    )  # fmt: skip
    plus = ds.questions("plus_val")
    solution = json.loads((shared_annotations / "tvqa" / "tvqa_val_solution.json").read_text())
    labels = {qid: i for show in solution["solution"].values() for qid, i in show.items()}
    assert len(plus) == 3017 and all(q.answer == labels[q.qid] for q in plus)
    assert (plus[0].start, plus[0].end, plus[0].video_id) == (0.0, 5.4, "s01e02_seg02_clip_12")
    assert ds.videos("test")[0].path.name == "castle_s01e01_seg02_clip_08.mp4"


def test_tvqa_val_labels_come_from_the_solution_file(
    shared_annotations: Path, tmp_path: Path
) -> None:
    (tmp_path / "tvqa_val_solution.json").symlink_to(
        shared_annotations / "tvqa" / "tvqa_val_solution.json"
    )
    plus = json.loads((shared_annotations / "tvqa" / "tvqa_plus_val.json").read_text())[:3]
    lines = [
        {k: v for k, v in r.items() if k not in ("answer_idx", "bbox")} | {"ts": "1.5-2.5"}
        for r in plus
    ]
    (tmp_path / "tvqa_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    val = get_dataset("tvqa", tmp_path).questions("val")
    assert [q.answer for q in val] == [int(r["answer_idx"]) for r in plus]
    assert {(q.start, q.end) for q in val} == {(1.5, 2.5)}


def test_vlep_dev_and_test(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("vlep", "vlep")
    assert ds.splits() == ("val", "test")
    val, test = ds.questions("val"), ds.questions("test")
    assert (len(val), len(test)) == (4392, 4192)
    assert (len(ds.videos("val")), len(ds.videos("test"))) == (1561, 1493)
    assert _count(q.answer for q in val) == {0: 2145, 1: 2247} and {q.answer for q in test} == {
        None
    }
    assert val[0] == QuestionRecord(
        qid="20142", video_id="friends_s03e09_seg02_clip_07_ep", question="",
        candidates=("Ross will stop, turn and point at Monica.",
                    "Ross will stop and ask Monica why she is pointing at him."),
        answer=0, qtype=None, split="val", start=38.81, end=40.37,
    )  # fmt: skip


# -- CLEVRER ------------------------------------------------------------------------------------


def test_clevrer_mc_questions_become_binary_option_records(real, shared_annotations: Path) -> None:  # noqa: ANN001
    ds = real("clevrer", "clevrer")
    val = ds.questions("val")
    raw = json.loads((shared_annotations / "clevrer" / "valid-orig-small.json").read_text())
    choices = [c for scene in raw.values() for q in scene["questions"] for c in q["choices"]]
    assert len(val) == len(choices) == 2256 and len(ds.videos("val")) == 564
    assert _count(q.answer for q in val) == _count(c["answer"] for c in choices)
    by_qid = {q.qid: q for q in val}
    q = by_qid["4760_12_2"]
    assert q.answer == "correct" and q.qtype == "explanatory" and q.video_id == "video_04760"
    assert q.question == (
        "Which of the following is not responsible for the collision between the rubber cube "
        "and the green object? the collision between the cyan object and the green object"
    )
    assert by_qid["4760_12_0"].answer == "wrong"
    path = {v.video_id: v.path for v in ds.videos("val")}["video_04760"]
    assert path == ds.data_root / "video_train" / "video_04000-05000" / "video_04760.mp4"


def test_clevrer_original_list_format_and_vocab(tmp_path: Path) -> None:
    train = [
        {"scene_index": 12345, "video_filename": "video_12345.mp4", "questions": [
            {"question_id": 0, "question": "What color is the cube?", "question_type": "descriptive",
             "question_subtype": "query_color", "program": [], "answer": "red"},
            {"question_id": 1, "question": "How many spheres?", "question_type": "descriptive",
             "answer": "2"},
            {"question_id": 2, "question": "What will happen next?", "question_type": "predictive",
             "choices": [{"choice_id": 0, "choice": "A hits B", "answer": "correct"},
                         {"choice_id": 1, "choice": "B hits C", "answer": "wrong"}]},
        ]},
        {"scene_index": 3, "video_filename": "video_00003.mp4", "questions": [
            {"question_id": 0, "question": "Is there a cube?", "question_type": "descriptive", "answer": "red"},
        ]},
    ]  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(train))
    ds = get_dataset("clevrer", tmp_path)
    qs = ds.questions("train")
    assert [q.qid for q in qs] == ["12345_0", "12345_1", "12345_2_0", "12345_2_1", "3_0"]
    assert qs[2].question == "What will happen next? A hits B" and qs[2].qtype == "predictive"
    assert ds.answer_vocab() == ["red", "2", "correct", "wrong"]
    paths = {v.video_id: v.path for v in ds.videos()}
    assert (
        paths["video_12345"]
        == tmp_path / "video_validation" / "video_12000-13000" / "video_12345.mp4"
    )
    (tmp_path / "video_00003.mp4").write_bytes(b"x")  # flat layout found too
    assert {v.video_id: v.path for v in ds.videos()}["video_00003"] == tmp_path / "video_00003.mp4"
    assert ds.missing_videos() == ["video_12345"]


# -- EgoTaskQA (synthetic: no public file) ------------------------------------------------------


def _ego_item(qid: int, answer: str, interval: str, **extra) -> dict:  # noqa: ANN003
    return {
        "question": f"question {qid}?", "answer": answer, "interval": interval,
        "type": ["descriptive"], "category": ["world"], "semantic": "action",
        "structural": "query", "reference": "direct", "program": "query(...)",
        "video_id": qid // 2, "question_id": qid, **extra,
    }  # fmt: skip


def test_egotaskqa_synthetic_direct_split(tmp_path: Path) -> None:
    """EgoTaskQA's files are on Google Drive only: a small file in the documented schema."""
    direct = tmp_path / "direct"
    direct.mkdir()
    train = [
        _ego_item(0, "Fridge", "S1_Cook|P1|100|250"),
        _ego_item(
            1, "fridge", "S1_Cook|P1|100|250", reasoning_type="intent$world$action$query$direct"
        ),
        _ego_item(2, "open", "S1_Cook|P2|0|50"),
        _ego_item(3, "Fridge", "S2_Wash|P1|25|75"),
    ]
    (direct / "train_qas.json").write_text(json.dumps(train))
    (direct / "val_qas.json").write_text(json.dumps([_ego_item(9, "cup", "S2_Wash|P1|0|10")]))
    ds = get_dataset("egotaskqa", tmp_path)
    assert ds.splits() == ("train", "val")
    first = ds.questions("train")[0]
    assert first == QuestionRecord(
        qid="0", video_id="S1_Cook/fpv1", question="question 0?", candidates=(), answer="Fridge",
        qtype="descriptive$world$action$query$direct", split="train", start=4.0, end=10.0,
    )  # fmt: skip
    assert ds.questions("train")[1].qtype == "intent$world$action$query$direct"
    assert [v.video_id for v in ds.videos()] == ["S1_Cook/fpv1", "S1_Cook/fpv2", "S2_Wash/fpv1"]
    assert ds.videos()[0].path == tmp_path / "videos" / "S1_Cook" / "fpv1.mp4"
    assert ds.answer_vocab() == ["<UNK0>", "<UNK1>", "fridge", "open"]
    slow = get_dataset("egotaskqa", tmp_path, frame_rate=50)
    assert (slow.questions("train")[3].start, slow.questions("train")[3].end) == (0.5, 1.5)
    with pytest.raises(UsageError, match="split_type 'both'; available: direct, indirect"):
        get_dataset("egotaskqa", tmp_path, split_type="both")
    indirect = tmp_path / "indirect"
    indirect.mkdir()
    with pytest.raises(UsageError, match="holds none of direct/ or indirect/"):
        get_dataset("egotaskqa", tmp_path, split_type="indirect")
    (indirect / "test_qas.json").write_text(json.dumps([_ego_item(7, "x", "S3|P2|0|1")]))
    assert get_dataset("egotaskqa", tmp_path, split_type="indirect").splits() == ("test",)


def test_egotaskqa_bad_interval_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "test_qas.json").write_text(json.dumps([_ego_item(0, "x", "S1|Q1|5|1")]))
    with pytest.raises(UsageError, match=r"item 0: interval 'S1\|Q1\|5\|1' is not") as err:
        get_dataset("egotaskqa", tmp_path).questions("test")
    _one_line_error(err, tmp_path / "test_qas.json")


# -- jsonl (a lab's own data) -------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_jsonl_schema_round_trip(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", [
        {"qid": "q1", "video": "lab/clip1", "question": "what falls?", "answer": "cup", "qtype": "what"},
        {"qid": 2, "video": "clip2", "question": "why?", "candidates": ["a", "b", "c"], "answer": "c",
         "start": 1.5, "end": 4, "video_path": "raw/c2.webm"},
        "",
        {"qid": "q3", "video": "clip3", "question": "who?", "answer": "cup"},
        {"qid": "q4", "video": "clip3", "question": "where?", "answer": "kitchen", "extra": [1]},
    ])  # fmt: skip
    _write_jsonl(tmp_path / "holdout.jsonl", [{"qid": "h1", "video": "clip2", "question": "how?"}])
    _write_jsonl(tmp_path / "val.jsonl", [
        {"qid": "v1", "video": "clip2", "question": "when?", "candidates": ["x", "y"], "answer": 1},
    ])  # fmt: skip
    ds = get_dataset("jsonl", tmp_path)
    assert ds.splits() == ("train", "val", "holdout")
    q1, q2 = ds.questions("train")[:2]
    assert q1 == QuestionRecord("q1", "lab/clip1", "what falls?", (), "cup", "what", "train")
    assert q2 == QuestionRecord("2", "clip2", "why?", ("a", "b", "c"), 2, None, "train", 1.5, 4.0)
    assert ds.questions("holdout")[0].answer is None
    (tmp_path / "videos" / "lab").mkdir(parents=True)
    (tmp_path / "videos" / "lab" / "clip1.mkv").write_bytes(b"x")
    paths = {v.video_id: v.path for v in ds.videos()}
    assert paths == {
        "clip2": tmp_path / "videos" / "raw" / "c2.webm",
        "clip3": tmp_path / "videos" / "clip3.mp4",
        "lab/clip1": tmp_path / "videos" / "lab" / "clip1.mkv",
    }
    assert ds.videos("holdout")[0].path == tmp_path / "videos" / "raw" / "c2.webm"
    assert ds.missing_videos() == ["clip2", "clip3"]
    assert ds.answer_vocab() == ["cup", "kitchen"]
    (tmp_path / "answer_vocab.txt").write_text("cup\nplate\n\n")
    assert ds.answer_vocab() == ["cup", "plate"]
    report = dry_run_report(ds)
    assert [(r.split, r.questions, r.videos, r.missing) for r in report] == [
        ("train", 4, 3, 2), ("val", 1, 1, 1), ("holdout", 1, 1, 1),
    ]  # fmt: skip
    assert report[0].first_missing == str(tmp_path / "videos" / "raw" / "c2.webm")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"qid": "a", "video": "v"}', "line 1|:1: missing field 'question'"),
        ('{"qid": "a", "video": "v", "question": "q", "candidates": ["x"], "answer": 3}',
         ":1: answer index 3 is outside 0-0"),
        ('{"qid": "a", "video": "v", "question": "q", "start": 3, "end": 1}', ":1: end 1.0 is before start 3.0"),
        ('{"qid": "a", "video": "v", "question": "q"', ":1: not valid JSON"),
        ('["a", "b"]', ":1: holds a JSON list, expected one object per line"),
    ],
)  # fmt: skip
def test_jsonl_bad_lines_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    (tmp_path / "train.jsonl").write_text(line + "\n")
    with pytest.raises(UsageError) as err:
        get_dataset("jsonl", tmp_path).questions("train")
    message = _one_line_error(err, tmp_path / "train.jsonl")
    assert any(m in message for m in match.split("|")), message


def test_jsonl_conflicting_paths_and_empty_root(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", [
        {"qid": "a", "video": "v", "question": "q", "video_path": "x.mp4"},
        {"qid": "b", "video": "v", "question": "q", "video_path": "y.mp4"},
    ])  # fmt: skip
    with pytest.raises(UsageError, match="video 'v' has video_path 'y.mp4' here but 'x.mp4' at"):
        get_dataset("jsonl", tmp_path).questions("train")
    _write_jsonl(tmp_path / "train.jsonl", [{"qid": "a", "video": "v", "question": "q"}] * 2)
    with pytest.raises(UsageError, match="train.jsonl has question a twice"):
        get_dataset("jsonl", tmp_path).questions("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no <split>.jsonl files"):
        get_dataset("jsonl", tmp_path / "empty")


# -- malformed annotation files: one line naming the file ---------------------------------------


@pytest.mark.parametrize(
    ("name", "file", "content", "match"),
    [
        ("msvd_qa", "train_qa.json", '[{"answer": "a", "id": 0, "question": "q"', "is not valid JSON"),
        ("msvd_qa", "val_qa.json", '{"answer": "a"}', "holds a JSON dict, expected a JSON list"),
        ("msrvtt_qa", "val.csv", "video,question,qid\n1,what,2\n", "lacks column(s) answer"),
        ("activitynet_qa", "test_q.json", '[{"question": "q", "question_id": "v_1"}]', "missing field 'video_name'"),
        ("star", "STAR_test.json", '[{"question_id": "S_T1_0", "choices": 3}]', "field 'choices' is 3"),
        ("how2qa", "how2qa_val_release.jsonl", '{"vid_name": "1", "q": "q"}\n', "missing field 'a0'"),
        ("tvqa", "tvqa_test_public.jsonl", "{oops}\n", "not valid JSON"),
        ("vlep", "vlep_dev_release.jsonl", '{"example_id": 1, "vid_name": "v", "events": ["a"]}\n', "two strings"),
        ("tgif_qa", "Test_count_question.csv", "gif_name\tquestion\tanswer\r\nx\ty\t1\r\n", "lacks column(s) vid_id, key"),
        ("nextqa_oe", "val.csv", "video,question,answer,qid,type\n1,q\n", ":2: the row has no value for answer"),
        ("agqa", "test_balanced.txt", '{"X-1": {"question": "q"}}', "missing field 'semantic'"),
        ("clevrer", "validation.json", '[{"scene_index": "x", "questions": []}]', "scene index 'x' is not an integer"),
        ("egotaskqa", "val_qas.json", "[1, 2]", "item 0 is not a JSON object"),
    ],
)  # fmt: skip
def test_malformed_annotation_file_is_one_line_naming_it(
    tmp_path: Path, name: str, file: str, content: str, match: str
) -> None:
    (tmp_path / file).write_text(content)
    with pytest.raises(UsageError) as err:
        dry_run_report(get_dataset(name, tmp_path))
    message = _one_line_error(err, tmp_path / file)
    assert message.startswith(f"{name}: ") and match in message, message


@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "nextqa"])
def test_empty_data_root_says_what_was_expected(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError) as err:
        get_dataset(name, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{name}: --data-root {tmp_path}") and "\n" not in message
    with pytest.raises(UsageError, match=f"{name}: --data-root is required"):
        get_dataset(name, None)


# -- frame folders: TVQA, VLEP, EgoTaskQA ----------------------------------------------------------


def _records(ds: VideoQADataset, split: str | None = None) -> dict:
    return {v.video_id: (v.path, v.frame_rate) for v in ds.videos(split)}


def test_tvqa_frame_folders_by_show_flat_and_video_preferred(tmp_path: Path) -> None:
    vids = ["s01e01_seg01_clip_00", "castle_s01e01_seg02_clip_08", "met_s06e22_seg01_clip_02",
            "friends_s06e12_seg02_clip_16", "house_s01e01_seg01_clip_01"]  # fmt: skip
    lines = [{"qid": i, "q": "q", **{f"a{j}": "a" for j in range(5)}, "ts": "1-2", "vid_name": v, "show_name": "s"}
             for i, v in enumerate(vids)]  # fmt: skip
    (tmp_path / "tvqa_test_public.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    frames = tmp_path / "frames_hq"
    for folder in ["bbt_frames/s01e01_seg01_clip_00", "castle_frames/castle_s01e01_seg02_clip_08",
                   "met_s06e22_seg01_clip_02", "friends_frames/friends_s06e12_seg02_clip_16"]:  # fmt: skip
        (frames / folder).mkdir(parents=True)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "friends_s06e12_seg02_clip_16.mkv").write_bytes(b"x")  # beats its frames
    got = _records(get_dataset("tvqa", tmp_path))
    three = Fraction(3)
    assert got == {
        "s01e01_seg01_clip_00": (frames / "bbt_frames" / "s01e01_seg01_clip_00", three),
        "castle_s01e01_seg02_clip_08": (frames / "castle_frames" / "castle_s01e01_seg02_clip_08", three),
        "met_s06e22_seg01_clip_02": (frames / "met_s06e22_seg01_clip_02", three),  # flat
        "friends_s06e12_seg02_clip_16": (tmp_path / "videos" / "friends_s06e12_seg02_clip_16.mkv", None),
        "house_s01e01_seg01_clip_01": (tmp_path / "videos" / "house_s01e01_seg01_clip_01.mp4", None),
    }
    ds = get_dataset("tvqa", tmp_path)
    assert ds.missing_videos() == ["house_s01e01_seg01_clip_01"]
    assert [(r.videos, r.missing) for r in dry_run_report(ds)] == [(5, 1)]
    with pytest.raises(MissingVideos) as missing:  # the error names both places looked in
        check_videos(ds)
    assert f"no folder of frames under {frames}" in str(missing.value) and "\n" not in str(missing.value)
    moved = tmp_path / "elsewhere"
    (frames / "bbt_frames").rename(moved)
    other = get_dataset("tvqa", tmp_path, frames_root=moved, frames_fps=Fraction(30000, 1001))
    assert _records(other)["s01e01_seg01_clip_00"] == (moved / "s01e01_seg01_clip_00", Fraction(30000, 1001))


def test_tvqa_real_test_split_over_a_frame_folder(shared_annotations: Path, tmp_path: Path) -> None:
    root = tmp_path / "tvqa"
    root.mkdir()
    (root / "tvqa_test_public.jsonl").symlink_to(shared_annotations / "tvqa" / "tvqa_test_public.jsonl")
    (root / "frames_hq" / "castle_frames" / "castle_s01e01_seg02_clip_08").mkdir(parents=True)
    ds = get_dataset("tvqa", root)
    first = ds.videos("test")[0]
    assert (first.video_id, first.frame_rate, first.exists()) == ("castle_s01e01_seg02_clip_08", 3, True)
    assert len(ds.missing_videos("test")) == 1088


def test_vlep_frame_folders_flat(shared_annotations: Path, tmp_path: Path) -> None:
    root = tmp_path / "vlep"
    root.mkdir()
    (root / "vlep_test_release.jsonl").symlink_to(shared_annotations / "vlep" / "vlep_test_release.jsonl")
    vid = "friends_s07e23-24_seg02_clip_30_ep"
    (root / "frames" / vid).mkdir(parents=True)
    ds = get_dataset("vlep", root)
    assert _records(ds, "test")[vid] == (root / "frames" / vid, Fraction(3))
    assert vid not in ds.missing_videos("test") and len(ds.missing_videos("test")) == 1492
    (root / "videos").mkdir()
    (root / "videos" / f"{vid}.mp4").write_bytes(b"x")
    assert _records(get_dataset("vlep", root), "test")[vid] == (root / "videos" / f"{vid}.mp4", None)
    slow = get_dataset("vlep", root, frames_root=root / "frames", frames_fps="1.5")
    assert slow._frames.frame_rate == Fraction(3, 2)


def test_egotaskqa_frame_folders_and_video_preferred(tmp_path: Path) -> None:
    """(test_frame_folder.py checks that a decoded folder shows interval frame k at k / R.)"""
    items = [_ego_item(0, "x", "S1_Cook|P1|2|5"), _ego_item(1, "y", "S1_Cook|P2|0|1"), _ego_item(2, "z", "S2|P1|0|1")]
    (tmp_path / "val_qas.json").write_text(json.dumps(items))
    view = tmp_path / "frames" / "S1_Cook" / "fpv1"
    view.mkdir(parents=True)
    (tmp_path / "videos" / "S1_Cook").mkdir(parents=True)
    (tmp_path / "videos" / "S1_Cook" / "fpv2.mp4").write_bytes(b"x")
    (tmp_path / "frames" / "S1_Cook" / "fpv2").mkdir()  # the video file wins
    ds = get_dataset("egotaskqa", tmp_path)
    assert _records(ds) == {
        "S1_Cook/fpv1": (view, Fraction(25)),
        "S1_Cook/fpv2": (tmp_path / "videos" / "S1_Cook" / "fpv2.mp4", None),
        "S2/fpv1": (tmp_path / "videos" / "S2" / "fpv1.mp4", None),
    }
    assert ds.missing_videos() == ["S2/fpv1"]
    moved = get_dataset("egotaskqa", tmp_path, frames_root=tmp_path / "videos", frame_rate="30000/1001")
    assert _records(moved)["S1_Cook/fpv1"] == (tmp_path / "videos" / "S1_Cook" / "fpv1.mp4", None)
    assert moved.questions("val")[0].start == float(Fraction(2 * 1001, 30000))


def test_frame_rate_options_parse_as_fractions(tmp_path: Path) -> None:
    from vqacache.featurize.datasets import parse_dataset_options

    got = parse_dataset_options("tvqa", ["frames_fps=30000/1001", "frames-root=~/f"])
    assert got == {"frames_fps": Fraction(30000, 1001), "frames_root": Path("~/f").expanduser()}
    assert parse_dataset_options("vlep", ["frames_fps=3"]) == {"frames_fps": Fraction(3)}
    assert parse_dataset_options("egotaskqa", ["frame_rate=25"]) == {"frame_rate": Fraction(25)}
    with pytest.raises(UsageError, match="--dataset-option frames_fps takes a number such as 3"):
        parse_dataset_options("tvqa", ["frames_fps=fast"])
    (tmp_path / "tvqa_test_public.jsonl").write_text("")
    with pytest.raises(UsageError, match="tvqa: frames_fps must be a positive number such as 3") as err:
        get_dataset("tvqa", tmp_path, frames_fps=0)
    assert "\n" not in str(err.value)
    (tmp_path / "test_qas.json").write_text("[]")
    with pytest.raises(UsageError, match="egotaskqa: frame_rate must be a positive number"):
        get_dataset("egotaskqa", tmp_path, frame_rate=-25)
