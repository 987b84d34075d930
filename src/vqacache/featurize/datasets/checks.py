"""Shared plumbing for adapters: data-root and split validation, video lists, missing files.

Adapters call these functions rather than inheriting from a base class, so each adapter
stays one readable file. Every check raises a one-line :class:`UsageError` that names
``--data-root`` (or the split) and says what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.records import QuestionRecord, VideoQADataset, VideoRecord

MAX_LISTED = 3
"""How many missing ids an error message spells out before ``...``."""


class MissingVideos(UsageError):
    """Some video files of a dataset split are absent under the data root.

    ``missing`` holds every absent id (sorted); ``total`` the number of videos checked.
    """

    def __init__(self, message: str, missing: list[str], total: int) -> None:
        super().__init__(message)
        self.missing = missing
        self.total = total


def require_data_root(name: str, data_root: Path | str | None, expected: str) -> Path:
    """Return ``data_root`` as an absolute path, or raise if it is unset or not a folder.

    ``expected`` describes what the folder should hold, e.g. ``"val.csv and
    map_vid_vidorID.json"``; it goes into the error message.
    """
    if data_root is None:
        raise UsageError(f"{name}: --data-root is required (a folder with {expected})")
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{name}: --data-root {root} {what}; expected a folder with {expected}")
    return root


def require_split(name: str, split: str, available: Iterable[str]) -> str:
    """Return ``split`` if it is one of ``available``; otherwise raise listing them."""
    available = tuple(available)
    if split not in available:
        raise UsageError(
            f"{name}: unknown split {split!r}; available: {', '.join(available) or '(none)'}"
        )
    return split


def videos_of(
    questions: Iterable[QuestionRecord], resolve: Callable[[str], Path | VideoRecord]
) -> list[VideoRecord]:
    """Unique videos referenced by ``questions``, sorted by id; ``resolve`` maps id -> the
    video file's path, or -> the whole record (a video that may be a folder of frames)."""
    ids = sorted({q.video_id for q in questions})
    found = ((vid, resolve(vid)) for vid in ids)
    return [r if isinstance(r, VideoRecord) else VideoRecord(video_id=vid, path=r) for vid, r in found]


def missing_ids(videos: Iterable[VideoRecord]) -> list[str]:
    """Ids of ``videos`` that do not exist (:meth:`VideoRecord.exists`), in order."""
    return [v.video_id for v in videos if not v.exists()]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # the video lives outside the data root (e.g. a separate video root)
        return str(path)


def check_videos(dataset: VideoQADataset, split: str | None = None) -> list[VideoRecord]:
    """Return the videos of ``split``, or raise one :class:`MissingVideos` naming the absent ones.

    The message gives the count, the folder they were expected under (and the adapter's
    ``frames_root`` for benchmarks that ship frames) and the first few ``id -> relative path`` pairs, e.g. ``nextqa: 570 of 570 videos are missing under
    /data/nextqa/NExTVideo (first: 4010069381 -> NExTVideo/1025/4010069381.mp4, ...);
    check --data-root``.
    """
    videos = dataset.videos(split)
    by_id = {v.video_id: v for v in videos}
    missing = sorted(dataset.missing_videos(split))
    if not missing:
        return videos
    paths = [by_id[vid].path for vid in missing]
    under = Path(os.path.commonpath([p.parent for p in paths]))
    shown = ", ".join(
        f"{vid} -> {_relative(p, dataset.data_root)}"
        for vid, p in zip(missing[:MAX_LISTED], paths)
    )
    more = ", ..." if len(missing) > MAX_LISTED else ""
    where = f" of split {split!r}" if split is not None else ""
    frames_root = getattr(dataset, "frames_root", None)  # adapters whose videos may be folders of frames
    also = f", and no folder of frames under {frames_root}" if frames_root is not None else ""
    raise MissingVideos(
        f"{dataset.name}: {len(missing)} of {len(videos)} videos{where} are missing under "
        f"{under}{also} (first: {shown}{more}); check --data-root",
        missing=missing,
        total=len(videos),
    )
