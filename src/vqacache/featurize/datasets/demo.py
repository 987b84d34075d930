"""The ``demo`` dataset: 16 generated clips of coloured shapes with 64 questions.

It needs no download: the first ``get_dataset("demo", root)`` generates the clips into
``root`` (seconds, see :mod:`.demo_generator`); later calls reuse them. When the CLI passes
no ``--data-root`` the folder is :data:`DEFAULT_ROOT`, ``data/demo`` relative to the
current directory.

The data root is handled as follows:

* missing, or empty (hidden entries such as ``.gitkeep`` ignored): generate into it;
* holds a ``manifest.json`` from the current generator version whose files are all present
  and unchanged: reuse it;
* holds a demo ``manifest.json`` of another generator version, or files that were removed
  or changed since: regenerate (the folder is ours);
* holds anything else: refuse with a :class:`UsageError`, never touching the files.

Generation is atomic: the files are written into a hidden sibling folder, moved into the
data root one by one, and ``manifest.json`` is moved last, so its presence proves a
complete generation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.datasets import demo_generator as gen
from vqacache.featurize.datasets.checks import missing_ids, require_split, videos_of
from vqacache.featurize.datasets.records import QuestionRecord, VideoRecord
from vqacache.featurize.datasets.registry import register_dataset

DEFAULT_ROOT = Path("data/demo")
"""Data root used when none is given; relative to the current directory."""


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The demo manifest in ``root``, or ``None`` if there is none or it is not ours."""
    try:
        manifest = json.loads((root / gen.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != gen.GENERATOR:
        return None
    return manifest


def _is_intact(root: Path, manifest: dict[str, Any]) -> bool:
    """True if ``manifest`` is the current version and every file it lists is unchanged."""
    if manifest.get("generator_version") != gen.GENERATOR_VERSION:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, digest in files.items():
        path = root / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
    return True


def _visible_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def _publish(root: Path) -> None:
    """Generate into a hidden sibling folder, then move the files in; manifest last."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        gen.generate_demo(tmp)
        names = sorted(p.name for p in tmp.iterdir() if p.name != gen.MANIFEST)
        for name in [*names, gen.MANIFEST]:
            os.replace(tmp / name, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_demo(root: Path) -> Path:
    """Make ``root`` hold a complete, current demo dataset (see the module docstring)."""
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"demo: --data-root {root} is a file; expected a folder for the clips")
    if root.is_dir():
        manifest = _read_manifest(root)
        if manifest is None and _visible_entries(root):
            shown = ", ".join(_visible_entries(root)[:3])
            raise UsageError(
                f"demo: --data-root {root} is not empty ({shown}, ...) and holds no demo "
                f"{gen.MANIFEST}; pass an empty or missing folder, or an existing demo folder"
            )
        if manifest is not None and _is_intact(root, manifest):
            return root
    _publish(root)
    return root


@register_dataset("demo")
class DemoDataset:
    """The generated demo clips; splits ``train`` (12 clips) and ``val`` (4 clips)."""

    name = "demo"

    def __init__(self, data_root: Path | None) -> None:
        self.data_root = ensure_demo(DEFAULT_ROOT if data_root is None else Path(data_root))
        payload = json.loads((self.data_root / gen.QUESTIONS).read_text(encoding="utf-8"))
        self._questions: dict[str, list[QuestionRecord]] = {}
        for q in payload["questions"]:
            record = QuestionRecord(
                qid=q["qid"],
                video_id=q["video_id"],
                question=q["question"],
                candidates=tuple(q["candidates"]),
                answer=q["answer"],
                qtype=q["qtype"],
                split=q["split"],
            )
            self._questions.setdefault(record.split, []).append(record)

    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in ("train", "val") if s in self._questions)

    def questions(self, split: str) -> list[QuestionRecord]:
        return list(self._questions[require_split(self.name, split, self.splits())])

    def _path(self, video_id: str) -> Path:
        return self.data_root / f"{video_id}.mp4"

    def videos(self, split: str | None = None) -> list[VideoRecord]:
        splits = self.splits() if split is None else (split,)
        return videos_of((q for s in splits for q in self.questions(s)), self._path)

    def missing_videos(self, split: str | None = None) -> list[str]:
        return missing_ids(self.videos(split))
