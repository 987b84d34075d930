"""Training methods, one file each, found by name: ``get_method("videodistill")``.

* ``uniform`` (:mod:`.uniform`): K uniform frames -> vision refinement -> answer head;
* ``videodistill`` (:mod:`.videodistill`): N dense CLS -> frame sampler -> top-K -> refinement;
* ``sparc`` (:mod:`.sparc`): SpARC's guided/consistency/spatial-distillation losses and
  Temporal Guided Mixup around ``--backbone uniform|videodistill``;
* ``vlap`` (:mod:`.vlap`): Frame-Prompter, InstructBLIP Q-Former + frozen Flan-T5 and the
  QFormer-Distiller on cached ViT-g tokens (recipes of the paper's ablations).
"""

from __future__ import annotations

from typing import Any

from vqacache.cache_spec.errors import UnknownName
from vqacache.heads.methods import sparc, uniform, videodistill, vlap
from vqacache.heads.methods.common import Method

METHODS: dict[str, Method] = {m.name: m for m in (uniform.METHOD, videodistill.METHOD, sparc.METHOD, vlap.METHOD)}


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


__all__ = ["METHODS", "Method", "get_method", "method_args"]
