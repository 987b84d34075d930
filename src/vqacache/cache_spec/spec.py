"""The feature spec: every input that changes the cached numbers, and its fingerprint.

A :class:`FeatureSpec` is a frozen, validated description of *what* produced a store:
the encoder and its exact weights, the preprocessing, the frame sampling, which vectors are
kept and the storage dtype. Operational settings (batch size, workers, device, paths) are
deliberately absent: they must not change the numbers, so they must not change the key.

The JSON shape is the contract (``to_dict`` / ``from_dict`` round trip). Every field is
written, defaults included, so that changing a default changes the fingerprint.
``fingerprint()`` is the sha256 of the canonical JSON (sorted keys, no whitespace, ASCII),
which is stable across processes, machines and Python versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from vqacache.cache_spec.errors import SpecError

FORMAT_VERSION = 1
"""Version of the on-disk format and of this JSON shape. Bump on any incompatible change."""

STORAGE_DTYPES = ("float16", "float32")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
WEIGHTS_SOURCES = ("pretrained", "file", "random", "imported")
"""``imported``: features read from an HDF5 file (``vqa-cache import``); identity ``sha256:<file>``."""
CROP_MODES = ("center", "none")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
SAMPLING_POLICIES = ("nearest-pts-v1", "clip-grid-v1")
"""``clip-grid-v1``: an imported store's frames are an HDF5 layout's clip x frame slots, in row
order (``cache_spec/hdf5/layouts.py``); ``pts`` the slot times the file records."""


# -- small parsers: one place that knows each field's type and range -----------------------


def _parse_str(d: dict, key: str, allowed: tuple[str, ...] | None = None) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError(f"spec field {key!r} must be a non-empty string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise SpecError(f"spec field {key!r} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _parse_int(d: dict, key: str, minimum: int = 0, optional: bool = False) -> int | None:
    value = d.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"spec field {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_bool(d: dict, key: str) -> bool:
    value = d.get(key)
    if not isinstance(value, bool):
        raise SpecError(f"spec field {key!r} must be true or false, got {value!r}")
    return value


def _parse_triple(d: dict, key: str) -> tuple[float, float, float]:
    value = d.get(key)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise SpecError(f"spec field {key!r} must be a list of 3 numbers, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def parse_fps(value: Any) -> Fraction:
    """Parse a frame rate given as ``7.5``, ``"7.5"``, ``"15/2"`` or a Fraction; must be > 0."""
    try:
        fps = Fraction(str(value)) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        raise SpecError(f"fps must be a positive number such as 7.5 or 15/2, got {value!r}") from None
    if fps <= 0:
        raise SpecError(f"fps must be positive, got {value!r}")
    return fps


def _check_keys(d: Any, section: str, names: set[str]) -> dict:
    if not isinstance(d, dict):
        raise SpecError(f"spec section {section!r} must be an object, got {type(d).__name__}")
    unknown = set(d) - names
    missing = names - set(d)
    if unknown:
        raise SpecError(f"spec section {section!r} has unknown field(s): {', '.join(sorted(unknown))}")
    if missing:
        raise SpecError(f"spec section {section!r} lacks field(s): {', '.join(sorted(missing))}")
    return d


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


# -- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights, exactly.

    ``source``: ``pretrained`` (a library tag such as open_clip's ``openai``), ``file`` (a local
    checkpoint) or ``random``. ``identity``: the tag, ``sha256:<hex>`` of the file's bytes, or
    ``random:<seed>``. A local file is identified by its content hash, never by its path.
    """

    source: str
    identity: str

    def __post_init__(self) -> None:
        _parse_str(asdict(self), "source", WEIGHTS_SOURCES)
        _parse_str(asdict(self), "identity")
        if self.source == "random" and not self.identity.startswith("random:"):
            raise SpecError(f"random weights need identity 'random:<seed>', got {self.identity!r}")
        if self.source in ("file", "imported") and not self.identity.startswith("sha256:"):
            raise SpecError(f"{self.source} weights need identity 'sha256:<hex>', got {self.identity!r}")

    @classmethod
    def from_dict(cls, d: Any) -> WeightsSpec:
        d = _check_keys(d, "weights", _names(cls))
        return cls(source=d["source"], identity=d["identity"])


