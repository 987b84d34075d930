"""The BLIP family's vision towers (transformers) as vision-only :class:`Encoder`\\ s.

* ``vitg``: BLIP-2's EVA ViT-g/14 (``Blip2VisionModel``; 39 blocks, width 1408, 224 px,
  16 x 16 patches), read from a BLIP-2 checkpoint (``Salesforce/blip2-opt-2.7b`` by default;
  only the vision tower's weights are loaded, and only its shards downloaded).
* ``blip``: BLIP's ViT-B/16 (``BlipVisionModel``; width 768, 384 px for the VQA checkpoint,
  24 x 24 patches), from ``Salesforce/blip-vqa-base`` by default: the image-QA teacher's own
  visual features.

What is stored (the tokens ``h``, (N, 1 + gh * gw, W)):

* ``vitg``: the trunk's output (the last encoder layer's tokens, *before* ``post_layernorm``)
  normalised **without** the LayerNorm's affine part, ``(x - mean) / sqrt(var + eps)`` with
  ``post_layernorm``'s eps, computed in float32 (issue 12: BLIP-2 OPT / Flan-T5,
  InstructBLIP, SeViLA and VLAP share the frozen trunk but each trains its own copy of that
  LayerNorm, ``ln_vision``; stage two applies its checkpoint's gamma', beta'). The spec says
  so (``extra["tokens"] = "layernorm-affine-free"``) and records the featurizing checkpoint's
  gamma, beta, eps and the trunk's digest (``extra["token_norm"]``, see
  :mod:`vqacache.cache_spec.token_norm`): ``gamma * h + beta`` is exactly the tower's
  ``last_hidden_state``, what BLIP-2's Q-Former cross-attends to.
* ``blip``: the tower's ``last_hidden_state`` (after ``post_layernorm``), unchanged: what the
  VQA model's question encoder cross-attends to. BLIP has one checkpoint family here and the
  image-QA teacher reads the full LayerNorm output, so its stores keep their form (and
  fingerprints); their spec has no ``token_norm`` record, which reads as ``kind="affine"``.

* ``cls_hidden`` = ``h[:, 0]`` (for ``vitg`` affine-free too);
* ``cls`` = the same vector: these towers have no projection (BLIP-2's Q-Former and BLIP's
  text encoder read the tokens themselves), so ``cls == cls_hidden``, and the spec says so
  (``extra["cls_projection"] = "none"``);
* ``patch`` = ``h[:, 1:]`` in row-major grid order, optionally average-pooled
  ``patch_pool x patch_pool`` as for CLIP (pooling commutes with the per-channel affine, so a
  pooled affine-free store still takes gamma', beta' exactly).

Not ``pooler_output``: transformers computes it as ``post_layernorm(last_hidden_state[:, 0])``,
the layer norm applied a second time to an already normalised token, which no BLIP model reads.

There is no text side: :attr:`has_text` is False and :meth:`encode_text` raises
``NotImplementedError`` (text features come from another encoder's store). BLIP's VQA text
encoder is not used for text features on purpose: it was trained only with the image as
context, and the VQA checkpoint has no projection into a joint image-text space.

Architecture and weights come from :mod:`.hf_weights`: a checkpoint folder brings its config
(the ``vision_config`` of a full BLIP-2/BLIP checkpoint, or the bare tower's own), which the
spec records in full, so a tiny test model and the real tower never share a fingerprint; a
state-dict file or ``random`` use the default checkpoint's architecture (the config classes'
defaults). Preprocessing is the BLIP image processor's: both sides resized to the model's
``image_size`` (no crop, aspect not kept), bicubic, OpenAI CLIP mean/std, or what the
``preprocessor_config.json`` beside the weights says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import FeatureSpec, OutputSpec, SamplingSpec
from vqacache.cache_spec.token_norm import EXTRA_KEY as TOKEN_NORM_KEY
from vqacache.cache_spec.token_norm import TokenNorm, trunk_digest
from vqacache.featurize.encoders.hf_weights import (
    HfWeights,
    load_into,
    load_state_dict,
    processor_settings,
    resolve_hf_weights,
    spec_config,
    weight_files,
)
from vqacache.featurize.encoders.patch_grid import check_patch_pool, pool_patches
from vqacache.featurize.encoders.precision import autocast, check_compute_dtype
from vqacache.featurize.encoders.preprocess import PREPROCESS_IMPL, ImageTransform
from vqacache.featurize.encoders.transfer import to_host
from vqacache.featurize.encoders.weights import RANDOM_INIT, init_random_

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Tower:
    """A transformers vision tower: its model and config classes, the model types of the
    checkpoints it can be read from, and its key prefix inside the full model."""

    model_class: str
    config_class: str
    model_types: tuple[str, ...]
    prefix: str = "vision_model."
    affine_free: bool = False
    """Store the trunk's output LayerNorm-normalised without ``post_layernorm``'s affine part
    (and record gamma, beta, eps and the trunk digest), instead of ``last_hidden_state``."""


TOWERS: dict[str, Tower] = {
    "blip2-vision": Tower("Blip2VisionModel", "Blip2VisionConfig", ("blip-2", "blip_2_vision_model"), affine_free=True),
    "blip-vision": Tower("BlipVisionModel", "BlipVisionConfig", ("blip", "blip_vision_model")),
}
"""``EncoderEntry.model`` -> tower."""


class HfVisionEncoder:
    """A frozen transformers ViT tower with its transform; vision only.
    Build with :func:`build_hf_vision_encoder`.

    Shapes: N frames, W width (= E: ``cls`` is unprojected), P patch tokens after pooling.
    """

    def __init__(
        self,
        *,
        name: str,
        tower: Tower,
        model: Any,
        weights: HfWeights,
        transform: ImageTransform,
        device: torch.device,
        patches: bool,
        patch_pool: int,
        decode_short_side: int | None,
        decode_interpolation: str,
        compute_dtype: str,
    ) -> None:
        self._name = name
        self.tower = tower
        self.model = model.eval().requires_grad_(False)
        self.weights = weights
        self.model_cfg = spec_config(model.config)
        self.transform = transform
        self.device = device
        self.patches = patches
        self.patch_pool = patch_pool if patches else 1  # no patches: the knob changes nothing
        self.decode_short_side = decode_short_side
        self.decode_interpolation = decode_interpolation
        self.compute_dtype = compute_dtype
        size, patch = _side(model.config.image_size), _side(model.config.patch_size)
        self.grid: tuple[int, int] = (size // patch, size // patch)  # (gh, gw)
        check_patch_pool(self.patch_pool, self.grid, name)
        self.preprocess_spec = transform.spec(decode_short_side, decode_interpolation)  # a bad decode size fails here
        self._token_norm: TokenNorm | None = None  # computed on first use (the digest reads every weight)

    # -- description ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dims(self) -> dict[str, tuple[int, ...]]:
        """``cls`` (W,) (no projection: the same vector as ``cls_hidden``), ``cls_hidden``
        (W,), ``patch`` (P, W); no ``text``/``text_tokens``."""
        dims: dict[str, tuple[int, ...]] = {"cls": (self.width,), "cls_hidden": (self.width,)}
        if self.patches:
            gh, gw = (g // self.patch_pool for g in self.grid)
            dims["patch"] = (gh * gw, self.width)
        return dims

    @property
    def has_text(self) -> bool:
        return False

    @property
    def batch_size_hint(self) -> int:
        if self.device.type == "cpu":
            return 8
        return 128 if self.width <= 768 else 64

    def feature_spec(self, sampling: SamplingSpec, dtype: str = "float16") -> FeatureSpec:
        """The spec of features computed by this encoder at ``sampling``, stored as ``dtype``."""
        layer = "post-ln-affine-free" if self.tower.affine_free else "post-ln"
        outputs = OutputSpec(
            cls=f"{layer}-cls",
            cls_hidden=f"{layer}-cls",
            patch_layer=layer if self.patches else None,
            patch_pool=self.patch_pool,
            text=None,
            text_context=None,
        )
        extra: dict[str, Any] = {
            "model_cfg": self.model_cfg,
            "tokens": "layernorm-affine-free" if self.tower.affine_free else "last_hidden_state",
            "cls_projection": "none",
            "resize": self.transform.resize,
            "preprocess_impl": PREPROCESS_IMPL,
            "attn_implementation": str(getattr(self.model.config, "_attn_implementation", None)),
        }
        if self.tower.affine_free:
            extra[TOKEN_NORM_KEY] = self.token_norm.to_extra()
        if self.weights.spec.source == "random":
            extra["random_init"] = RANDOM_INIT
        return FeatureSpec(
            encoder=self.name,
            architecture=f"transformers:{self.tower.model_class}",
            weights=self.weights.spec,
            preprocess=self.preprocess_spec,
            sampling=sampling,
            outputs=outputs,
            dtype=dtype,
            compute_dtype=self.compute_dtype,
            extra=extra,
        )

    @property
    def token_norm(self) -> TokenNorm:
        """The stored form (``affine-free`` for ``vitg``) with this checkpoint's ``post_layernorm``
        gamma, beta, eps and the digest of the trunk (every other tensor of the tower)."""
        if self._token_norm is None:
            ln = self.model.post_layernorm
            self._token_norm = TokenNorm(
                kind="affine-free" if self.tower.affine_free else "affine",
                gamma=ln.weight.detach().to("cpu", torch.float32).numpy(),
                beta=ln.bias.detach().to("cpu", torch.float32).numpy(),
                eps=float(ln.eps),
                trunk_sha256=trunk_digest(_HostTensors(self.model.state_dict())),
            )
        return self._token_norm

    # -- forward passes ---------------------------------------------------------------------

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (N, 3, S, S) -> the stored tokens (N, 1 + gh * gw, W): the
        affine-free normalised trunk output (``vitg``) or ``last_hidden_state`` (``blip``)."""
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            if not self.tower.affine_free:
                return self.model(pixel_values=x).last_hidden_state
            trunk = self.model.encoder(inputs_embeds=self.model.embeddings(x)).last_hidden_state  # before post_layernorm
        with torch.no_grad():
            eps = float(self.model.post_layernorm.eps)
            return torch.nn.functional.layer_norm(trunk.float(), trunk.shape[-1:], eps=eps)  # no weight, no bias

    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 RGB (N, H, W, 3) -> ``cls`` (N, W), ``cls_hidden`` (N, W), ``patch`` (N, P, W)."""
        x = self.transform(frames, self.device)  # (N, 3, S, S)
        if x.shape[0] == 0:
            return {k: torch.empty(0, *shape) for k, shape in self.dims.items()}
        hidden = self.tokens(x)  # (N, 1 + gh * gw, W)
        result = {"cls": hidden[:, 0], "cls_hidden": hidden[:, 0].clone()}  # (N, W) each
        if self.patches:
            result["patch"] = pool_patches(hidden[:, 1:], self.grid, self.patch_pool)  # (N, P, W)
        return to_host(result)

    def encode_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            f"encoder {self.name} is vision-only ({self.tower.model_class} has no text tower); "
            "take text features from another encoder"
        )


class _HostTensors(Mapping[str, np.ndarray]):
    """A state dict seen as float32 numpy arrays on the host, one tensor at a time (the ViT-g
    trunk is 4 GB in float32: never all copied at once)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state = state

    def __getitem__(self, name: str) -> np.ndarray:
        tensor = self.state[name].detach()
        if not tensor.is_floating_point():
            return tensor.cpu().numpy()
        return tensor.to("cpu", torch.float32).numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


