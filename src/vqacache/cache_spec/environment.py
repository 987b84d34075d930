"""The producing environment recorded in each store (not part of the fingerprint)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_PACKAGES = (
    "vqacache", "torch", "torchvision", "open_clip_torch", "transformers", "timm",
    "decord2", "av", "pillow", "zarr", "numpy",
)
"""Distributions, not modules: ``decord2`` provides the module ``decord`` (stores written
before the switch record ``decord``, the unmaintained 0.6.0); ``timm`` builds ALBEF's ViT;
``pillow`` decodes folders of frames."""


def producing_environment() -> dict[str, str]:
    """Python, platform and the versions of the packages that can change the numbers."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return env
