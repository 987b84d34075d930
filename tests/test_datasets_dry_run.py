"""``vqa-featurize --dry-run`` on every folder of ../shared/data/annotations (no video there)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vqacache.cli.featurize import app as featurize_app
from vqacache.cache_spec import UsageError
from vqacache.featurize.datasets import list_datasets

runner = CliRunner()

FOLDERS = {
    "activitynet_qa": "activitynet_qa",
    "agqa": "agqa",
    "clevrer": "clevrer",
    "how2qa": "how2qa",
    "msrvtt_qa_docdoc_csv": "msrvtt_qa",
    "msvd_qa": "msvd_qa",
    "nextgqa": "nextgqa",
    "nextqa": "nextqa",
    "nextqa_oe": "nextqa_oe",
    "star": "star",
    "tgif_qa": "tgif_qa",
    "tgif_qa_docdoc_csv": "tgif_qa",
    "tvqa": "tvqa",
    "vlep": "vlep",
}
"""Annotation folder -> the adapter that reads it."""

EXPECTED = {
    "activitynet_qa": {"train": (32000, 3200), "val": (18000, 1800), "test": (8000, 800)},
    "agqa": {"test": (4, 2)},
    "clevrer": {"val": (2256, 564)},
    "how2qa": {"val": (3115, 3058)},
    "msrvtt_qa_docdoc_csv": {"val": (12278, 497), "test": (72821, 2990)},
    "msvd_qa": {"train": (30933, 1161), "val": (6415, 245), "test": (13157, 504)},
    "nextgqa": {"val": (3358, 567), "test": (5553, 990)},
    "nextqa": {"val": (4996, 570), "test": (8564, 1000)},
    "nextqa_oe": {"train": (37523, 3870), "val": (5343, 570), "test": (9178, 1000)},
    "star": {"test": (7377, 955)},
    "tgif_qa": {"train": (47310, 27236), "test": (25751, 9575)},
    "tgif_qa_docdoc_csv": {"train": (39392, 32347)},
    "tvqa": {"test": (7623, 1089), "plus_val": (3017, 431)},
    "vlep": {"val": (4392, 1561), "test": (4192, 1493)},
}
"""(questions, distinct videos) per split: FORMATS.md's counts, and distinct video ids counted
from the raw files with plain json/csv (the adapter tests check the records themselves)."""


def _rows(output: str) -> dict[str, tuple[int, int, int]]:
    """``{split: (questions, videos, missing)}`` parsed from the printed table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 4 and all(c.isdigit() for c in cells[1:]):
            rows[cells[0]] = tuple(int(c) for c in cells[1:])
    return rows


def test_every_annotation_folder_has_an_adapter(shared_annotations: Path) -> None:
    folders = {p.name for p in shared_annotations.iterdir() if p.is_dir()}
    assert folders == set(FOLDERS)
    assert set(FOLDERS.values()) <= set(list_datasets())


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_dry_run_on_each_annotation_folder(shared_annotations: Path, folder: str) -> None:
    name = FOLDERS[folder]
    root = shared_annotations / folder
    result = runner.invoke(
        featurize_app, ["--dataset", name, "--data-root", str(root), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    # no video exists in ../shared: every video is missing
    expected = {split: (q, v, v) for split, (q, v) in EXPECTED[folder].items()}
    assert _rows(result.output) == expected
    first = next(
        line for line in result.output.splitlines() if line.startswith("first missing video: ")
    )
    assert first.removeprefix("first missing video: ").startswith(str(root.resolve()))


def test_dry_run_honours_split_and_counts_present_videos(tmp_path: Path) -> None:
    lines = [{"qid": f"q{i}", "video": f"v{i % 3}", "question": "?"} for i in range(7)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "train.jsonl").write_text(json.dumps(lines[0]) + "\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v1.webm").write_bytes(b"x")
    args = ["--dataset", "jsonl", "--data-root", str(tmp_path), "--dry-run"]
    result = runner.invoke(featurize_app, [*args, "--split", "val"])
    assert result.exit_code == 0, result.output
    assert _rows(result.output) == {"val": (7, 3, 2)}
    assert f"first missing video: {tmp_path / 'videos' / 'v0.mp4'}" in result.output
    result = runner.invoke(featurize_app, [*args, "--split", "nope"])
    assert result.exit_code == 2 and "unknown split 'nope'; available: train, val" in result.output
    (tmp_path / "videos" / "v0.mp4").write_bytes(b"x")
    (tmp_path / "videos" / "v2.mp4").write_bytes(b"x")
    result = runner.invoke(featurize_app, args)
    assert _rows(result.output) == {"train": (1, 1, 0), "val": (7, 3, 0)}
    assert "first missing" not in result.output


def test_dry_run_user_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        featurize_app, ["--dataset", "msvdqa", "--data-root", str(tmp_path), "--dry-run"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown dataset 'msvdqa'; available: " + ", ".join(list_datasets()) in result.output
    (tmp_path / "val_qa.json").write_text("[{")
    result = runner.invoke(
        featurize_app, ["--dataset", "msvd_qa", "--data-root", str(tmp_path), "--dry-run"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"msvd_qa: {tmp_path / 'val_qa.json'} is not valid JSON" in " ".join(
        result.output.split()
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ([], "--encoder, --cache-root"),
        (["--encoder", "clip-b16"], "--cache-root"),
        (["--cache-root", "c"], "--encoder"),
    ],
)
def test_encoder_and_cache_root_are_required_without_dry_run(
    tmp_path: Path, given: list[str], missing: str
) -> None:
    result = runner.invoke(
        featurize_app, ["--dataset", "jsonl", "--data-root", str(tmp_path), *given]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"missing {missing} (required unless --dry-run)" in lines[0], (
        result.output
    )


def test_dataset_help_lists_the_registry() -> None:
    result = runner.invoke(featurize_app, ["--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--dry-run" in text
    for name in list_datasets():
        assert name in text


def test_dataset_options_reach_the_adapter(tmp_path: Path) -> None:
    lines = [{"qid": f"q{i}", "video": f"v{i}", "question": "?"} for i in range(3)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    elsewhere = tmp_path / "clips"
    elsewhere.mkdir()
    (elsewhere / "v1.mp4").write_bytes(b"x")
    args = ["--dataset", "jsonl", "--data-root", str(tmp_path), "--dry-run"]
    assert _rows(runner.invoke(featurize_app, args).output) == {"val": (3, 3, 3)}
    moved = runner.invoke(featurize_app, [*args, "--dataset-option", f"video_root={elsewhere}"])
    assert moved.exit_code == 0 and _rows(moved.output) == {"val": (3, 3, 2)}, moved.output
    bad = runner.invoke(featurize_app, [*args, "--dataset-option", "colour=red"])
    assert bad.exit_code == 2 and "unknown option(s) colour; accepted:" in bad.output


def test_dataset_options_are_converted_to_what_the_adapter_declares() -> None:
    from vqacache.featurize.datasets import parse_dataset_options

    got = parse_dataset_options("msrvtt_qa", ["video-root=~/v", "vocab_size=1000", "color_qtype=yes"])
    assert got == {"video_root": Path("~/v").expanduser(), "vocab_size": 1000, "color_qtype": True}
    with pytest.raises(UsageError, match="vocab_size takes an integer, got 'many'"):
        parse_dataset_options("msrvtt_qa", ["vocab_size=many"])
    with pytest.raises(UsageError, match="takes KEY=VALUE"):
        parse_dataset_options("msrvtt_qa", ["vocab_size"])