# -- construction ---------------------------------------------------------------------------


def build_hf_vision_encoder(
    *,
    name: str,
    model_name: str,
    default_tag: str | None,
    weights: str | None,
    device: str = "cpu",
    patches: bool = True,
    patch_pool: int = 1,
    decode_short_side: int | None = 256,
    decode_interpolation: str = "bilinear",
    compute_dtype: str = "float32",
) -> HfVisionEncoder:
    """Create tower ``model_name`` (a key of :data:`TOWERS`) with ``weights`` (see
    :mod:`.hf_weights`; None: the hub checkpoint ``default_tag``) as encoder ``name``."""
    check_compute_dtype(compute_dtype)
    if isinstance(patch_pool, bool) or not isinstance(patch_pool, int) or patch_pool < 1:
        raise UsageError(f"--patch-pool must be an integer >= 1, got {patch_pool!r}")
    if model_name not in TOWERS:
        raise UsageError(f"unknown transformers tower {model_name!r}; known: {', '.join(TOWERS)}")
    tower = TOWERS[model_name]
    what = f"{name} ({tower.model_class})"
    resolved = resolve_hf_weights(weights, default_tag, what=what, prefix=tower.prefix)
    model = build_tower(tower, resolved, what=what)
    settings = processor_settings(
        resolved.folder, size=_side(model.config.image_size), mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
        interpolation="bicubic", what=what,
    )
    torch_device = torch.device(device)
    return HfVisionEncoder(
        name=name,
        tower=tower,
        model=model.to(torch_device),
        weights=resolved,
        transform=ImageTransform(resize="squash", **settings),
        device=torch_device,
        patches=patches,
        patch_pool=patch_pool,
        decode_short_side=decode_short_side,
        decode_interpolation=decode_interpolation,
        compute_dtype=compute_dtype,
    )


