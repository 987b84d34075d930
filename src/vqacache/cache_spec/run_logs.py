"""Run logs: each featurize run records what it did in its own group ``runs/<run key>``.

Each run has its own group, so concurrent runs never write the same metadata; a run logs
from one process only.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import uuid
from typing import Any

import zarr
from zarr.errors import ContainsGroupError

from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.question_bundles import json_safe

RUNS = "runs"
"""Group of run logs, ``runs/<run key>``; created by the first run that logs (absent in older stores)."""


def new_run_id() -> str:
    """A run id unique across processes and machines: ``<UTC time>-<host>-<pid>-<random>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def write_run_log(root: zarr.Group, run_id: str, record: dict[str, Any]) -> None:
    """Store ``record`` (JSON-able) as the attributes of ``runs/<run id>``, replacing what
    this run logged before."""
    runs = _runs_group(root, create=True)
    key = id_to_key(run_id, "run id")
    attrs = {**json_safe(record), "run_id": run_id}
    if key in runs:
        runs[key].attrs.put(attrs)
    else:
        try:
            runs.create_group(key, attributes=attrs)
        except ContainsGroupError:
            runs[key].attrs.put(attrs)


def run_logs(root: zarr.Group) -> list[dict[str, Any]]:
    """Every run's record (with ``run_id``), oldest first (by ``start``, then run id)."""
    runs = _runs_group(root, create=False)
    if runs is None:
        return []
    logs = [dict(group.attrs) for _, group in runs.groups()]
    return sorted(logs, key=lambda r: (str(r.get("start", "")), str(r.get("run_id", ""))))


def _runs_group(root: zarr.Group, create: bool) -> zarr.Group | None:
    try:
        node = root[RUNS]
        return node if isinstance(node, zarr.Group) else None
    except KeyError:
        if not create:
            return None
    try:  # two runs may create it at once: both write the same empty group
        return root.create_group(RUNS)
    except ContainsGroupError:
        return root[RUNS]
