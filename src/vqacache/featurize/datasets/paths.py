"""Video path conventions: video folders (defaults or the ``video_root`` option) and names.

Benchmarks distribute videos under varying names and extensions (ActivityNet ships
``.mp4``, ``.mkv`` and ``.webm``; MSR-VTT splits its videos into ``TrainValVideo/`` and
``TestVideo/``). An adapter lists a video's candidate file names in preference order and
:meth:`VideoFinder.find` returns the first one present in the first folder that has it, or
the preferred location when none is, so ``videos()`` never raises and
``missing_videos()`` reports where the file was expected.

Some benchmarks ship frames instead (TVQA, VLEP, EgoTaskQA): :func:`video_or_frames` takes
the video file when there is one, else the video's folder of frames
(:class:`FrameFolderFinder`, under the ``frames_root`` option), recorded with its frame rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from vqacache.featurize.datasets.records import VideoRecord


def video_dirs(
    data_root: Path, video_root: Path | str | None, defaults: Sequence[str]
) -> tuple[Path, ...]:
    """``(video_root,)`` if given, else ``data_root / d`` for each default folder name."""
    if video_root is not None:
        return (Path(video_root).expanduser().resolve(),)
    return tuple(data_root / d for d in defaults)


class VideoFinder:
    """Looks a video up among candidate names (relative paths) in a few folders.

    Folders that do not exist are skipped with one ``stat`` each, so resolving thousands
    of videos when none is on disk (a dry run over annotations only) stays cheap.
    """

    def __init__(self, dirs: Sequence[Path]) -> None:
        if not dirs:
            raise ValueError("VideoFinder needs at least one folder")
        self.dirs = tuple(dirs)
        self._dir_strs = tuple(str(d) for d in self.dirs)

    @property
    def root(self) -> Path:
        """The preferred folder (where absent videos are reported)."""
        return self.dirs[0]

    def find(self, names: Sequence[str]) -> Path:
        """First ``folder / name`` that is a file (folders outer, names inner), else the first."""
        for folder in self._dir_strs:
            if not os.path.isdir(folder):
                continue
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    return Path(path)
        return self.dirs[0] / names[0]


def frames_dir(data_root: Path, frames_root: Path | str | None, default: str) -> Path:
    """``frames_root`` if given (absolute), else ``data_root / default``."""
    if frames_root is not None:
        return Path(frames_root).expanduser().resolve()
    return data_root / default


class FrameFolderFinder:
    """Looks a video's folder of frames up among candidate relative paths under one root.

    ``frame_rate`` is the rate the frames were taken at (frames per second), recorded on
    every :class:`VideoRecord` found here. An absent root costs one ``stat`` per lookup.
    """

    def __init__(self, root: Path, frame_rate: Fraction) -> None:
        self.root, self.frame_rate = root, frame_rate
        self._root_str = str(root)

    def find(self, names: Sequence[str]) -> Path | None:
        """The first ``root / name`` that is a folder, None when none is."""
        if not os.path.isdir(self._root_str):
            return None
        for name in names:
            path = os.path.join(self._root_str, name)
            if os.path.isdir(path):
                return Path(path)
        return None


def video_or_frames(
    video_id: str,
    files: VideoFinder,
    file_names: Sequence[str],
    frames: FrameFolderFinder,
    folder_names: Sequence[str],
) -> VideoRecord:
    """The video file when present (preferred), else its folder of frames when present, else
    the absent file's preferred location (where ``missing_videos()`` reports it)."""
    path = files.find(file_names)
    if path.is_file():
        return VideoRecord(video_id, path)
    folder = frames.find(folder_names)
    if folder is None:
        return VideoRecord(video_id, path)
    return VideoRecord(video_id, folder, frames.frame_rate)
