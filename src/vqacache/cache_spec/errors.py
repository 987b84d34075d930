"""Project-wide exception hierarchy.

Every error a user can cause subclasses :class:`VqaCacheError` *and* the matching builtin,
so callers can catch either (``except ValueError`` keeps working). The CLI turns these into
one-line messages and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VqaCacheError(Exception):
    """Base class of every error vqacache raises on purpose."""


class SpecError(VqaCacheError, ValueError):
    """A feature spec is malformed (bad field, wrong type, unknown format version)."""


class SpecMismatch(VqaCacheError, ValueError):
    """A store was opened or written with a spec other than the one it was created with."""


class StoreError(VqaCacheError, OSError):
    """A store is missing, unreadable, or not a vqacache store."""


class InvalidVideoId(VqaCacheError, ValueError):
    """A video or question id cannot be used as a store key (path separators escaping, ``..``)."""


class NotComplete(VqaCacheError, KeyError):
    """A video or question was asked for but is not complete in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownName(VqaCacheError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(VqaCacheError, ValueError):
    """A user-supplied option is invalid (bad path, missing data root, offline weights, ...)."""
