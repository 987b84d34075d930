"""The ranges that define the numbers (issue 10): each package that can change what a store
holds has a lower bound where a needed behaviour arrived and an upper bound at its next major,
and the unmaintained decord 0.6.0 (whose wheel metadata made uv reinstall it on every run) is
gone from the lock."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}


def test_zarr_has_atomic_metadata_writes_and_no_next_major():
    zarr = _requirements()["zarr"].specifier
    assert not zarr.contains("3.1.2") and zarr.contains("3.1.3") and not zarr.contains("4.0.0")


def test_number_defining_packages_stop_before_their_next_major():
    reqs = _requirements()
    for name in ("open_clip_torch", "transformers", "zarr", "decord2", "av"):
        specifier = reqs[name].specifier
        assert any(s.operator == "<" for s in specifier), f"{name} has no upper bound: {specifier}"


def test_imported_packages_are_declared():
    reqs = _requirements()
    for name in ("huggingface_hub", "safetensors", "pillow", "tokenizers", "timm"):
        assert name in reqs, f"{name} is imported by vqacache but not declared"


def test_the_lock_holds_no_unmaintained_decord():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    names = {p["name"] for p in lock["package"]}
    assert "decord" not in names and "decord2" in names