def build_tower(tower: Tower, weights: HfWeights, *, what: str) -> Any:
    """The tower on the CPU in float32 with ``weights``; the global RNG is left untouched."""
    import transformers

    model_cls, config_cls = getattr(transformers, tower.model_class), getattr(transformers, tower.config_class)
    if weights.folder is not None:
        _check_model_type(weights.folder, tower, what)
        config = config_cls.from_pretrained(weights.folder)
    else:
        config = default_config(tower)
    with torch.random.fork_rng(devices=[]):
        if weights.seed is not None and _has_buffers(model_cls, config):
            model = model_cls(config)  # buffers need their real init; parameters are overwritten below
        else:
            with torch.device("meta"):  # no init work: every tensor is loaded or overwritten
                model = model_cls(config)
            if weights.seed is not None:
                model = model.to_empty(device="cpu")
    if weights.seed is not None:
        init_random_(model, weights.seed)
    else:
        source = weights.folder if weights.folder is not None else weights.file
        files = weight_files(weights.folder, tower.prefix) if weights.folder is not None else [weights.file]
        load_into(model, load_state_dict(files, tower.prefix, what=what), what=what, source=source)
    return model.float().eval()


def default_config(tower: Tower) -> Any:
    """The architecture of file and random weights: the default checkpoint's, which is the
    config class's defaults (BLIP-2's ViT-g/14 at 224 px; BLIP's ViT-B/16 at 384 px)."""
    import transformers

    return getattr(transformers, tower.config_class)()


def _has_buffers(model_cls: Any, config: Any) -> bool:
    with torch.device("meta"):
        return any(True for _ in model_cls(config).buffers())


def _check_model_type(folder: Any, tower: Tower, what: str) -> None:
    import json

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in tower.model_types:
        raise UsageError(
            f"--weights {folder} holds a {model_type!r} model; {what} reads {' or '.join(tower.model_types)} checkpoints"
        )


def _side(value: int | list[int] | tuple[int, ...]) -> int:
    """A square size from a config's int or (h, w)."""
    if isinstance(value, int):
        return value
    h, w = value
    if h != w:
        raise UsageError(f"non-square input {h}x{w} is not supported")
    return int(h)
