"""The producing environment recorded in each store (not part of the fingerprint)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_PACKAGES = ("vqacache", "torch", "torchvision", "open_clip_torch", "transformers", "decord", "av", "zarr", "numpy")


def producing_environment() -> dict[str, str]:
    """Python, platform and the versions of the packages that can change the numbers."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return env
