"""Dry-run report: what a dataset's annotations hold per split, and which videos are absent.

``vqa-featurize --dry-run`` prints this before any decoding: it reads the annotation files
only (no video is opened; absent files are just counted), so it works on a folder of
annotations alone and catches a wrong ``--data-root`` or video layout in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from vqacache.featurize.datasets.records import VideoQADataset


@dataclass(frozen=True)
class SplitSummary:
    """One split: its question count, distinct videos, and how many of those are absent.

    ``first_missing`` is the expected path of the first absent video (sorted by id), to show
    where files were looked for; ``None`` when every video is present.
    """

    split: str
    questions: int
    videos: int
    missing: int
    first_missing: str | None = None


def dry_run_report(dataset: VideoQADataset, splits: tuple[str, ...] = ()) -> list[SplitSummary]:
    """Per split (``splits`` or all the dataset has, in its order): counts from the annotations."""
    rows = []
    for split in splits or dataset.splits():
        questions = dataset.questions(split)
        videos = dataset.videos(split)
        # the protocol's missing_videos(split), without resolving every path a second time
        missing = [v for v in videos if not v.exists()]
        rows.append(
            SplitSummary(
                split=split,
                questions=len(questions),
                videos=len(videos),
                missing=len(missing),
                first_missing=str(missing[0].path) if missing else None,
            )
        )
    return rows
