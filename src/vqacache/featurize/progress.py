"""Progress of a featurize run: the :class:`Reporter` the CLI renders with rich, and
:class:`VideoProgress`, which feeds it exactly once per video."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from vqacache.featurize.datasets import VideoRecord


class Reporter(Protocol):
    """Receives progress; the CLI renders it with rich."""

    def start(self, total_videos: int, description: str) -> None: ...
    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, total_videos: int, description: str) -> None:
        pass

    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


class VideoProgress:
    """Feeds the reporter once per video: from per-video events as they arrive (any thread),
    and from each task's result for whatever its events did not cover (events may arrive
    late, or not at all); a video is never counted twice."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.counted: set[str] = set()
        self.lock = threading.Lock()

    def video(self, video_id: str, frames: int, failure: str | None) -> None:
        with self.lock:
            if video_id in self.counted:
                return
            self.counted.add(video_id)
            self.reporter.advance(1, frames, {video_id: failure} if failure else {})

    def videos(self, videos: list[VideoRecord], done: Mapping[str, int] | None = None,
               failed: Mapping[str, str] | None = None) -> None:
        """Count ``videos`` not counted yet: ``done`` (video -> frames) and ``failed`` (video ->
        reason) from a task's result; ``done`` None: every one of them is complete."""
        for video in videos:
            vid = video.video_id
            if done is None:
                self.video(vid, 0, None)
            elif vid in done:
                self.video(vid, done[vid], None)
            else:
                self.video(vid, 0, (failed or {}).get(vid))
