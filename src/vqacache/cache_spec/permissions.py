"""Several Unix users sharing one cache root (a lab): modes, the umask, permission errors.

Everything vqacache creates (folders, chunk files, lease files, temporaries, exported files)
is created with the default mode (0o777 folders, 0o666 files) less the process umask, never
with a narrower fixed mode; so with a umask of ``002`` every file is group-writable. A cache
root with the setgid bit (``chmod g+s``) gives every folder created under it the root's group
and the setgid bit (the kernel does this on ``mkdir``), so all members of that group can append
to, verify and gc a store another member started. ``--umask`` on ``vqa-cache`` and
``vqa-featurize`` overrides the umask for one run (:func:`parse_umask`, :func:`apply_umask`).
See ``docs/lab-root.md``.

A permission problem is one line naming the path, its owner, group and mode
(:class:`PermissionProblem`, :func:`check_writable`), before any work starts.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from vqacache.cache_spec.errors import UsageError, VqaCacheError


class PermissionProblem(VqaCacheError, PermissionError):
    """This user may not write (or read) a path of a shared cache root; the message names the
    path and its owner."""


def parse_umask(text: str) -> int:
    """``"002"``, ``"0o002"`` or ``"0002"`` -> 0o002; anything else is a usage error naming ``--umask``."""
    value = str(text).strip().lower().removeprefix("0o")
    try:
        mask = int(value, 8)
    except ValueError:
        raise UsageError(f"--umask {text!r} is not an octal mask such as 002 or 022") from None
    if not 0 <= mask <= 0o777:
        raise UsageError(f"--umask {text!r} is outside 000..777")
    return mask


def apply_umask(text: str | None) -> int | None:
    """Set the process umask from ``--umask`` (None: keep the user's). Returns the old one."""
    return None if text is None else os.umask(parse_umask(text))


def describe_owner(path: Path | str) -> str:
    """``owner alice, group lab, mode drwxrwsr-x`` (numeric ids when a name is unknown)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    return f"owner {_user(st.st_uid)}, group {_group(st.st_gid)}, mode {stat.filemode(st.st_mode)}"


def permission_problem(path: Path | str, action: str = "write") -> PermissionProblem:
    return PermissionProblem(
        f"cannot {action} {path}: {describe_owner(path)}; you are {_user(os.geteuid())} "
        f"(groups {', '.join(_group(g) for g in sorted(set(os.getgroups()) | {os.getegid()}))}); "
        "members of a shared root need its group and a umask of 002 (docs/lab-root.md)"
    )


def check_writable(*paths: Path) -> None:
    """Raise :class:`PermissionProblem` for the first existing folder among ``paths`` this
    process may not create entries in (write and search permission)."""
    for path in paths:
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise permission_problem(path)


def group_shared(path: Path) -> dict[str, object]:
    """How ``path`` is set up for sharing: its group, setgid bit and group write bit."""
    st = os.stat(path)
    return {"group": _group(st.st_gid), "setgid": bool(st.st_mode & stat.S_ISGID),
            "group_writable": bool(st.st_mode & stat.S_IWGRP)}


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
