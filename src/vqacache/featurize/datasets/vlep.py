"""The ``vlep`` dataset: VLEP, video-and-language future event prediction (2-way choice).

Expected layout under ``--data-root``::

    vlep_train_release.jsonl, vlep_dev_release.jsonl, vlep_test_release.jsonl
                                  whichever exist; splits train, val (= dev), test
    videos/<vid_name>.mp4         the clips (or under the ``video_root`` option), or else
    frames/<vid_name>/%05d.jpg    the 3 fps frames (or under the ``frames_root`` option)

Each line: ``{"example_id", "vid_name", "ts": [st, ed], "events": [e0, e1], "answer",
"split"}`` (test has no ``answer``). A line becomes a :class:`QuestionRecord` with
``qid = str(example_id)``, ``video_id = vid_name``, the two events as candidates, the
answer index, and the premise event ``ts`` as ``start`` / ``end`` seconds (the clip is
featurized whole; the premise is selected by presentation time when reading, and what
follows it is what the events predict). VLEP has no question: ``question`` is ``""``.
``vlep_dev_archive.jsonl`` (premise text and rationales) is not read.

``vid_name``: TV clips are TVQA-style names with an ``_ep`` suffix
(``friends_s03e09_seg02_clip_07_ep``); YouTube clips are
``{youtube_id}_subs_{idx}_{HH:MM:SS start}_{end}_ep``. Both are distributed as 3 fps frames
on request, read directly as folders of frames (see :mod:`vqacache.featurize.decode.frame_folder`):
the first frame is at 0 s, each next one ``1 / frames_fps`` later (option ``frames_fps``,
default 3). The flat ``<frames_root>/<vid_name>/`` layout is an assumption (the frames are
not public; TVQA's are numbered ``00001.jpg``); any numbered ``.jpg`` / ``.png`` names work.
A video file ``videos/<vid_name>.{mp4,mkv,webm}`` is preferred when present.
No question types (``qtype`` None); official metric: accuracy (``standalone_eval/eval.py``,
VALUE ``evaluate_vlep.py``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import (
    field,
    parse_index,
    parse_span,
    read_jsonl,
    split_files,
    unique_qids,
)
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import (
    FrameFolderFinder,
    VideoFinder,
    frames_dir,
    video_dirs,
    video_or_frames,
)
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.decode.frame_plan import parse_rate

NAME = "vlep"
FILES = {
    "train": ["vlep_train_release.jsonl"],
    "val": ["vlep_dev_release.jsonl"],
    "test": ["vlep_test_release.jsonl"],
}
EXTENSIONS = ("mp4", "mkv", "webm")
N_EVENTS = 2
DEFAULT_FRAMES_FPS = Fraction(3)
EXPECTED = "vlep_{train,dev,test}_release.jsonl (VLEP)"


def read_vlep(path: Path, split: str) -> list[QuestionRecord]:
    """Parse one VLEP jsonl into records, in file order."""
    records = []
    for n, row in read_jsonl(NAME, path):
        where = f"{path}:{n}"
        events = field(NAME, where, row, "events", list)
        if len(events) != N_EVENTS or not all(isinstance(e, str) for e in events):
            raise UsageError(f"{NAME}: {where}: 'events' must be two strings")
        answer = row.get("answer")
        start, end = parse_span(NAME, where, row.get("ts"))
        records.append(
            QuestionRecord(
                qid=str(field(NAME, where, row, "example_id", (int, str))),
                video_id=field(NAME, where, row, "vid_name"),
                question="",
                candidates=tuple(events),
                answer=None if answer is None else parse_index(NAME, where, answer, N_EVENTS),
                qtype=None,
                split=split,
                start=start,
                end=end,
            )
        )
    unique_qids(NAME, path, records)
    return records


@register_dataset(NAME)
class Vlep:
    """VLEP over the release jsonl files; splits are the files present."""

    name = NAME

    def __init__(
        self,
        data_root: Path | None,
        *,
        video_root: Path | None = None,
        frames_root: Path | None = None,
        frames_fps: Fraction = DEFAULT_FRAMES_FPS,
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        self._files = split_files(NAME, self.data_root, FILES, EXPECTED)
        self._finder = VideoFinder(video_dirs(self.data_root, video_root, ("videos",)))
        self.video_root = self._finder.root
        rate = parse_rate(frames_fps, f"{NAME}: frames_fps", "3 or 30000/1001")
        self._frames = FrameFolderFinder(frames_dir(self.data_root, frames_root, "frames"), rate)
        self.frames_root = self._frames.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            self._questions[split] = read_vlep(self._files[split], split)
        return list(self._questions[split])

    def video_record(self, video_id: str) -> VideoRecord:
        """``videos/<vid_name>.{mp4,mkv,webm}``, first present, else ``frames/<vid_name>/``."""
        files = [f"{video_id}.{e}" for e in EXTENSIONS]
        return video_or_frames(video_id, self._finder, files, self._frames, [video_id])

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_record)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Two-way choice: no answer vocabulary."""
        return []
