"""Encoder names -> encoders.

Two kinds of name:

* **registered** names (:data:`ENCODERS`), each an architecture with its default weights and
  the builder of its family (``"module:function"``, imported only when the encoder is built):
  ``clip-b16`` (open_clip ``ViT-B-16``, ``openai``), ``clip-b32`` (``ViT-B-32``, ``openai``),
  ``clip-l14`` (``ViT-L-14``, ``openai``), ``eva01-g14`` (open_clip ``EVA01-g-14``,
  ``laion400m_s11b_b41k``), ``vitg`` (BLIP-2's EVA ViT-g/14 through transformers,
  ``Salesforce/blip2-opt-2.7b``), ``blip`` (BLIP's ViT-B/16 at 384 px through transformers,
  ``Salesforce/blip-vqa-base``), ``albef`` and ``albef-tiny`` (a tiny ALBEF for demos and
  smoke runs, random weights or a checkpoint of its shape; see :mod:`.albef`). ``--weights`` may still
  pick another tag or hub checkpoint of the same family, a local checkpoint or random weights.
* **parametric** ``open_clip:MODEL`` for any open_clip model config (``open_clip.list_models()``)
  of the supported kind, e.g. ``--encoder open_clip:ViT-L-14 --weights laion2b_s32b_b82k``.
  There is no default tag: ``--weights`` is required. Its filesystem-safe name (store paths)
  is ``open_clip-MODEL``. Extra model configs (a lab's own) are registered from the folders in
  ``$VQACACHE_OPEN_CLIP_CONFIGS``.

Unknown names raise :class:`UnknownName` listing the valid ones. The registry itself imports
no deep-learning library; open_clip, transformers and the family modules are imported when an
encoder is built or a model checked. Every builder takes the keyword arguments of
:func:`~vqacache.featurize.encoders.open_clip_encoder.build_open_clip_encoder`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqacache.cache_spec.errors import UnknownName
from vqacache.featurize.device import resolve_compute_dtype, resolve_device
from vqacache.featurize.encoders.base import Encoder

OPEN_CLIP_PREFIX = "open_clip:"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

OPEN_CLIP_BUILDER = "vqacache.featurize.encoders.open_clip_encoder:build_open_clip_encoder"
HF_VISION_BUILDER = "vqacache.featurize.encoders.hf_vision:build_hf_vision_encoder"
ALBEF_BUILDER = "vqacache.featurize.encoders.albef:build_albef_encoder"


@dataclass(frozen=True)
class EncoderEntry:
    """A name the registry resolves: ``name`` (filesystem-safe), the family's ``model`` (an
    open_clip model config, a transformers tower, ...) and its ``default_tag`` (default weights:
    a pretrained tag or a hub name; None: ``--weights`` required), built by ``builder``
    (``"module:function"``, imported lazily, called with :func:`get_encoder`'s keywords plus
    ``name``, ``model_name`` and ``default_tag``)."""

    name: str
    model: str
    default_tag: str | None
    summary: str
    builder: str = OPEN_CLIP_BUILDER


REGISTERED: dict[str, EncoderEntry] = {
    e.name: e
    for e in (
        EncoderEntry("clip-b16", "ViT-B-16", "openai", "OpenAI CLIP ViT-B/16 (open_clip), 224 px, 14x14 patches"),
        EncoderEntry("clip-b32", "ViT-B-32", "openai", "OpenAI CLIP ViT-B/32 (open_clip), 224 px, 7x7 patches"),
        EncoderEntry("clip-l14", "ViT-L-14", "openai", "OpenAI CLIP ViT-L/14 (open_clip), 224 px, 16x16 patches"),
    )
}
"""The OpenAI CLIP ViTs (open_clip CLIP models with a built-in text tower): the first entries of
:data:`ENCODERS`, kept under their own name."""

ENCODERS: dict[str, EncoderEntry] = {
    **REGISTERED,
    **{
        e.name: e
        for e in (
            EncoderEntry(
                "eva01-g14", "EVA01-g-14", "laion400m_s11b_b41k",
                "EVA-CLIP ViT-g/14 (open_clip, timm trunk), 224 px, 16x16 patches, width 1408",
            ),
            EncoderEntry(
                "vitg", "blip2-vision", "Salesforce/blip2-opt-2.7b",
                "BLIP-2's EVA ViT-g/14 (transformers), 224 px, 16x16 patches, width 1408, vision only",
                HF_VISION_BUILDER,
            ),
            EncoderEntry(
                "blip", "blip-vision", "Salesforce/blip-vqa-base",
                "BLIP's ViT-B/16 (transformers), 384 px, 24x24 patches, width 768, vision only",
                HF_VISION_BUILDER,
            ),
            EncoderEntry(
                "albef", "albef-vqa", None,
                "ALBEF's ViT-B/16 + BERT (see docs/encoders-albef.md)",
                ALBEF_BUILDER,
            ),
            EncoderEntry(
                "albef-tiny", "albef-tiny", None,
                "a tiny ALBEF (96 px, width 64, 2 layers a tower, character tokenizer) for demos and smoke runs: "
                "--weights random or a checkpoint of its shape",
                ALBEF_BUILDER,
            ),
        )
    },
}
"""Every registered name, any family."""


def list_encoders() -> list[str]:
    """Registered names, then the parametric form ``open_clip:MODEL``."""
    return [*ENCODERS, f"{OPEN_CLIP_PREFIX}MODEL"]


def resolve_name(name: str) -> EncoderEntry:
    """The entry for ``name``; :class:`UnknownName` (listing valid names) if there is none."""
    if name in ENCODERS:
        return ENCODERS[name]
    if name.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_entry(name[len(OPEN_CLIP_PREFIX) :])
    hint = _did_you_mean(name, list(ENCODERS))
    raise UnknownName(
        f"unknown encoder {name!r}{hint}; valid: {', '.join(ENCODERS)}, or {OPEN_CLIP_PREFIX}MODEL "
        "for an open_clip model (open_clip.list_models())"
    )


def load_builder(entry: EncoderEntry) -> Any:
    """The function ``entry.builder`` names (its module is imported now)."""
    module, _, function = entry.builder.partition(":")
    return getattr(importlib.import_module(module), function)


MODEL_CONFIGS_ENV = "VQACACHE_OPEN_CLIP_CONFIGS"
"""os.pathsep-separated folders of extra open_clip model configs (``<MODEL>.json``), registered
in every process that builds an encoder: Dask workers too, since they inherit the environment."""


def add_model_configs_from_env() -> None:
    """Register the open_clip configs named by ``$VQACACHE_OPEN_CLIP_CONFIGS`` (idempotent)."""
    import open_clip

    for folder in filter(None, os.environ.get(MODEL_CONFIGS_ENV, "").split(os.pathsep)):
        if Path(folder).is_dir():
            open_clip.add_model_config(folder)


def _open_clip_entry(model: str) -> EncoderEntry:
    import open_clip

    add_model_configs_from_env()
    models = open_clip.list_models()
    if model not in models or not _SAFE.fullmatch(model):
        from vqacache.featurize.encoders.open_clip_encoder import unsupported_reason

        usable = [m for m in models if unsupported_reason(open_clip.get_model_config(m)) is None]
        hint = _did_you_mean(model, usable)
        raise UnknownName(
            f"unknown open_clip model {model!r}{hint}; supported open_clip models: {', '.join(usable)}"
        )
    return EncoderEntry(f"open_clip-{model}", model, None, f"open_clip {model}")


def _did_you_mean(name: str, choices: list[str]) -> str:
    by_lower = {c.lower(): c for c in choices}  # case-insensitive: vit-b-16 -> ViT-B-16
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def get_encoder(
    name: str,
    weights: str | None = None,
    *,
    device: str = "cpu",
    patches: bool = True,
    patch_pool: int = 1,
    decode_short_side: int | None = 256,
    decode_interpolation: str = "bilinear",
    compute_dtype: str = "float32",
) -> Encoder:
    """Build encoder ``name`` with ``weights`` (None: its default tag; a tag or hub name, a
    checkpoint file or folder, or ``random[:SEED]``), ready to run on ``device`` in eval mode.

    ``patches``/``patch_pool``: keep the patch tokens, average-pooled k x k. ``decode_*``: the
    resize the frame decoder applied before the encoder (recorded, not performed).
    ``compute_dtype``: ``float32`` (default), or ``float16``/``bfloat16`` autocast.
    ``device`` and ``compute_dtype`` may be ``auto`` (see :mod:`vqacache.featurize.device`).
    """
    entry = resolve_name(name)
    device = resolve_device(device)
    compute_dtype = resolve_compute_dtype(compute_dtype, device)
    build = load_builder(entry)
    return build(
        name=entry.name,
        model_name=entry.model,
        default_tag=entry.default_tag,
        weights=weights,
        device=device,
        patches=patches,
        patch_pool=patch_pool,
        decode_short_side=decode_short_side,
        decode_interpolation=decode_interpolation,
        compute_dtype=compute_dtype,
    )
