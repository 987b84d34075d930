"""The ``tgif_qa`` dataset: TGIF-QA's four tasks (YunseokJANG/tgif-qa), optionally one of them.

Expected layout under ``--data-root``::

    {Train,Test}_{action,transition,count,frameqa}_question.csv   the official files
    Total_*_question.csv          optional, read only to map GIF keys to names
    frameqa_{train,test}.csv      doc-doc/HQGA's FrameQA reformat (also frameqa/{split}.csv),
                                  used for a split whose official FrameQA file is absent
    frameqa_ans_word.json         doc-doc's FrameQA answer list (also frameqa/ans_word.json)
    gifs/<gif_name>.gif           the GIFs (or under the ``video_root`` option)

The official ``.csv`` files are tab-separated with a header (read without quote handling:
some questions hold a bare ``"``). Columns: action / transition ``gif_name question a1..a5
answer vid_id key`` (``answer`` a 0-based index), count ``gif_name question answer vid_id
key``, frameqa ``gif_name question answer type vid_id key description``. ``vid_id`` is
the question id (``ACTION4``, ``TRANS23``, ``COUNT12``, ``FRAMEQA1159``, unique across
tasks) and becomes ``qid``; ``key`` is the GIF's numeric TGIF index. doc-doc's CSV
(``video,width,height,question,answer,qid``) has ``video`` = key and ``qid`` = vid_id.

Tasks: TGIF-QA is four benchmarks with their own files, answer formats and metrics (see
FORMATS.md), so they stay separate question types rather than being folded into one
format: by default every task present is read into the ``train`` / ``test`` splits, with
``qtype`` ``action``, ``transition``, ``count`` or ``frameqa/<object|number|color|location>``
(``frameqa`` for doc-doc rows, which lack the type); ``task="frameqa"`` (etc.) restricts
the adapter to one task, as experiments do. Featurizing all tasks at once shares the GIFs
they have in common. Action and transition are 5-way multiple choice; count is open-ended
with the integer as text (metric: mean squared error); FrameQA is one-word open-ended
(metric: accuracy, also per FrameQA type).

``video_id`` is the GIF key, the identifier both formats share; its file is
``gifs/<gif_name>.gif`` with ``gif_name`` from any official file in the data root, and
``gifs/<key>.gif`` for a key that no official file names (most doc-doc FrameQA train GIFs
when only the test files are present).

Answer vocabulary (FrameQA only; ``[]`` for ``task`` action, transition or count): every
distinct FrameQA train answer, most frequent first (doc-doc's shipped list when present).
"""

from __future__ import annotations

from pathlib import Path

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.annotations import first_file, parse_index, read_table, unique_qids
from vqacache.featurize.datasets.checks import (
    missing_ids,
    require_data_root,
    require_split,
    videos_of,
)
from vqacache.featurize.datasets.paths import video_dirs
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset
from vqacache.featurize.datasets.vocab import frequent_answers, read_answer_list

NAME = "tgif_qa"
TASKS = ("action", "transition", "count", "frameqa")
SPLITS = ("train", "test")
FILE_SPLIT = {"train": "Train", "test": "Test"}
FRAMEQA_TYPES = ("object", "number", "color", "location")
MC_COLUMNS = ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key")
COLUMNS = {
    "action": MC_COLUMNS,
    "transition": MC_COLUMNS,
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key"),
}
DOCDOC_COLUMNS = ("video", "question", "answer", "qid")
ANSWER_LISTS = ("frameqa_ans_word.json", "frameqa/ans_word.json")
VIDEO_DIR = "gifs"
EXPECTED = (
    "{Train,Test}_{action,transition,count,frameqa}_question.csv or frameqa_train.csv (TGIF-QA)"
)


def _official(path: Path, task: str, split: str) -> tuple[list[QuestionRecord], dict[str, str]]:
    """Records of one official TSV, and its ``{key: gif_name}``."""
    records, names = [], {}
    for n, row in read_table(NAME, path, COLUMNS[task], delimiter="\t"):
        where = f"{path.name}:{n}"
        names[row["key"]] = row["gif_name"]
        candidates: tuple[str, ...] = ()
        answer: int | str = row["answer"]
        qtype = task
        if task in ("action", "transition"):
            candidates = tuple(row[f"a{i}"] for i in range(1, 6))
            answer = parse_index(NAME, where, row["answer"], len(candidates))
        elif task == "frameqa":
            index = parse_index(NAME, f"{where} (type)", row["type"], len(FRAMEQA_TYPES))
            qtype = f"frameqa/{FRAMEQA_TYPES[index]}"
        records.append(
            QuestionRecord(
                qid=row["vid_id"],
                video_id=row["key"],
                question=row["question"],
                candidates=candidates,
                answer=answer,
                qtype=qtype,
                split=split,
            )
        )
    return records, names


