"""Reading benchmark annotation files with one-line errors that name the file.

Adapters call these readers instead of ``json.load`` / ``csv.reader`` directly, so a
truncated download, a CSV with the wrong header or a JSON list where a dict was expected
always surfaces as one :class:`UsageError` of the form ``<dataset>: <path>: <what>``,
never as a traceback. Row-level problems name the line: ``<dataset>: <path>:<line>: ...``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets.records import QuestionRecord

csv.field_size_limit(1 << 24)  # long free-text fields (TGIF descriptions, CLEVRER programs)


def first_file(root: Path, names: Iterable[str]) -> Path | None:
    """The first of ``root / name`` (``name`` may hold ``/``) that is a regular file."""
    for name in names:
        path = root / name
        if path.is_file():
            return path
    return None


def split_files(
    dataset: str, root: Path, candidates: Mapping[str, Sequence[str]], expected: str
) -> dict[str, Path]:
    """Map each split to the first existing of its candidate file names under ``root``.

    Splits keep the order of ``candidates``; a split with no file is left out. Raises
    :class:`UsageError` naming ``expected`` when no split has a file at all.
    """
    found = {s: p for s, names in candidates.items() if (p := first_file(root, names))}
    if not found:
        raise UsageError(f"{dataset}: --data-root {root} holds none of {expected}")
    return found


def read_json(dataset: str, path: Path, kind: type | tuple[type, ...] | None = None) -> Any:
    """Parse ``path`` as JSON; with ``kind``, also require the top-level type (list, dict)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{dataset}: cannot read {path} ({err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UsageError(f"{dataset}: {path} is not valid JSON ({err})") from None
    if kind is not None and not isinstance(data, kind):
        names = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join("a JSON object" if k is dict else "a JSON list" for k in names)
        raise UsageError(f"{dataset}: {path} holds a JSON {type(data).__name__}, expected {wanted}")
    return data


def read_jsonl(dataset: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Parse a JSON Lines file into ``(line number, object)`` pairs; blank lines skipped."""
    rows = []
    try:
        with path.open(encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise UsageError(f"{dataset}: {path}:{n}: not valid JSON ({err})") from None
                if not isinstance(row, dict):
                    raise UsageError(
                        f"{dataset}: {path}:{n}: holds a JSON {type(row).__name__}, "
                        "expected one object per line"
                    )
                rows.append((n, row))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{dataset}: cannot read {path} ({err})") from None
    return rows


def read_table(
    dataset: str, path: Path, columns: Sequence[str], *, delimiter: str = ",", header_hint: str = ""
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a headed CSV/TSV, after checking ``columns`` exist.

    Tab-separated files are read without quote processing (TGIF-QA's TSVs contain bare
    ``"``); comma-separated ones with the usual CSV quoting. A row with too few fields is
    an error naming its line.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
            absent = [c for c in columns if c not in (reader.fieldnames or ())]
            if absent:
                hint = f"; expected the header {header_hint}" if header_hint else ""
                raise UsageError(f"{dataset}: {path} lacks column(s) {', '.join(absent)}{hint}")
            for row in reader:
                n = reader.line_num
                short = [c for c in columns if row.get(c) is None]
                if short:
                    raise UsageError(
                        f"{dataset}: {path}:{n}: the row has no value for {', '.join(short)}"
                    )
                yield n, row
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{dataset}: cannot read {path} ({err})") from None


def field(
    dataset: str,
    where: str,
    record: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...] = str,
) -> Any:
    """``record[key]``, required to exist and be of ``kind``; else a one-line error at ``where``."""
    if key not in record or record[key] is None:
        raise UsageError(f"{dataset}: {where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind if isinstance(kind, tuple) else (kind,)
        raise UsageError(
            f"{dataset}: {where}: field {key!r} is {value!r}, expected "
            + " or ".join(k.__name__ for k in names)
        )
    return value


def parse_index(dataset: str, where: str, value: Any, n_candidates: int) -> int:
    """An answer index given as int or digit string, checked against ``n_candidates``."""
    try:
        index = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        index = None
    if index is None or (isinstance(value, float) and value != index):
        raise UsageError(f"{dataset}: {where}: answer {value!r} is not an index")
    if not 0 <= index < n_candidates:
        raise UsageError(
            f"{dataset}: {where}: answer index {index} is outside 0-{n_candidates - 1}"
        )
    return index


def parse_span(dataset: str, where: str, value: Any) -> tuple[float | None, float | None]:
    """A segment given as ``"st-ed"`` (TVQA/How2QA) or ``[st, ed]`` (VLEP/TVQA+), in seconds.

    ``"NaN-NaN"`` (3 TVQA test rows) and ``None`` mean the whole video: ``(None, None)``.
    """
    if value is None:
        return None, None
    if isinstance(value, str):
        parts = value.split("-")
        if len(parts) != 2:
            raise UsageError(f"{dataset}: {where}: timestamp {value!r} is not 'start-end'")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        parts = list(value)
    else:
        raise UsageError(
            f"{dataset}: {where}: timestamp {value!r} is not 'start-end' or [start, end]"
        )
    try:
        start, end = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{dataset}: {where}: timestamp {value!r} is not numeric") from None
    if start != start or end != end:  # NaN
        return None, None
    if start < 0 or end < start:
        raise UsageError(f"{dataset}: {where}: timestamp {value!r} is not 0 <= start <= end")
    return start, end


def unique_qids(dataset: str, path: Path, records: Iterable[QuestionRecord]) -> None:
    """Raise if a question id occurs twice in ``path``, naming both records."""
    seen: dict[str, QuestionRecord] = {}
    for r in records:
        first = seen.setdefault(r.qid, r)
        if first is not r:
            raise UsageError(
                f"{dataset}: {path} has question {r.qid} twice: video {first.video_id!r} ({first.question[:50]!r}) "
                f"and video {r.video_id!r} ({r.question[:50]!r})"
            )
