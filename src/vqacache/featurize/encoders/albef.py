"""ALBEF (ViT-B/16 + BERT, as SpARC's image-QA model) as an :class:`Encoder`.

The architecture is :mod:`.albef_model` (timm ViT + transformers BERT, ALBEF's layer split),
the weights an ALBEF checkpoint file loaded through the documented key map of
:mod:`.albef_checkpoint`, or ``random[:SEED]``. The preprocessing is ALBEF's test transform
(``dataset/__init__.py`` ``test_transform``: ``Resize((384, 384), BICUBIC)``, i.e. a squash
without crop, then CLIP's mean/std), run batched by :mod:`.preprocess` (``resize="squash"``);
the text side is ALBEF's tokenization (:mod:`.albef_tokenizer`). What is stored:

* ``cls``: ALBEF's image-text-contrastive embedding ``vision_proj(CLS)`` (not L2-normalised)
  when the checkpoint has ``vision_proj`` (pre-training / retrieval checkpoints; 256-d);
  otherwise (the VQA checkpoint has no projection) the ViT CLS token after the final norm,
  the same vector as ``cls_hidden`` (768-d). ``outputs.cls`` says which
  (``albef-image-itc`` or ``post-ln-cls``);
* ``cls_hidden``: the ViT CLS token after the final norm, i.e. what ALBEF's fusion layers
  read (``visual_encoder(image)[:, 0]``);
* ``patch``: the 24 x 24 patch tokens after the final norm, row-major, optionally
  average-pooled ``patch_pool x patch_pool``;
* text: the text encoder's first 6 layers (xbert ``mode='text'``, no image) on
  ``[CLS] text``: ``tokens`` are those states, ``emb`` the ``[CLS]`` state, through
  ``text_proj`` when the checkpoint has it (``albef-text-itc``), else as is
  (``albef-text-cls``). Texts are taken as given (no ``pre_question`` cleaning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import FeatureSpec, OutputSpec, SamplingSpec
from vqacache.featurize.encoders.albef_checkpoint import (
    AlbefWeights,
    checkpoint_layout,
    load_albef_weights,
    read_albef_checkpoint,
    resolve_albef_weights,
)
from vqacache.featurize.encoders.albef_model import ALBEF_TINY, ALBEF_VQA, AlbefConfig, AlbefModel
from vqacache.featurize.encoders.albef_tokenizer import (
    character_tokenizer,
    load_bert_tokenizer,
    tokenize,
    tokenizer_spec,
)
from vqacache.featurize.encoders.patch_grid import check_patch_pool, pool_patches
from vqacache.featurize.encoders.precision import autocast, check_compute_dtype
from vqacache.featurize.encoders.preprocess import PREPROCESS_IMPL, ImageTransform
from vqacache.featurize.encoders.transfer import to_host
from vqacache.featurize.encoders.weights import RANDOM_INIT, init_random_

ARCHITECTURES: dict[str, AlbefConfig] = {"albef-vqa": ALBEF_VQA, "albef-tiny": ALBEF_TINY}
"""``model_name`` -> architecture. ``albef-vqa``: ALBEF's VQA model (``configs/VQA.yaml``);
``albef-tiny``: :data:`~.albef_model.ALBEF_TINY` (random weights or a checkpoint of its shape;
demos and smoke runs on a CPU). The config is recorded in every spec (``extra.albef_config``,
the teacher's ``config``), so the two never share a store or a teacher fingerprint."""
DEFAULT_ARCHITECTURE = "albef-vqa"

OWN_TOKENIZERS: dict[str, Callable[[], Any]] = {"albef-tiny": character_tokenizer}
"""Architectures with a tokenizer of their own, used when none is given (the others read
bert-base-uncased from the Hugging Face cache)."""


def architecture_config(model_name: str) -> AlbefConfig:
    """The :data:`ARCHITECTURES` entry; :class:`UsageError` naming the known ones."""
    if model_name not in ARCHITECTURES:
        raise UsageError(f"unknown ALBEF architecture {model_name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_name]


def default_tokenizer(model_name: str, tokenizer: Any) -> Any:
    """``tokenizer`` if given, else the architecture's own (:data:`OWN_TOKENIZERS`), else None
    (bert-base-uncased from the cache)."""
    if tokenizer is not None or model_name not in OWN_TOKENIZERS:
        return tokenizer
    return OWN_TOKENIZERS[model_name]()

ALBEF_MEAN = (0.48145466, 0.4578275, 0.40821073)
ALBEF_STD = (0.26862954, 0.26130258, 0.27577711)
"""ALBEF's ``transforms.Normalize`` (CLIP's statistics)."""


def albef_transform(size: int) -> ImageTransform:
    """ALBEF's test transform: squash to ``size x size``, bicubic (antialiased, as PIL), no crop,
    CLIP mean/std."""
    return ImageTransform(size=size, interpolation="bicubic", mean=ALBEF_MEAN, std=ALBEF_STD, resize="squash")


def transform_spec(transform: ImageTransform) -> dict[str, Any]:
    """The transform as JSON values (teacher spec)."""
    return {
        "resize": transform.resize,
        "size": transform.size,
        "interpolation": transform.interpolation,
        "antialias": True,
        "mean": list(transform.mean),
        "std": list(transform.std),
        "preprocess_impl": PREPROCESS_IMPL,
    }


class AlbefEncoder:
    """ALBEF's image and text encoders, frozen. Build with :func:`build_albef_encoder`.

    Shapes: N frames, E = ``cls`` width (256 with ``vision_proj``, else W), W = 768 vision
    width, P patch tokens after pooling, n texts, L longest tokenized text, D text width.
    """

    def __init__(
        self,
        *,
        name: str,
        model_name: str,
        model: AlbefModel,
        tokenizer: Any,
        weights: AlbefWeights,
        transform: ImageTransform,
        device: torch.device,
        patches: bool,
        patch_pool: int,
        decode_short_side: int | None,
        decode_interpolation: str,
        compute_dtype: str,
    ) -> None:
        self._name = name
        self.model_name = model_name
        self.model = model.eval().requires_grad_(False)
        self.cfg: AlbefConfig = model.cfg
        self.tokenizer = tokenizer
        self.weights = weights
        self.transform = transform
        self.device = device
        self.patches = patches
        self.patch_pool = patch_pool if patches else 1  # no patches: the knob changes nothing
        self.decode_short_side = decode_short_side
        self.decode_interpolation = decode_interpolation
        self.compute_dtype = compute_dtype
        check_patch_pool(self.patch_pool, (self.cfg.grid, self.cfg.grid), name)
        self.preprocess_spec = transform.spec(decode_short_side, decode_interpolation)  # a bad decode size fails here

    # -- description ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def has_text(self) -> bool:
        return True

    @property
    def dims(self) -> dict[str, tuple[int, ...]]:
        cfg = self.cfg
        embed = cfg.embed_dim if cfg.embed_dim is not None else cfg.vision_width
        dims: dict[str, tuple[int, ...]] = {"cls": (embed,), "cls_hidden": (cfg.vision_width,)}
        if self.patches:
            g = cfg.grid // self.patch_pool
            dims["patch"] = (g * g, cfg.vision_width)
        dims["text"] = (cfg.embed_dim if cfg.embed_dim is not None else cfg.hidden_size,)
        dims["text_tokens"] = (cfg.hidden_size,)
        return dims

    @property
    def batch_size_hint(self) -> int:
        return 8 if self.device.type == "cpu" else 128  # 577 tokens per 384 px frame

    def feature_spec(self, sampling: SamplingSpec, dtype: str = "float16") -> FeatureSpec:
        """The spec of features computed by this encoder at ``sampling``, stored as ``dtype``."""
        projected = self.cfg.embed_dim is not None
        outputs = OutputSpec(
            cls="albef-image-itc" if projected else "post-ln-cls",
            cls_hidden="post-ln-cls",
            patch_layer="post-ln" if self.patches else None,
            patch_pool=self.patch_pool,
            text="albef-text-itc" if projected else "albef-text-cls",
            text_context=self.cfg.max_position_embeddings,
        )
        extra: dict[str, Any] = {
            "albef_config": self.cfg.to_dict(),
            "resize": self.transform.resize,
            "preprocess_impl": PREPROCESS_IMPL,
            "tokenizer": tokenizer_spec(self.tokenizer),
        }
        if self.weights.spec.source == "random":
            extra["random_init"] = RANDOM_INIT
        return FeatureSpec(
            encoder=self.name,
            architecture=f"albef:{self.model_name}",
            weights=self.weights.spec,
            preprocess=self.preprocess_spec,
            sampling=sampling,
            outputs=outputs,
            dtype=dtype,
            compute_dtype=self.compute_dtype,
            extra=extra,
        )

    # -- forward passes ---------------------------------------------------------------------

    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 RGB (N, H, W, 3) -> ``cls`` (N, E), ``cls_hidden`` (N, W), ``patch`` (N, P, W)."""
        x = self.transform(frames, self.device)  # (N, 3, S, S)
        if x.shape[0] == 0:
            return {k: torch.empty(0, *shape) for k, shape in self.dims.items() if k in ("cls", "cls_hidden", "patch")}
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            tokens = self.model.encode_image(x)  # (N, 1 + grid^2, W)
            hidden = tokens[:, 0]  # (N, W)
            cls = self.model.vision_proj(hidden) if self.model.vision_proj is not None else hidden  # (N, E)
        result = {"cls": cls, "cls_hidden": hidden}
        if self.patches:
            result["patch"] = pool_patches(tokens[:, 1:], (self.cfg.grid, self.cfg.grid), self.patch_pool)  # (N, P, W)
        return to_host(result)

    def encode_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """n strings -> ``emb`` (n, E_text), ``tokens`` (n, L, D), ``length`` (n,) int64 ([CLS]
        included; ALBEF's texts have no [SEP])."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        if len(texts) == 0:
            return {
                "emb": torch.empty(0, *self.dims["text"]),
                "tokens": torch.empty(0, 0, self.cfg.hidden_size),
                "length": torch.empty(0, dtype=torch.int64),
            }
        ids, mask = tokenize(
            self.tokenizer, list(texts), answer=False, max_length=self.cfg.max_position_embeddings, device=self.device
        )  # (n, L)
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            states = self.model.encode_text(ids, mask)  # (n, L, D)
            first = states[:, 0]  # (n, D) the [CLS] state
            emb = self.model.text_proj(first) if self.model.text_proj is not None else first
        return {"emb": emb.float().cpu(), "tokens": states.float().cpu(), "length": mask.sum(dim=1).cpu()}


# -- construction ---------------------------------------------------------------------------


def build_albef_encoder(
    name: str = "albef",
    model_name: str | None = None,
    default_tag: str | None = None,
    weights: str | None = None,
    *,
    device: str = "cpu",
    patches: bool = True,
    patch_pool: int = 1,
    decode_short_side: int | None = 256,
    decode_interpolation: str = "bilinear",
    compute_dtype: str = "float32",
    config: AlbefConfig | None = None,
    tokenizer: Any = None,
) -> AlbefEncoder:
    """ALBEF architecture ``model_name`` (default ``albef-vqa``) with ``weights`` (a checkpoint
    file or ``random[:SEED]``; ``default_tag`` is used when ``weights`` is None, and ALBEF has
    none) as encoder ``name``. ``config`` overrides the architecture (tests: tiny models);
    ``tokenizer``: a BERT tokenizer or a directory (default: the architecture's own, else
    bert-base-uncased, cached)."""
    check_compute_dtype(compute_dtype)
    model_name = model_name or DEFAULT_ARCHITECTURE
    if config is None:
        config = architecture_config(model_name)
    if patches:  # before reading any checkpoint
        check_patch_pool(patch_pool, (config.grid, config.grid), name)
    resolved = resolve_albef_weights(weights if weights is not None else default_tag)
    tok = load_bert_tokenizer(default_tokenizer(model_name, tokenizer))
    model = build_albef_model(config.with_(decoder_layers=0), resolved, keep_projections=True)
    torch_device = torch.device(device)
    return AlbefEncoder(
        name=name,
        model_name=model_name,
        model=model.to(torch_device),
        tokenizer=tok,
        weights=resolved,
        transform=albef_transform(model.cfg.image_size),
        device=torch_device,
        patches=patches,
        patch_pool=patch_pool,
        decode_short_side=decode_short_side,
        decode_interpolation=decode_interpolation,
        compute_dtype=compute_dtype,
    )


def build_albef_model(config: AlbefConfig, weights: AlbefWeights, *, keep_projections: bool) -> AlbefModel:
    """An :class:`AlbefModel` on the CPU with ``weights``; the global RNG is left untouched.

    A checkpoint decides whether the model has ``vision_proj``/``text_proj`` (kept when
    ``keep_projections``); ``config.decoder_layers`` whether it has the answer decoder (then
    the checkpoint must have one)."""
    state = None
    if weights.path is not None:
        state = read_albef_checkpoint(weights.path)
        layout = checkpoint_layout(state)
        if config.decoder_layers and not layout["has_decoder"]:
            raise UsageError(
                f"--weights {weights.path} has no answer decoder (text_decoder.*): the ALBEF image-QA teacher "
                "needs ALBEF's VQA checkpoint (vqa.pth)"
            )
        config = config.with_(embed_dim=layout["embed_dim"] if keep_projections else None)
    with torch.random.fork_rng(devices=[]):
        model = AlbefModel(config)
    if state is not None:
        if not keep_projections:
            state = {k: v for k, v in state.items() if not k.startswith(("vision_proj.", "text_proj."))}
        load_albef_weights(model, state, source=f"--weights {weights.path}")
    else:
        init_random_(model, int(weights.seed or 0))
    return model.eval().requires_grad_(False)
