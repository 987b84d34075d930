"""Stores at fsspec URLs (``s3://``, ``gs://``, ``https://``, ``file://``), read-only.

``open_store("s3://bucket/cache/nextqa/clip-b16-....zarr")`` opens the store through zarr's own
fsspec store (``zarr.storage.FsspecStore``), with fsspec's credential conventions (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL`` or ``~/.aws``; for GCS:
``GOOGLE_APPLICATION_CREDENTIALS``; protocol packages such as ``s3fs`` or ``gcsfs`` must be
installed). Such a store opens read-only: writing goes through a local store and
``vqa-cache sync``. Leases and temporaries live only on local filesystems, so a remote store
has none.

:class:`StoreURL` stands where a :class:`~pathlib.Path` stands for a local store: it keeps the
URL intact (``pathlib`` would fold ``s3://`` into ``s3:/``), joins with ``/`` and has a
``name``; filesystem checks on it answer "absent".
"""

from __future__ import annotations

from typing import Any

URL_MARK = "://"


def is_url(path: Any) -> bool:
    """Whether ``path`` names a store by URL (``<protocol>://...``) rather than a local path."""
    return isinstance(path, str) and URL_MARK in path


class StoreURL(str):
    """A store's URL, usable where the code expects a store path (see the module docstring)."""

    def __new__(cls, url: str) -> StoreURL:
        return super().__new__(cls, url.rstrip("/"))

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StoreURL:
        return StoreURL(self.rsplit("/", 1)[0])

    def __truediv__(self, other: str) -> StoreURL:
        return StoreURL(f"{self}/{str(other).strip('/')}")

    def with_name(self, name: str) -> StoreURL:
        return self.parent / name

    def resolve(self) -> StoreURL:
        return self

    def exists(self) -> bool:
        return False

    def is_dir(self) -> bool:
        return False

    def is_file(self) -> bool:
        return False

    def iterdir(self) -> list:
        return []

    def glob(self, pattern: str) -> list:
        return []

    def rglob(self, pattern: str) -> list:
        return []

    def __repr__(self) -> str:
        return f"StoreURL({str(self)!r})"


def remote_nbytes(url: str) -> int:
    """Bytes under ``url`` as fsspec reports them (``fs.du``)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return int(fs.du(root, total=True))