@dataclass(frozen=True)
class PreprocessSpec:
    """Pixels in, tensor out: both resizes, the crop and the normalisation.

    Frames are first decoded and resized so their short side is ``decode_short_side``
    (aspect kept, ``decode_interpolation``, antialiased; ``None`` keeps the native size), as
    VideoDistill stores frames. The model transform then resizes the short side to
    ``resize_short_side`` with ``interpolation``, crops ``crop_size`` (``center``), scales to
    [0, 1] and normalises with ``mean``/``std`` (open_clip's transform, on tensors).
    """

    decode_short_side: int | None
    decode_interpolation: str
    resize_short_side: int
    interpolation: str
    crop: str
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    antialias: bool = True

    def __post_init__(self) -> None:
        d = asdict(self)
        _parse_int(d, "decode_short_side", 1, optional=True)
        _parse_str(d, "decode_interpolation", INTERPOLATIONS)
        _parse_int(d, "resize_short_side", 1)
        _parse_str(d, "interpolation", INTERPOLATIONS)
        _parse_str(d, "crop", CROP_MODES)
        _parse_int(d, "crop_size", 1)
        object.__setattr__(self, "mean", _parse_triple(d, "mean"))
        object.__setattr__(self, "std", _parse_triple(d, "std"))
        _parse_bool(d, "antialias")

    @classmethod
    def from_dict(cls, d: Any) -> PreprocessSpec:
        d = _check_keys(d, "preprocess", _names(cls))
        return cls(**d)


@dataclass(frozen=True)
class SamplingSpec:
    """Which frames: ``fps`` as an exact fraction string (``"15/2"``) and the selection rule.

    ``nearest-pts-v1``: with presentation times relative to the first frame and
    ``D = pts_last + 1/native_fps``, output times are ``k/fps`` for ``k/fps < D``; frame k is
    the source frame whose pts is nearest (ties to the earlier one). Slow videos repeat frames.
    """

    fps: str
    policy: str = "nearest-pts-v1"

    def __post_init__(self) -> None:
        fps = parse_fps(self.fps)
        object.__setattr__(self, "fps", f"{fps.numerator}/{fps.denominator}")
        _parse_str(asdict(self), "policy", SAMPLING_POLICIES)

    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.fps)

    @classmethod
    def from_dict(cls, d: Any) -> SamplingSpec:
        d = _check_keys(d, "sampling", _names(cls))
        return cls(fps=d["fps"], policy=d["policy"])


