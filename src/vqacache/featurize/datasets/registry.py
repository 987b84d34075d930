"""Name -> adapter registry.

An adapter registers a factory under a name::

    @register_dataset("nextqa")
    class NextQA:
        def __init__(self, data_root: Path | None, *, video_root: Path | None = None): ...

and the pipeline builds it with ``get_dataset("nextqa", data_root, **options)``. A factory
takes the data root positionally and its options as keywords; options it does not accept
are reported as a :class:`UsageError` listing the ones it does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.featurize.datasets.records import VideoQADataset

DatasetFactory = Callable[..., VideoQADataset]
F = TypeVar("F", bound=DatasetFactory)

_REGISTRY: dict[str, DatasetFactory] = {}


def register_dataset(name: str) -> Callable[[F], F]:
    """Decorator registering ``factory(data_root, **options)`` under ``name``."""

    def decorate(factory: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"dataset {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def _accepted_options(factory: DatasetFactory) -> list[str] | None:
    """Keyword options ``factory`` accepts besides ``data_root``; ``None`` = any (``**kw``)."""
    params = list(inspect.signature(factory).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params[1:] if p.kind in keyword]


def get_dataset(name: str, data_root: Path | str | None, **options: Any) -> VideoQADataset:
    """Build the dataset adapter ``name`` over ``data_root``.

    Raises :class:`UnknownName` (listing the valid names) for an unknown ``name`` and
    :class:`UsageError` for options the adapter does not accept or a bad ``data_root``.
    """
    if name not in _REGISTRY:
        raise UnknownName(
            f"unknown dataset {name!r}; available: {', '.join(list_datasets())}"
        )
    factory = _REGISTRY[name]
    accepted = _accepted_options(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise UsageError(
                f"{name}: unknown option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
    root = Path(data_root) if data_root is not None else None
    return factory(root, **options)


def parse_dataset_options(name: str, pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["video_root=/data/v", "vocab_size=1000"]`` -> keyword options for adapter ``name``
    (``--dataset-option``), each converted to what the adapter declares: a path, a fraction
    (``3``, ``30000/1001``), a float, an integer, a boolean (true/false/1/0/yes/no) or a
    string. Unknown names are left for :func:`get_dataset` to report with the accepted ones."""
    if name not in _REGISTRY:
        raise UnknownName(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    params = inspect.signature(_REGISTRY[name]).parameters
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--dataset-option takes KEY=VALUE, got {pair!r}")
        annotation = str(params[key].annotation) if key in params else ""
        options[key] = _convert(key, value, annotation)
    return options


def _convert(key: str, value: str, annotation: str) -> Any:
    if "Path" in annotation:
        return Path(value).expanduser()
    if "Fraction" in annotation:
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"--dataset-option {key} takes a number such as 3 or 30000/1001, got {value!r}") from None
    if "float" in annotation:
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"--dataset-option {key} takes a number, got {value!r}") from None
    if "bool" in annotation:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"--dataset-option {key} takes true or false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    if "int" in annotation:
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"--dataset-option {key} takes an integer, got {value!r}") from None
    return value
