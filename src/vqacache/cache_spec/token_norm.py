"""Which form of a vision tower's final LayerNorm a store's tokens are in, and its parameters.

BLIP-2-family models (BLIP-2 OPT / Flan-T5, InstructBLIP, SeViLA, VLAP) share one frozen EVA
ViT-g trunk but each trains its own copy of the LayerNorm after it (``ln_vision``,
transformers' ``post_layernorm``). So ``vitg`` stores keep the trunk's output normalised
*without* the affine part,

    stored = (x - mean(x)) / sqrt(var(x) + eps)      (over the W channels of each token)

and stage two applies its own checkpoint's (gamma', beta'): ``gamma' * stored + beta'``
(:class:`vqacache.heads.modules.vision_layernorm.VisionLayerNorm`). The spec records, under
``extra["token_norm"]``:

| key | meaning |
|---|---|
| ``kind`` | ``affine-free`` (above) or ``affine`` (``gamma * that + beta``: the LayerNorm's full output) |
| ``eps`` | the LayerNorm's eps |
| ``gamma``, ``beta`` | the featurizing checkpoint's LayerNorm weight and bias, (W,) float32 little-endian bytes, base64 |
| ``trunk_sha256`` | :func:`trunk_digest` of the frozen trunk (the tower minus its final LayerNorm) |

so the old form is reproduced exactly (``gamma * stored + beta``) and a stage-two checkpoint
with another trunk is refused (:func:`require_same_trunk`). Stores without the record (every
store written before it, and other encoders' stores: their tokens are the full LayerNorm
output) read as ``kind="affine"`` with nothing known.

gamma and beta live in the spec, not in arrays of the store: the spec is written once,
atomically, when the store is created (no second publish step, no race between two runs
creating one store), it is the one self-description every reader already parses, their exact
float32 bits survive JSON as base64 (2 x 7.5 KB for ViT-g's W = 1408), and plain ``zarr``
readers get them with ``np.frombuffer(base64.b64decode(s), "<f4")``. They add nothing to what
the fingerprint already pins (the weights' identity determines them).

numpy only: no torch here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vqacache.cache_spec.errors import SpecError, SpecMismatch

KINDS = ("affine-free", "affine")
EXTRA_KEY = "token_norm"
"""Key of the record in ``FeatureSpec.extra``."""
EXCLUDED_FROM_TRUNK = ("post_layernorm.",)
"""Tensor name prefixes (relative to the vision tower) that are not part of the frozen trunk."""


@dataclass(frozen=True)
class TokenNorm:
    """The form of a store's tokens.

    ``kind``: ``"affine-free"``: stored = (x - mean) / sqrt(var + eps); ``"affine"``: stored =
    gamma * that + beta (old ``vitg`` stores, other encoders). ``gamma``, ``beta``: (W,) float32,
    the featurizing checkpoint's LayerNorm weight and bias (None: unknown, e.g. old stores).
    ``eps``: its eps (None: unknown). ``trunk_sha256``: :func:`trunk_digest` of the frozen
    trunk (None: not recorded).
    """

    kind: str
    gamma: np.ndarray | None
    beta: np.ndarray | None
    eps: float | None
    trunk_sha256: str | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"token norm kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.gamma is None) != (self.beta is None):
            raise SpecError("token norm: gamma and beta are known together or not at all")
        if self.gamma is not None:
            gamma = np.asarray(self.gamma, dtype=np.float32)
            beta = np.asarray(self.beta, dtype=np.float32)
            if gamma.ndim != 1 or gamma.shape != beta.shape:
                raise SpecError(f"token norm: gamma and beta must be (W,) each, got {gamma.shape} and {beta.shape}")
            object.__setattr__(self, "gamma", gamma)
            object.__setattr__(self, "beta", beta)
        if self.eps is not None and not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise SpecError(f"token norm: eps must be a positive number, got {self.eps!r}")

    @property
    def known(self) -> bool:
        """Whether gamma and beta are recorded."""
        return self.gamma is not None

    def to_extra(self) -> dict[str, Any]:
        """The JSON record stored as ``spec.extra["token_norm"]``."""
        return {
            "kind": self.kind,
            "eps": None if self.eps is None else float(self.eps),
            "gamma": None if self.gamma is None else _encode(self.gamma),
            "beta": None if self.beta is None else _encode(self.beta),
            "trunk_sha256": self.trunk_sha256,
        }

    @classmethod
    def from_extra(cls, record: Any) -> TokenNorm:
        if not isinstance(record, dict) or set(record) != {"kind", "eps", "gamma", "beta", "trunk_sha256"}:
            raise SpecError(f"spec extra {EXTRA_KEY!r} must hold kind, eps, gamma, beta, trunk_sha256; got {record!r:.200}")
        return cls(
            kind=record["kind"],
            gamma=None if record["gamma"] is None else _decode(record["gamma"], "gamma"),
            beta=None if record["beta"] is None else _decode(record["beta"], "beta"),
            eps=record["eps"],
            trunk_sha256=record["trunk_sha256"],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenNorm):
            return NotImplemented
        return self.to_extra() == other.to_extra()

    __hash__ = None  # type: ignore[assignment]  # holds arrays


UNKNOWN = TokenNorm("affine", None, None, None, None)
"""What a store without a token-norm record holds: the full LayerNorm output, parameters unknown."""


def token_norm_of(store: Any) -> TokenNorm:
    """The token form of an open :class:`~vqacache.cache_spec.store.FeatureStore` (or of a
    :class:`~vqacache.cache_spec.spec.FeatureSpec`); :data:`UNKNOWN` for stores without the
    record."""
    spec = getattr(store, "spec", store)
    record = spec.extra.get(EXTRA_KEY)
    return UNKNOWN if record is None else TokenNorm.from_extra(record)


def trunk_digest(tensors: Mapping[str, np.ndarray], *, prefix: str = "") -> str:
    """sha256 (hex) identifying a frozen vision trunk.

    ``tensors``: the vision tower's state dict (names relative to the tower, as
    ``Blip2VisionModel.state_dict()``; with ``prefix="vision_model."`` the names under that
    prefix of a full checkpoint, stripped). Tensors under ``post_layernorm.`` (the trained
    LayerNorm, not the trunk) and integer tensors (buffers such as ``position_ids``, which
    checkpoints save or not) are left out. The rest, names sorted, each contributes the line
    ``<name>\\t<shape, comma separated>\\n`` then its values as float32 little-endian bytes
    (C order). Values are taken *as float32*: a trunk saved in float16 and the same trunk
    upcast to float32 give one digest.
    """
    names = []
    for name in tensors:
        if not name.startswith(prefix):
            continue
        short = name[len(prefix):]
        if short.startswith(EXCLUDED_FROM_TRUNK):
            continue
        names.append((short, name))
    digest = hashlib.sha256()
    for short, name in sorted(names):
        array = np.asarray(tensors[name])
        if not np.issubdtype(array.dtype, np.floating):
            continue
        shape = ",".join(str(n) for n in array.shape)
        digest.update(f"{short}\t{shape}\n".encode("utf-8"))
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def require_same_trunk(stored: TokenNorm, digest: str, *, what: str) -> None:
    """Refuse (one line, :class:`SpecMismatch`) a checkpoint ``what`` whose trunk digest is not
    the store's; a store that recorded none is refused too (it cannot be checked)."""
    if stored.trunk_sha256 is None:
        raise SpecMismatch(
            f"the store records no vision trunk digest, so {what} cannot be checked against it; re-featurize with this vqacache"
        )
    if stored.trunk_sha256 != digest:
        raise SpecMismatch(
            f"{what} has another vision trunk ({digest[:12]}) than the store's features ({stored.trunk_sha256[:12]}); "
            "featurize with its vision tower"
        )


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: Any, name: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (TypeError, ValueError):
        raise SpecError(f"token norm {name} is not base64 float32 bytes") from None
    if len(raw) % 4:
        raise SpecError(f"token norm {name} holds {len(raw)} bytes, not a whole number of float32")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
