"""The ``tvqa`` dataset: TVQA (jayleicn/TVQA) and TVQA+, 5-way multiple choice on clip segments.

Expected layout under ``--data-root``::

    tvqa_train.jsonl, tvqa_val.jsonl, tvqa_test_public.jsonl   splits train, val, test
    tvqa_val_solution.json      optional: {"split", "solution": {show: {qid: index}}}
    tvqa_plus_train.json, tvqa_plus_val.json   optional TVQA+ (jayleicn/TVQAplus): splits
                                plus_train, plus_val (TVQA+ is a subset of TVQA with boxes)
    videos/<vid_name>.mp4       the clips (or under the ``video_root`` option), or else
    frames_hq/<show>_frames/<vid_name>/%05d.jpg   the released 3 fps frames (or under the
                                ``frames_root`` option; a flat ``<frames_root>/<vid_name>/``
                                is accepted too)

A TVQA line: ``{"qid", "q", "a0".."a4", "answer_idx", "ts": "st-ed", "vid_name",
"show_name"}`` (test_public has no ``answer_idx``; 3 of its rows have ``ts`` "NaN-NaN",
kept as the whole clip). A TVQA+ record has ``answer_idx`` as a string, ``ts`` as
``[st, ed]`` and ``bbox`` (not kept). Both become :class:`QuestionRecord` with ``qid =
str(qid)``, ``video_id = vid_name`` (``friends_s06e12_seg02_clip_16``; Big Bang Theory
clips have no show prefix) and ``start`` / ``end`` seconds of the localized span: the clip
is featurized whole and the span is selected by presentation time when reading. A
``val`` question without ``answer_idx`` takes its label from ``tvqa_val_solution.json``.

Videos: TVQA is distributed as 3 fps JPEG frames (``tvqa_video_frames_fps3_hq.tar.gz``
unpacks to ``frames_hq/``), read directly as folders of frames (see
:mod:`vqacache.featurize.decode.frame_folder`): frame ``00001.jpg`` is at 0 s, each next one
``1 / frames_fps`` later (option ``frames_fps``, default 3), so presentation times are
seconds of the clip, as ``ts`` counts them. ``<show>`` is the ``vid_name``'s prefix
(``castle``, ``friends``, ``grey``, ``house``, ``met``), ``bbt`` for Big Bang Theory clips,
whose ``vid_name`` has none. This layout follows the TVQA download page and code that uses
the frames; it was not verified against the tarball itself. A video file
``videos/<vid_name>.{mp4,mkv,webm}`` is preferred when present.
TVQA has no question types (``qtype`` None); official metric: accuracy
(``evaluate_tvqa.py``; test_public on CodaLab).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import (
    field,
    parse_index,
    parse_span,
    read_json,
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

NAME = "tvqa"
FILES = {
    "train": ["tvqa_train.jsonl"],
    "val": ["tvqa_val.jsonl"],
    "test": ["tvqa_test_public.jsonl"],
    "plus_train": ["tvqa_plus_train.json"],
    "plus_val": ["tvqa_plus_val.json"],
}
SOLUTION_FILE = "tvqa_val_solution.json"
EXTENSIONS = ("mp4", "mkv", "webm")
N_CANDIDATES = 5
SHOWS = ("castle", "friends", "grey", "house", "met")
"""Shows whose ``vid_name`` starts with ``<show>_``; the others are Big Bang Theory's."""
UNPREFIXED_SHOW = "bbt"
DEFAULT_FRAMES_FPS = Fraction(3)
EXPECTED = "tvqa_{train,val,test_public}.jsonl or tvqa_plus_{train,val}.json (TVQA)"


def _record(
    row: dict[str, Any], split: str, where: str, solution: dict[str, int]
) -> QuestionRecord:
    qid = str(field(NAME, where, row, "qid", (int, str)))
    answer = row.get("answer_idx", solution.get(qid))
    start, end = parse_span(NAME, where, row.get("ts"))
    return QuestionRecord(
        qid=qid,
        video_id=field(NAME, where, row, "vid_name"),
        question=field(NAME, where, row, "q"),
        candidates=tuple(field(NAME, where, row, f"a{i}") for i in range(N_CANDIDATES)),
        answer=None if answer is None else parse_index(NAME, where, answer, N_CANDIDATES),
        qtype=None,
        split=split,
        start=start,
        end=end,
    )


def read_solution(path: Path) -> dict[str, int]:
    """``tvqa_val_solution.json`` flattened to ``{qid: answer index}``."""
    data = read_json(NAME, path, dict)
    shows = data.get("solution")
    if not isinstance(shows, dict) or not all(isinstance(v, dict) for v in shows.values()):
        raise UsageError(
            f"{NAME}: {path} lacks the {{'solution': {{show: {{qid: index}}}}}} mapping"
        )
    return {str(qid): index for answers in shows.values() for qid, index in answers.items()}


def read_tvqa(
    path: Path, split: str, solution: dict[str, int] | None = None
) -> list[QuestionRecord]:
    """Parse a TVQA jsonl or a TVQA+ JSON list into records, in file order."""
    solution = solution or {}
    if path.suffix == ".jsonl":
        rows = [(f"{path}:{n}", row) for n, row in read_jsonl(NAME, path)]
    else:
        items = read_json(NAME, path, list)
        bad = next((i for i, row in enumerate(items) if not isinstance(row, dict)), None)
        if bad is not None:
            raise UsageError(f"{NAME}: {path}: item {bad} is not a JSON object")
        rows = [(f"{path}: item {i}", row) for i, row in enumerate(items)]
    records = [_record(row, split, where, solution) for where, row in rows]
    unique_qids(NAME, path, records)
    return records


def frame_folders(vid_name: str) -> list[str]:
    """Candidate frame folders of a clip, relative to ``frames_hq``, in preference order."""
    show = next((s for s in SHOWS if vid_name.startswith(f"{s}_")), UNPREFIXED_SHOW)
    return [f"{show}_frames/{vid_name}", vid_name]


@register_dataset(NAME)
class TVQA:
    """TVQA (and TVQA+) over the released annotation files; splits are the files present."""

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
        self._frames = FrameFolderFinder(frames_dir(self.data_root, frames_root, "frames_hq"), rate)
        self.frames_root = self._frames.root
        self._questions: dict[str, list[QuestionRecord]] = {}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._files)

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            solution_path = self.data_root / SOLUTION_FILE
            solution = (
                read_solution(solution_path) if split == "val" and solution_path.is_file() else {}
            )
            self._questions[split] = read_tvqa(self._files[split], split, solution)
        return list(self._questions[split])

    def video_record(self, video_id: str) -> VideoRecord:
        """``videos/<vid_name>.{mp4,mkv,webm}``, first present, else the clip's frame folder."""
        files = [f"{video_id}.{e}" for e in EXTENSIONS]
        return video_or_frames(video_id, self._finder, files, self._frames, frame_folders(video_id))

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_record)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Multiple choice: no answer vocabulary."""
        return []
