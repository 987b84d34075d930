"""Shared fixtures. Real data lives in ../shared beside the project root (also in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
SHARED_VIDEOS = SHARED / "data" / "videos"
SHARED_ANNOTATIONS = SHARED / "data" / "annotations"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared real data at {path} (../shared beside the project root)")
    return path


@pytest.fixture
def shared_videos() -> Path:
    """Folder of real videos with awkward properties; skips when ../shared is absent."""
    return _need(SHARED_VIDEOS)


@pytest.fixture
def shared_annotations() -> Path:
    """Folder of real benchmark annotation files; skips when ../shared is absent."""
    return _need(SHARED_ANNOTATIONS)
