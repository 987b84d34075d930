"""Stage one's image-QA flags, checked before any video is decoded.

``--imageqa`` (the teacher), ``--imageqa-score``, ``--imageqa-weights`` and
``--imageqa-tokenizer`` are resolved here in the main process, without building the model:
a mistake is a one-line :class:`UsageError` naming the flag (exit code 2), never a failure
after the whole frame-feature pass. A teacher module may provide ``check_weights(weights)``
(returning an object with ``seed``: not None for random weights) and
``check_tokenizer(tokenizer, resolved_weights)``; both BLIP and ALBEF do.

Which tokenizer the teacher gets:

* ``--imageqa-tokenizer PATH``: that one (it must load);
* else, real weights: the weights' own or the Hugging Face cache's (it must be there);
* else, ``random[:SEED]`` weights: a WordPiece tokenizer built from the dataset's text
  (:mod:`~vqacache.featurize.imageqa.dataset_tokenizer`), recorded in the teacher's spec, and
  the user is told in one line (:attr:`TeacherChoice.note`). Real weights never get one.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.featurize.imageqa.dataset_tokenizer import DatasetTokenizer, build_dataset_tokenizer, dataset_texts
from vqacache.featurize.imageqa.registry import TEACHERS, list_teachers, teacher_scores

_RANDOM = re.compile(r"random(?::\d{1,18})?")
_WEIGHTS_FLAG = re.compile(r"(?<![\w-])--weights\b")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class TeacherChoice:
    tokenizer: str | DatasetTokenizer | None
    """What the teacher builder gets as ``tokenizer`` (None: the weights' own)."""
    note: str | None = None
    """One line for the user (set when a tokenizer was built from the dataset)."""


def check_teacher_options(name: str, weights: str | None, tokenizer: str | None, score: str | None,
                          dataset: Any) -> TeacherChoice:
    """Check every image-QA flag (see the module docstring); ``dataset``: the adapter, whose
    questions and answers make the tokenizer for random weights."""
    if name not in TEACHERS:
        raise UnknownName(f"--imageqa: unknown image-QA teacher {name!r}; available: {', '.join(list_teachers())}")
    if score and score not in teacher_scores(name):
        scores = teacher_scores(name)
        raise UsageError(f"--imageqa-score {score!r}: teacher {name} takes "
                         + (", ".join(scores) if scores else "no score choice"))
    module = importlib.import_module(TEACHERS[name].partition(":")[0])
    resolved = _check_weights(module, weights)
    random = resolved.seed is not None if resolved is not None else bool(weights and _RANDOM.fullmatch(weights.strip()))
    if tokenizer is not None:
        _check_given_tokenizer(module, tokenizer, resolved)
        return TeacherChoice(tokenizer)
    if random:
        built = build_dataset_tokenizer(dataset_texts(dataset))
        return TeacherChoice(built, f"image-QA teacher {name}: random weights and no --imageqa-tokenizer, so a "
                                    f"WordPiece tokenizer was built from the dataset's questions and answers "
                                    f"({len(built)} tokens, sha256 {built.sha256[:12]}) and recorded in the "
                                    "teacher's spec")
    check = getattr(module, "check_tokenizer", None)
    if check is not None:
        try:
            check(None, resolved)
        except UsageError as exc:
            raise UsageError(f"--imageqa-tokenizer not given, and {_renamed(exc)}") from None
    return TeacherChoice(None)


def _check_weights(module: Any, weights: str | None) -> Any:
    check = getattr(module, "check_weights", None)
    if check is None:
        return None
    try:
        return check(weights)
    except UsageError as exc:
        message = _renamed(exc)
        if "--imageqa-weights" not in message:
            message = f"--imageqa-weights: {message}"
        raise UsageError(message) from None


def _check_given_tokenizer(module: Any, tokenizer: str, resolved: Any) -> None:
    path = Path(tokenizer).expanduser()
    if not path.exists():
        raise UsageError(f"--imageqa-tokenizer {tokenizer}: no such directory or vocab.txt file")
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        # transformers 5 loads an empty 5-token BertTokenizer from such a folder without a word
        raise UsageError(f"--imageqa-tokenizer {tokenizer}: the folder holds none of {', '.join(TOKENIZER_FILES)}")
    check = getattr(module, "check_tokenizer", None)
    if check is None:
        return
    try:
        check(tokenizer, resolved)
    except Exception as exc:  # any loader error: one line naming the flag
        raise UsageError(f"--imageqa-tokenizer {tokenizer}: cannot load a tokenizer from it ({_first_line(exc)})") from None


def _renamed(exc: BaseException) -> str:
    """The weights resolvers' message, first line, with ``--weights`` (the encoder's flag)
    named as the teacher's ``--imageqa-weights`` and ``tokenizer=`` as ``--imageqa-tokenizer``."""
    return _WEIGHTS_FLAG.sub("--imageqa-weights", _first_line(exc)).replace("tokenizer=", "--imageqa-tokenizer ")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