@dataclass(frozen=True)
class OutputSpec:
    """Which vectors are stored, named exactly.

    ``cls``: what the ``cls`` array holds, e.g. ``"image-embedding"`` (open_clip's
    ``encode_image`` output: post-norm CLS token after the projection, not L2-normalised).
    ``cls_hidden``: what ``cls_hidden`` holds (``"post-ln-cls"``: the same token before the
    projection) or ``None`` when not stored. ``patch_layer``: which token states ``patch``
    holds (``"post-ln"``: the final layer after the last layer norm, before any projection),
    ``None`` when patch tokens are not stored. ``patch_pool``: spatial average pooling factor
    applied to the patch grid (1 = none). ``text``: what the text features are
    (``"clip-text"``: sentence = projected EOT embedding, tokens = post-``ln_final`` states).
    ``text_context``: the tokenizer's context length.
    ``patch_fps``: patch tokens only on the sub-grid of frames nearest ``j / patch_fps``
    (:mod:`~vqacache.cache_spec.patch_frames`), as an exact fraction string; ``None`` (the
    default) = on every frame. Written only when set, so specs without it keep the
    fingerprints they had before the field existed.
    """

    cls: str
    cls_hidden: str | None
    patch_layer: str | None
    patch_pool: int
    text: str | None
    text_context: int | None
    patch_fps: str | None = None

    def __post_init__(self) -> None:
        d = asdict(self)
        _parse_str(d, "cls")
        for key in ("cls_hidden", "patch_layer", "text"):
            if d[key] is not None:
                _parse_str(d, key)
        _parse_int(d, "patch_pool", 1)
        _parse_int(d, "text_context", 1, optional=True)
        if self.patch_fps is not None:
            if self.patch_layer is None:
                raise SpecError("spec field 'patch_fps' needs patch tokens (patch_layer is null)")
            fps = parse_fps(self.patch_fps)
            object.__setattr__(self, "patch_fps", f"{fps.numerator}/{fps.denominator}")

    @property
    def patches(self) -> bool:
        return self.patch_layer is not None

    @property
    def patch_fps_fraction(self) -> Fraction | None:
        return None if self.patch_fps is None else Fraction(self.patch_fps)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: every field, except ``patch_fps`` when unset."""
        d = asdict(self)
        if d["patch_fps"] is None:
            del d["patch_fps"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> OutputSpec:
        if isinstance(d, dict) and "patch_fps" not in d:
            d = {**d, "patch_fps": None}  # written before the field existed, or unset
        d = _check_keys(d, "outputs", _names(cls))
        return cls(**d)


@dataclass(frozen=True)
class FeatureSpec:
    """The full description of what produced a store. Hash it with :meth:`fingerprint`.

    ``encoder``: registry name (``clip-b16``); ``architecture``: the library and model that
    computed the numbers (``open_clip:ViT-B-16``); ``compute_dtype``: the dtype the forward
    pass ran in (autocast changes numbers); ``dtype``: the storage dtype on disk.
    """

    encoder: str
    architecture: str
    weights: WeightsSpec
    preprocess: PreprocessSpec
    sampling: SamplingSpec
    outputs: OutputSpec
    dtype: str = "float16"
    compute_dtype: str = "float32"
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    """Anything else an encoder must record to make its numbers reproducible (JSON values)."""

    def __post_init__(self) -> None:
        d = {k: getattr(self, k) for k in ("encoder", "architecture", "dtype", "compute_dtype")}
        _parse_str(d, "encoder")
        _parse_str(d, "architecture")
        _parse_str(d, "dtype", STORAGE_DTYPES)
        _parse_str(d, "compute_dtype", COMPUTE_DTYPES)
        if self.format_version != FORMAT_VERSION:
            raise SpecError(
                f"unsupported format_version {self.format_version!r}; this vqacache reads {FORMAT_VERSION}"
            )
        if not isinstance(self.extra, dict):
            raise SpecError(f"spec field 'extra' must be an object, got {self.extra!r}")
        try:
            json.dumps(self.extra, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"spec field 'extra' must hold plain JSON values: {exc}") from None
        patch_fps = self.outputs.patch_fps_fraction
        if patch_fps is not None and patch_fps > self.sampling.fps_fraction:
            raise SpecError(
                f"patch_fps {self.outputs.patch_fps} is above the sampling fps {self.sampling.fps}: "
                "patch tokens are kept on a sub-grid of the sampled frames"
            )

    # frozen dataclass with a dict field: hash the canonical form instead
    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        d["outputs"] = self.outputs.to_dict()  # no patch_fps key when unset (fingerprints kept)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> FeatureSpec:
        d = _check_keys(d, "spec", _names(cls))
        version = d["format_version"]
        if version != FORMAT_VERSION:
            raise SpecError(
                f"unsupported format_version {version!r}; this vqacache reads {FORMAT_VERSION}"
            )
        return cls(
            encoder=d["encoder"],
            architecture=d["architecture"],
            weights=WeightsSpec.from_dict(d["weights"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            sampling=SamplingSpec.from_dict(d["sampling"]),
            outputs=OutputSpec.from_dict(d["outputs"]),
            dtype=d["dtype"],
            compute_dtype=d["compute_dtype"],
            format_version=version,
            extra=d["extra"],
        )

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, ASCII, no NaN. The fingerprint's input."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def fingerprint(self) -> str:
        """sha256 (hex) of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode("ascii")).hexdigest()

    def diff(self, other: FeatureSpec) -> list[str]:
        """Human-readable list of the fields that differ (dotted paths), for error messages."""
        return _diff(self.to_dict(), other.to_dict(), "")


def with_patch_fps(spec: FeatureSpec, patch_fps: Any) -> FeatureSpec:
    """``spec`` with patch tokens kept on the ``patch_fps`` sub-grid (None: every frame).
    A spec without patch tokens is returned unchanged (the knob changes nothing there)."""
    if patch_fps is None or not spec.outputs.patches:
        return replace(spec, outputs=replace(spec.outputs, patch_fps=None))
    return replace(spec, outputs=replace(spec.outputs, patch_fps=str(parse_fps(patch_fps))))


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]
