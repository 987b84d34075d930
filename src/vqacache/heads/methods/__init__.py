"""Training methods, one file each, found by name: ``get_method("videodistill")``.

* ``uniform`` (:mod:`.uniform`): K uniform frames -> vision refinement -> answer head;
* ``videodistill`` (:mod:`.videodistill`): N dense CLS -> frame sampler -> top-K -> refinement;
* ``hga`` (:mod:`.hga`): heterogeneous graph alignment over clips of CLS vectors and the question;
* ``sparc`` (:mod:`.sparc`): SpARC's guided/consistency/spatial-distillation losses and
  Temporal Guided Mixup around ``--backbone hga|uniform|videodistill``;
* ``vlap`` (:mod:`.vlap`): Frame-Prompter, InstructBLIP Q-Former + frozen Flan-T5 and the
  QFormer-Distiller on cached ViT-g tokens (recipes of the paper's ablations);
* ``siasamrea`` (:mod:`.siasamrea`): siamese clips, siamese knowledge generation and reasoning
  (soft labels) around ``--method-arg backbone=uniform|videodistill``; anchor-only inference;
* ``mcg`` (:mod:`.mcg`): temporal adapter over cached patch tokens, instance- and token-level
  contrast, BLIP-style fusor with video-text matching and a generative answer decoder.
"""

from __future__ import annotations

from typing import Any

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.heads.methods import hga, mcg, siasamrea, sparc, uniform, videodistill, vlap
from vqacache.heads.methods.common import Method

METHODS: dict[str, Method] = {
    m.name: m for m in (uniform.METHOD, videodistill.METHOD, hga.METHOD, sparc.METHOD, vlap.METHOD, siasamrea.METHOD, mcg.METHOD)
}


def get_method(name: str) -> Method:
    """The method registered as ``name``; unknown names list the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownName(f"unknown method {name!r}; valid: {', '.join(sorted(METHODS))}") from None


def method_args(method: Method, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults updated by ``overrides`` (None values ignored); unknown keys refused."""
    args = dict(method.defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in args:
            raise UnknownName(f"method {method.name!r} has no argument {key!r}; valid: {', '.join(sorted(args))}")
        args[key] = value
    return args


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_method_args(method: Method, pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> ``{key: value}`` typed by the default's type (bool, int, float, str).

    Unknown keys raise :class:`UnknownName` listing the valid ones; a value that does not parse
    as its type, a missing ``=`` or a key given twice raise :class:`UsageError`.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--method-arg {pair!r}: expected KEY=VALUE")
        if key not in method.defaults:
            raise UnknownName(
                f"method {method.name!r} has no argument {key!r}; valid: {', '.join(sorted(method.defaults))}")
        if key in out:
            raise UsageError(f"--method-arg {key}=... given twice")
        out[key] = _typed(key, raw, method.defaults[key])
    return out


def _typed(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.strip().lower() in _TRUE:
                return True
            if raw.strip().lower() in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        what = {bool: "true or false", int: "an integer", float: "a number"}[type(default)]
        raise UsageError(f"--method-arg {key}={raw!r}: expected {what}") from None
    return raw


__all__ = ["METHODS", "Method", "get_method", "method_args", "parse_method_args"]
