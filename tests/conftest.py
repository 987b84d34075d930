"""Shared fixtures. Real data lives in ../shared beside the project root (also in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
SHARED_VIDEOS = SHARED / "data" / "videos"
SHARED_ANNOTATIONS = SHARED / "data" / "annotations"


def in_ci() -> bool:
    """Whether this is a CI run (CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def need_shared(path: Path) -> Path:
    """``path`` (shared real data, or a folder in it) when it exists. Otherwise the test is
    skipped, but under ``CI=true`` it fails with the same reason: a CI whose ../shared is
    missing or laid out wrongly must never come out green."""
    if not path.exists():
        reason = f"needs the shared real data at {path} (../shared beside the project root)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_videos() -> Path:
    """Folder of real videos with awkward properties; skips when ../shared is absent
    (fails under CI=true, see :func:`need_shared`)."""
    return need_shared(SHARED_VIDEOS)


@pytest.fixture
def shared_annotations() -> Path:
    """Folder of real benchmark annotation files; skips when ../shared is absent
    (fails under CI=true, see :func:`need_shared`)."""
    return need_shared(SHARED_ANNOTATIONS)


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt of the test to reach the network (name lookup or connect), refused and
    recorded: a test of an offline path asserts the list stays empty instead of timing the call."""
    import socket

    attempts: list[str] = []

    def refuse(what: str):  # noqa: ANN202
        def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network use refused by the network_attempts fixture: {what}")
        return refused

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    return attempts


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


@pytest.fixture
def fake_teacher(monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a cheap deterministic image-QA teacher (tests/fake_teacher.py), registered
    for this test."""
    from vqacache.featurize.imageqa import registry

    monkeypatch.setitem(registry.TEACHERS, "fake", "fake_teacher:build_fake_teacher")
    return "fake"
