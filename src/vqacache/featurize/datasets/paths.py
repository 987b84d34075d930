"""Video path conventions: video folders (defaults or the ``video_root`` option) and names.

Benchmarks distribute videos under varying names and extensions (ActivityNet ships
``.mp4``, ``.mkv`` and ``.webm``; MSR-VTT splits its videos into ``TrainValVideo/`` and
``TestVideo/``). An adapter lists a video's candidate file names in preference order and
:meth:`VideoFinder.find` returns the first one present in the first folder that has it, or
the preferred location when none is, so ``videos()`` never raises and
``missing_videos()`` reports where the file was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


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
