"""Video and question ids <-> store keys.

Ids come from datasets: NExT-QA's ``4010069381``, a folder dataset's ``sub/dir/clip``. A
store key must be exactly one path component that cannot reach outside the store, so ids
are validated and then percent-encoded: ``sub/dir/clip`` -> ``sub%2Fdir%2Fclip``. The
encoding is reversible and documented in ``docs/cache-format.md``; the original id is also
kept in each group's attributes.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

from vqacache.cache_spec.errors import InvalidVideoId

MAX_ID_BYTES = 200
"""Longest id accepted (UTF-8 bytes); its key must fit in one file name (255 bytes)."""

_SAFE = "-_.~"  # quote() keeps ASCII letters, digits and these; everything else is %XX


def validate_id(video_id: str, what: str = "video id") -> str:
    """Return ``video_id`` if it is usable as an id, else raise :class:`InvalidVideoId`.

    Refused: empty ids, absolute paths, ``.``/``..`` or empty path components, backslashes,
    control characters, and ids longer than :data:`MAX_ID_BYTES`. ``/`` between ordinary
    components is allowed (folder datasets use relative paths as ids).
    """
    if not isinstance(video_id, str) or not video_id:
        raise InvalidVideoId(f"{what} must be a non-empty string, got {video_id!r}")
    if len(video_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidVideoId(f"{what} is longer than {MAX_ID_BYTES} bytes: {video_id[:40]!r}...")
    if "\\" in video_id:
        raise InvalidVideoId(f"{what} {video_id!r} contains a backslash")
    if any(unicodedata.category(c) == "Cc" for c in video_id):
        raise InvalidVideoId(f"{what} {video_id!r} contains a control character")
    if video_id.startswith("/"):
        raise InvalidVideoId(f"{what} {video_id!r} is an absolute path")
    if any(part in ("", ".", "..") for part in video_id.split("/")):
        raise InvalidVideoId(f"{what} {video_id!r} has an empty, '.' or '..' path component")
    return video_id


def id_to_key(video_id: str, what: str = "video id") -> str:
    """Validate ``video_id`` and encode it as a single, safe path component."""
    return quote(validate_id(video_id, what), safe=_SAFE)


def key_to_id(key: str) -> str:
    """Inverse of :func:`id_to_key`."""
    return unquote(key)
