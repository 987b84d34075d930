"""Shared fixtures. Real data lives in ../shared beside the project root (also in CI)."""

from __future__ import annotations

import os
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


TINY_CLIP = "vqacache-tiny"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Encoder name of a tiny open_clip ViT (same 224 px / 16 px-patch code path as ViT-B-16,
    2 narrow layers) registered for this test session; use it with ``--weights random``."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
    # a second tiny model (32 px patches, other widths) for runs with several encoders
    (folder / f"{TINY_CLIP}-p32.json").write_text(json.dumps({
        **TINY_CLIP_CFG, "embed_dim": 24, "vision_cfg": {**TINY_CLIP_CFG["vision_cfg"], "patch_size": 32, "width": 48}}))
    open_clip.add_model_config(folder)
    os.environ["VQACACHE_OPEN_CLIP_CONFIGS"] = str(folder)  # for Dask workers and subprocesses
    return f"open_clip:{TINY_CLIP}"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset generated once per session."""
    from vqacache.featurize.datasets import get_dataset

    root = tmp_path_factory.mktemp("demo")
    get_dataset("demo", root)  # generates on first use
    return root
