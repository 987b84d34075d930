"""Publish by rename: every group a writer builds appears under its final key in one step.

A writer builds a group under a private temporary key in the same parent folder,
``.tmp-<token>-<key>`` (``token``: its lease token, or a random one), checks that it still owns
the work, then renames the folder onto the final key. A reader never sees a partial group (it
skips temporaries), and a writer never touches a group it did not create: on any error it
removes only its own temporary.

Temporaries left by a killed writer are removed by ``vqa-cache verify --remove-temporaries``
once no live lease carries their token (see :func:`stale_temporaries` in ``verify``).
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
TOKEN_CHARS = 16


def temp_key(key: str, token: str | None = None) -> str:
    """The temporary key of a group that will be published as ``key``."""
    return f"{TMP_PREFIX}{(token or uuid.uuid4().hex)[:TOKEN_CHARS]}-{key}"


def is_temporary(key: str) -> bool:
    """Whether a member key is a temporary (being written, or left by a killed writer)."""
    return key.startswith((TMP_PREFIX, OLD_PREFIX))


def temp_token(key: str) -> str | None:
    """The token part of a temporary key, or None for a published key."""
    for prefix in (TMP_PREFIX, OLD_PREFIX):
        if key.startswith(prefix):
            return key[len(prefix) : len(prefix) + TOKEN_CHARS]
    return None


def publish(tmp: Path, final: Path) -> bool:
    """Rename the folder ``tmp`` onto ``final``. True when published; False when ``final``
    already exists (another writer published first: ``tmp`` is left for the caller to
    remove). Any other failure raises."""
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or final.exists():
            return False
        raise
    return True


def replace(tmp: Path, final: Path) -> None:
    """Publish ``tmp`` as ``final``, replacing what is there: the old folder is renamed aside,
    the new one renamed in, then the old one deleted. A failure to rename the new one in puts
    the old one back; a crash in between leaves both folders (the old one under
    ``.old-<token>-<key>``), never neither and never a mix."""
    aside = final.with_name(f"{OLD_PREFIX}{uuid.uuid4().hex[:TOKEN_CHARS]}-{final.name}")
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        aside = None
    try:
        published = publish(tmp, final)
    except BaseException:
        if aside is not None:  # put the old one back (unless another writer published meanwhile)
            publish(aside, final)
        raise
    if not published:
        # another writer published between our two renames: theirs stands, ours goes
        remove_tree(tmp)
    if aside is not None:
        remove_tree(aside)


def remove_tree(path: Path) -> None:
    """Delete a folder this process created (a temporary, or an old copy it moved aside)."""
    shutil.rmtree(path, ignore_errors=True)
