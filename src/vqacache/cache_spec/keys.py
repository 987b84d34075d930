"""Video and question ids <-> store keys.

Ids come from datasets: NExT-QA's ``4010069381``, a folder dataset's ``sub/dir/clip``. A
store key must be exactly one path component that cannot reach outside the store, so ids
are validated and then percent-encoded: ``sub/dir/clip`` -> ``sub%2Fdir%2Fclip``.

Percent-encoding triples every non-ASCII byte, so an id of 180 UTF-8 bytes can give a
540-byte key, beyond one file name (255 bytes). A key longer than :data:`MAX_KEY_CHARS` is
therefore shortened to its first :data:`HASHED_PREFIX_CHARS` characters (never cutting a
``%XX``), then ``%~`` and 40 hex digits of the id's sha256. ``%~`` never occurs in a plain
percent-encoded key (``quote`` writes ``%`` only before two hex digits), so a hashed key cannot
collide with a plain one. A hashed key cannot be decoded: the id is kept in each group's
attributes (``video_id``) and in each lease record, and readers take it from there. The
encoding is documented in ``docs/cache-format.md``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from urllib.parse import quote, unquote

from vqacache.cache_spec.errors import InvalidVideoId

MAX_ID_BYTES = 4096
"""Longest id accepted (UTF-8 bytes). Ids live in JSON attributes; only keys are bounded."""
MAX_KEY_CHARS = 180
"""Longest key written as is. Leaves room in a 255-byte file name for the prefixes and
suffixes of temporaries (``.tmp-<token>-``) and lease files (``.<key>.json.steal-...``)."""
HASHED_PREFIX_CHARS = 120
HASH_MARK = "%~"

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
    """Validate ``video_id`` and encode it as a single, safe path component of at most
    :data:`MAX_KEY_CHARS` + 2 characters (see the module docstring)."""
    key = quote(validate_id(video_id, what), safe=_SAFE)
    if len(key) <= MAX_KEY_CHARS:
        return key
    prefix = key[:HASHED_PREFIX_CHARS]
    cut = prefix.rfind("%", len(prefix) - 2)  # a %XX cut in two: drop its start
    if cut != -1:
        prefix = prefix[:cut]
    return f"{prefix}{HASH_MARK}{hashlib.sha256(video_id.encode('utf-8')).hexdigest()[:40]}"


def is_hashed_key(key: str) -> bool:
    """Whether ``key`` is the shortened form of a long id (not decodable: read the id from
    the group's attributes)."""
    return HASH_MARK in key


def key_to_id(key: str) -> str:
    """Inverse of :func:`id_to_key` for keys that were not shortened (see :func:`is_hashed_key`)."""
    if is_hashed_key(key):
        raise InvalidVideoId(f"key {key[:40]!r}... is a hashed long id; read the id from the group's attributes")
    return unquote(key)
