"""The ``folder`` dataset: every video file under ``--data-root``, without questions.

Files are found recursively, with extensions from :data:`VIDEO_EXTENSIONS` matched
case-insensitively; hidden files and folders (name starting with ``.``) are skipped. A
video's id is its POSIX path relative to the data root without the extension
(``sub/dir/clip`` for ``sub/dir/clip.MP4``). There is one split, ``all``, with no questions.
Two files with the same id (``a.mp4`` and ``a.avi``) are an error: the store could hold
only one of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.checks import missing_ids, require_data_root, require_split
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

VIDEO_EXTENSIONS = frozenset(
    {"mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ts"}
)
SPLIT = "all"


def _is_video(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot and stem) and ext.lower() in VIDEO_EXTENSIONS


def scan_videos(root: Path) -> list[VideoRecord]:
    """Video files under ``root`` (recursive, hidden entries skipped), sorted by id."""
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune hidden folders
        for name in files:
            if name.startswith(".") or not _is_video(name):
                continue
            path = Path(folder) / name
            video_id = path.relative_to(root).with_suffix("").as_posix()
            if video_id in found:
                first, second = sorted((found[video_id], path))
                raise UsageError(
                    f"folder: {first.relative_to(root)} and {second.relative_to(root)} under "
                    f"--data-root {root} map to the same video id {video_id!r}; "
                    "rename or move one of them"
                )
            found[video_id] = path
    return [VideoRecord(video_id=vid, path=found[vid]) for vid in sorted(found)]


@register_dataset("folder")
class FolderDataset:
    """All video files under a folder, one split ``all``, no questions."""

    name = "folder"

    def __init__(self, data_root: Path | None) -> None:
        expected = "video files (" + ", ".join(sorted(VIDEO_EXTENSIONS)) + ")"
        self.data_root = require_data_root(self.name, data_root, expected)
        self._videos = scan_videos(self.data_root)
        if not self._videos:
            raise UsageError(f"folder: no {expected} under --data-root {self.data_root}")

    def splits(self) -> tuple[str, ...]:
        return (SPLIT,)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(self.name, split, self.splits())
        return []

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        if split is not None:
            require_split(self.name, split, self.splits())
        return list(self._videos)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))
