"""Imports point down only: cli -> featurize, heads -> cache_spec.

featurize and heads never import each other (they meet only in cache_spec), and
cache_spec imports no other vqacache package. Checked on the source's AST, so imports
inside functions and ``if TYPE_CHECKING`` blocks count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "vqacache"

ALLOWED = {
    "cache_spec": {"cache_spec"},
    "featurize": {"featurize", "cache_spec"},
    "heads": {"heads", "cache_spec"},
    "cli": {"cli", "featurize", "heads", "cache_spec"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (from vqacache.x import y)")
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "vqacache" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down(layer):
    files = sorted((PKG / layer).rglob("*.py"))
    assert files, f"no sources under {layer}"
    bad = {
        str(f.relative_to(PKG)): sorted(imported_layers(f) - ALLOWED[layer])
        for f in files
        if imported_layers(f) - ALLOWED[layer]
    }
    assert not bad, f"{layer} may import only {sorted(ALLOWED[layer])}; offenders: {bad}"


def test_every_layer_is_known():
    layers = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert layers == set(ALLOWED)