def _docdoc(path: Path, split: str) -> list[QuestionRecord]:
    """Records of doc-doc's FrameQA CSV (``video,width,height,question,answer,qid``)."""
    return [
        QuestionRecord(
            qid=row["qid"],
            video_id=row["video"],
            question=row["question"],
            candidates=(),
            answer=row["answer"],
            qtype="frameqa",
            split=split,
        )
        for _, row in read_table(
            NAME, path, DOCDOC_COLUMNS, header_hint="video,width,height,question,answer,qid"
        )
    ]


@register_dataset(NAME)
class TgifQA:
    """TGIF-QA: all tasks present (default) or one ``task``; splits ``train`` / ``test``."""

    name = NAME

    def __init__(
        self, data_root: Path | None, *, task: str | None = None, video_root: Path | None = None
    ) -> None:
        self.data_root = require_data_root(NAME, data_root, EXPECTED)
        if task is not None and task not in TASKS:
            raise UsageError(f"{NAME}: unknown task {task!r}; available: {', '.join(TASKS)}")
        self.task = task
        self._tasks = TASKS if task is None else (task,)
        # (split, task) -> (path, "official" | "docdoc"), in canonical order
        self._files: dict[tuple[str, str], tuple[Path, str]] = {}
        for split in SPLITS:
            for t in self._tasks:
                official = self.data_root / f"{FILE_SPLIT[split]}_{t}_question.csv"
                docdoc = first_file(self.data_root, [f"{t}_{split}.csv", f"{t}/{split}.csv"])
                if official.is_file():
                    self._files[(split, t)] = (official, "official")
                elif t == "frameqa" and docdoc is not None:
                    self._files[(split, t)] = (docdoc, "docdoc")
        if not self._files:
            which = "" if task is None else f" for task {task!r}"
            raise UsageError(
                f"{NAME}: --data-root {self.data_root} holds none of {EXPECTED}{which}"
            )
        self.video_root = video_dirs(self.data_root, video_root, (VIDEO_DIR,))[0]
        self._questions: dict[str, list[QuestionRecord]] = {}
        self._gif_names: dict[str, str] = {}
        self._all_names_read = False

    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if any(k[0] == s for k in self._files))

    def questions(self, split: str) -> list[QuestionRecord]:
        require_split(NAME, split, self.splits())
        if split not in self._questions:
            records: list[QuestionRecord] = []
            for (s, task), (path, kind) in self._files.items():
                if s != split:
                    continue
                if kind == "official":
                    part, names = _official(path, task, split)
                    self._gif_names.update(names)
                else:
                    part = _docdoc(path, split)
                unique_qids(NAME, path, part)
                records += part
            self._questions[split] = records
        return list(self._questions[split])

    def _read_all_names(self) -> None:
        """Collect ``{key: gif_name}`` from every official file in the data root, once."""
        if self._all_names_read:
            return
        for path in sorted(self.data_root.glob("*_question.csv")):
            task = next((t for t in TASKS if path.name.endswith(f"_{t}_question.csv")), None)
            if task is not None and path.name.split("_")[0] in ("Train", "Test", "Total"):
                for _, row in read_table(NAME, path, ("gif_name", "key"), delimiter="\t"):
                    self._gif_names[row["key"]] = row["gif_name"]
        self._all_names_read = True

    def video_path(self, video_id: str) -> Path:
        """``gifs/<gif_name>.gif`` for key ``video_id``, or ``gifs/<key>.gif`` if unnamed."""
        if video_id not in self._gif_names:
            self._read_all_names()
        return self.video_root / f"{self._gif_names.get(video_id, video_id)}.gif"

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self.video_path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))

    def answer_vocab(self) -> list[str]:
        """Every distinct FrameQA train answer, most frequent first; ``[]`` for other tasks."""
        if "frameqa" not in self._tasks:
            return []
        shipped = first_file(self.data_root, ANSWER_LISTS)
        if shipped is not None:
            return read_answer_list(NAME, shipped)
        if ("train", "frameqa") not in self._files:
            raise UsageError(
                f"{NAME}: the answer vocabulary is built from the FrameQA train answers "
                "(Train_frameqa_question.csv or frameqa_train.csv), which are not under --data-root"
            )
        frameqa = (q for q in self.questions("train") if (q.qtype or "").startswith("frameqa"))
        return frequent_answers(str(q.answer) for q in frameqa)
