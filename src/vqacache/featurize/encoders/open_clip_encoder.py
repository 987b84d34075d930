"""open_clip CLIP models (ViT image tower + transformer text tower) as an :class:`Encoder`.

The architecture is an open_clip model config (``ViT-B-16``), the weights are resolved by
:mod:`.weights`, and the preprocessing belongs to the weights (the pretrained tag's mean/std,
interpolation and resize mode), as in open_clip's ``factory.py``. The activation does too:
OpenAI's tags were trained with QuickGELU, which open_clip's plain ``ViT-B-16`` config lacks
(it only warns), so the tag's ``quick_gelu`` is forced on; the final model config, QuickGELU
included, is recorded in the spec.

Forward passes are open_clip's own (``forward_intermediates``), so the numbers are the library's:

* ``cls`` = ``model.encode_image`` (CLS after ``ln_post`` and ``proj``, not L2-normalised),
* ``cls_hidden`` = the same token after ``ln_post``, before ``proj``,
* ``patch`` = the final block's patch tokens after ``ln_post`` (what ``visual.output_tokens``
  returns), in row-major grid order, optionally average-pooled ``patch_pool x patch_pool``,
* ``emb`` = ``model.encode_text``, ``tokens`` = the states after ``ln_final``.

Supported: open_clip ``CLIP`` models with a class-token ``VisionTransformer`` and the built-in
text transformer and BPE tokenizer (OpenAI CLIP, LAION, DataComp, MetaCLIP, DFN ViTs), and
``CustomTextCLIP`` models whose image tower is a class-token timm ViT and whose text tower is
open_clip's own ``TextTransformer`` (EVA-CLIP: ``EVA01-g-14``, ``EVA02-*``). For a timm trunk
open_clip's ``forward_intermediates`` gives the same three things: ``patch``/``cls_hidden`` =
the trunk's ``forward_features`` tokens (after its final norm), ``cls`` = ``forward_head``
(token pooling and the classifier head that EVA-CLIP uses as its projection) then the
adapter's head. Hugging Face towers, ResNets, average/attention-pooled towers, CoCa and
squash-resize (SigLIP) models are refused up front.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.safe_load import load_error_reason
from vqacache.cache_spec.spec import FeatureSpec, OutputSpec, SamplingSpec
from vqacache.featurize.encoders.patch_grid import check_patch_pool, pool_patches
from vqacache.featurize.encoders.preprocess import PREPROCESS_IMPL, ImageTransform
from vqacache.featurize.encoders.transfer import to_host
from vqacache.featurize.encoders.weights import RANDOM_INIT, ResolvedWeights, init_random_, resolve_weights

COMPUTE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class OpenClipEncoder:
    """An open_clip CLIP model, frozen, with its transform. Build with :func:`build_open_clip_encoder`.

    Shapes: N frames, E embed dim, W vision width, P patch tokens (after pooling), n texts,
    L longest tokenized text, W_text text width.
    """

    def __init__(
        self,
        *,
        name: str,
        model_name: str,
        model: Any,
        tokenizer: Any,
        weights: ResolvedWeights,
        model_cfg: dict[str, Any],
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
        self.tokenizer = tokenizer
        self.weights = weights
        self.model_cfg = model_cfg
        self.transform = transform
        self.device = device
        self.patches = patches
        self.patch_pool = patch_pool if patches else 1  # no patches: the knob changes nothing
        self.decode_short_side = decode_short_side
        self.decode_interpolation = decode_interpolation
        self.compute_dtype = compute_dtype
        self.text_tower = text_tower(model)
        self.grid: tuple[int, int] = vision_grid(model.visual)  # (gh, gw) patch grid
        check_patch_pool(self.patch_pool, self.grid, model_name)
        self.preprocess_spec = transform.spec(decode_short_side, decode_interpolation)  # a bad decode size fails here

    # -- description ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dims(self) -> dict[str, tuple[int, ...]]:
        embed = int(self.model_cfg["embed_dim"])
        width = vision_width(self.model.visual)
        dims: dict[str, tuple[int, ...]] = {"cls": (embed,), "cls_hidden": (width,)}
        if self.patches:
            gh, gw = (g // self.patch_pool for g in self.grid)
            dims["patch"] = (gh * gw, width)
        dims["text"] = (embed,)
        dims["text_tokens"] = (int(self.text_tower.transformer.width),)
        return dims

    @property
    def has_text(self) -> bool:
        return True

    @property
    def batch_size_hint(self) -> int:
        if self.device.type == "cpu":
            return 16
        return 256 if vision_width(self.model.visual) <= 768 else 128

    def feature_spec(self, sampling: SamplingSpec, dtype: str = "float16") -> FeatureSpec:
        """The spec of features computed by this encoder at ``sampling``, stored as ``dtype``."""
        outputs = OutputSpec(
            cls="image-embedding",
            cls_hidden="post-ln-cls",
            patch_layer="post-ln" if self.patches else None,
            patch_pool=self.patch_pool,
            text="clip-text",
            text_context=int(self.model.context_length),
        )
        extra: dict[str, Any] = {
            "model_cfg": self.model_cfg,
            "preprocess_impl": PREPROCESS_IMPL,
            "tokenizer": f"open_clip.{type(self.tokenizer).__name__}",
        }
        if self.weights.spec.source == "random":
            extra["random_init"] = RANDOM_INIT
        return FeatureSpec(
            encoder=self.name,
            architecture=f"open_clip:{self.model_name}",
            weights=self.weights.spec,
            preprocess=self.preprocess_spec,
            sampling=sampling,
            outputs=outputs,
            dtype=dtype,
            compute_dtype=self.compute_dtype,
            extra=extra,
        )

    # -- forward passes ---------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision the forward passes run in (``compute_dtype``; recorded in the spec)."""
        if self.compute_dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=COMPUTE_DTYPES[self.compute_dtype])

    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 RGB (N, H, W, 3) -> ``cls`` (N, E), ``cls_hidden`` (N, W), ``patch`` (N, P, W)."""
        x = self.transform(frames, self.device)  # (N, 3, S, S)
        if x.shape[0] == 0:
            return {k: torch.empty(0, *shape) for k, shape in self.dims.items() if k in ("cls", "cls_hidden", "patch")}
        with torch.no_grad(), self.autocast():
            out = self.model.visual.forward_intermediates(
                x, indices=1, normalize_intermediates=True, output_fmt="NLC", output_extra_tokens=True
            )
        result = {
            "cls": out["image_features"],  # (N, E)
            "cls_hidden": out["image_intermediates_prefix"][0][:, 0],  # (N, W)
        }
        if self.patches:
            result["patch"] = self._pool_patches(out["image_intermediates"][0])  # (N, P, W)
        return to_host(result)

    def _pool_patches(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, gh * gw, W) row-major -> (N, (gh / k) * (gw / k), W) by k x k average pooling."""
        return pool_patches(tokens, self.grid, self.patch_pool)

    def encode_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """n strings -> ``emb`` (n, E), ``tokens`` (n, L, W_text), ``length`` (n,) int64."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        width = int(self.text_tower.transformer.width)
        if len(texts) == 0:
            return {
                "emb": torch.empty(0, self.dims["text"][0]),
                "tokens": torch.empty(0, 0, width),
                "length": torch.empty(0, dtype=torch.int64),
            }
        ids = self.tokenizer(list(texts)).to(self.device)  # (n, C) int64, C = context length
        length = self._eot_index(ids) + 1  # (n,) SOT .. EOT inclusive
        longest = int(length.max())
        causal = self.text_tower.attn_mask is not None  # without a causal mask, padding is attended: keep it
        with torch.no_grad(), self.autocast():
            states, emb = self._text_forward(ids[:, :longest] if causal else ids)
        states = states[:, :longest]
        return {
            "emb": emb.float().cpu(),  # (n, E)
            "tokens": states.float().cpu(),  # (n, L, W_text)
            "length": length.cpu(),
        }

    def _text_forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's text tower on the first L positions only: (n, L) ids -> states (n, L, W), emb (n, E).

        open_clip always runs the full context (77). Its attention is causal, so positions
        < L never see later ones: running L positions gives the same states there, and the
        pooled EOT (at position < L) the same embedding, for 77/L times less work.
        """
        m, n_pos = self.text_tower, ids.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(cast) + m.positional_embedding[:n_pos].to(cast)  # (n, L, W)
        mask = m.attn_mask[:n_pos, :n_pos] if m.attn_mask is not None else None  # (L, L) causal
        states = m.ln_final(m.transformer(x, attn_mask=mask))  # (n, L, W)
        pooled = states[torch.arange(len(ids), device=ids.device), self._eot_index(ids)]  # (n, W)
        proj = m.text_projection
        if proj is None:
            emb = pooled
        else:
            emb = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj  # (n, E)
        return states, emb

    def _eot_index(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, C) token ids -> (n,) position of the token the text embedding pools (EOT)."""
        pool_type, eos_id = text_pooling(self.model)
        if pool_type == "argmax":  # EOT has the highest id in CLIP's BPE vocab
            return ids.argmax(dim=-1)
        return (ids == eos_id).int().argmax(dim=-1)  # "eos"


# -- the two model layouts: CLIP (text tower inline) and CustomTextCLIP (``model.text``) ------


def text_tower(model: Any) -> Any:
    """The module holding ``token_embedding``, ``positional_embedding``, ``transformer``,
    ``ln_final``, ``text_projection`` and ``attn_mask``: the CLIP itself, or ``model.text``."""
    return getattr(model, "text", model)


def text_pooling(model: Any) -> tuple[str, int | None]:
    """(pool type, EOS id) of the text tower: ``argmax`` (EOT = highest id) or ``eos``."""
    if hasattr(model, "text"):
        return model.text.pool_type, getattr(model.text, "eos_id", None)
    return model.text_pool_type, getattr(model, "text_eos_id", None)


def vision_grid(visual: Any) -> tuple[int, int]:
    """(gh, gw) patch grid of an open_clip ViT or of a timm trunk (``TimmModel``)."""
    if hasattr(visual, "trunk"):
        return tuple(int(g) for g in visual.trunk.patch_embed.grid_size)  # type: ignore[return-value]
    return tuple(int(g) for g in visual.grid_size)  # type: ignore[return-value]


def vision_width(visual: Any) -> int:
    """Token width W of an open_clip ViT or of a timm trunk."""
    if hasattr(visual, "trunk"):
        return int(visual.trunk.embed_dim)
    return int(visual.transformer.width)


# -- construction ---------------------------------------------------------------------------


def build_open_clip_encoder(
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
) -> OpenClipEncoder:
    """Create open_clip ``model_name`` with ``weights`` (see :mod:`.weights`) as encoder ``name``.

    For file and random weights, the activation and preprocessing come from ``default_tag``
    (the registered pairing), or from open_clip's defaults when there is none.
    """
    import open_clip

    if compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    if isinstance(patch_pool, bool) or not isinstance(patch_pool, int) or patch_pool < 1:
        raise UsageError(f"--patch-pool must be an integer >= 1, got {patch_pool!r}")
    what = f"open_clip:{model_name}"
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise UsageError(f"{what}: open_clip has no such model config")
    reason = unsupported_reason(model_cfg)
    if reason:
        raise UsageError(f"{what} is not supported: {reason}")

    if patches and "patch_size" in model_cfg["vision_cfg"]:  # before any download (timm: checked once built)
        size, patch = (_pair(model_cfg["vision_cfg"][k]) for k in ("image_size", "patch_size"))
        check_patch_pool(patch_pool, (size[0] // patch[0], size[1] // patch[1]), model_name)

    resolved = resolve_weights(model_name, weights, default_tag, what=what)
    reference = resolved.pretrained_cfg
    if not reference and default_tag is not None:
        reference = open_clip.get_pretrained_cfg(model_name, default_tag)
    quick_gelu = bool(model_cfg.get("quick_gelu", False) or reference.get("quick_gelu", False))
    overlay = {k: reference[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in reference}
    if overlay.get("resize_mode", "shortest") != "shortest":
        raise UsageError(f"{what} with these weights resizes with {overlay['resize_mode']!r}; only 'shortest' is supported")

    model = _create_model(model_name, resolved, quick_gelu=quick_gelu, preprocess=overlay, what=what)
    model_cfg = {**model_cfg, "quick_gelu": quick_gelu}
    torch_device = torch.device(device)
    return OpenClipEncoder(
        name=name,
        model_name=model_name,
        model=model.to(torch_device),
        tokenizer=open_clip.get_tokenizer(model_name, context_length=model.context_length),
        weights=resolved,
        model_cfg=model_cfg,
        transform=_transform_of(model, what),
        device=torch_device,
        patches=patches,
        patch_pool=patch_pool,
        decode_short_side=decode_short_side,
        decode_interpolation=decode_interpolation,
        compute_dtype=compute_dtype,
    )


def unsupported_reason(cfg: dict[str, Any]) -> str | None:
    """Why an open_clip model config cannot be an :class:`OpenClipEncoder`; None when it can."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if vision.get("timm_model_name"):
        if vision.get("timm_pool", "avg") != "token" or vision.get("timm_proj", "linear") not in (None, "linear"):
            return "its image tower is a timm model that does not pool a class token"
    elif isinstance(vision.get("layers"), (list, tuple)):
        return "its image tower is a ResNet (no patch tokens)"
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok" or vision.get("final_ln_after_pool"):
        return "its image tower does not pool a class token"
    if "multimodal_cfg" in cfg or text.get("hf_model_name") or text.get("embed_cls"):
        return "its text tower is not open_clip's built-in transformer"
    if cfg.get("custom_text") and text.get("no_causal_mask"):
        return "its text tower is bidirectional (padding mask not reproduced)"
    if text.get("hf_tokenizer_name") or text.get("pool_type", "argmax") not in ("argmax", "eos"):
        return "its text tower does not use the CLIP tokenizer with EOT pooling"
    return None


def _pair(v: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _create_model(model_name: str, resolved: ResolvedWeights, *, quick_gelu: bool, preprocess: dict, what: str) -> Any:
    """open_clip model on the CPU with the resolved weights; the global RNG is left untouched."""
    import open_clip

    with torch.random.fork_rng(devices=[]), _without_random_init_warning():
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=str(resolved.path) if resolved.path is not None else None,
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=preprocess,
                device="cpu",
            )
        except Exception as exc:
            if resolved.path is None:
                raise
            raise UsageError(
                f"--weights {resolved.path} is not an open_clip {model_name} checkpoint that loads safely "
                f"(tensors only; nothing else is unpickled): {load_error_reason(exc)}"
            ) from None
    if resolved.seed is not None:
        init_random_(model, resolved.seed)
    if not isinstance(model, (open_clip.CLIP, open_clip.CustomTextCLIP)):
        raise UsageError(f"{what} is not supported: open_clip built a {type(model).__name__}, not a CLIP")
    if isinstance(model, open_clip.CustomTextCLIP) and not isinstance(model.text, open_clip.model.TextTransformer):
        raise UsageError(f"{what} is not supported: its text tower is a {type(model.text).__name__}")
    if not hasattr(model.visual, "forward_intermediates"):
        raise UsageError(f"open_clip {open_clip.__version__} is too old: vqacache needs forward_intermediates (3.x)")
    reason = _timm_trunk_reason(model.visual)
    if reason:
        raise UsageError(f"{what} is not supported: {reason}")
    return model


def _timm_trunk_reason(visual: Any) -> str | None:
    """Why a timm image tower cannot give CLS + patch tokens the way this module reads them."""
    trunk = getattr(visual, "trunk", None)
    if trunk is None:
        return None
    if getattr(trunk, "num_prefix_tokens", 0) != 1 or getattr(trunk, "global_pool", "") != "token":
        return "its timm trunk does not have exactly one class token that it pools"
    if not isinstance(getattr(trunk, "fc_norm", torch.nn.Identity()), torch.nn.Identity):
        return "its timm trunk normalises the pooled token again (fc_norm): cls_hidden would not be pre-projection"
    if not hasattr(trunk, "forward_intermediates") or not hasattr(getattr(trunk, "patch_embed", None), "grid_size"):
        return "its timm trunk has no forward_intermediates / patch grid"
    return None


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """open_clip logs "Model initialized randomly" on the root logger before any weights are
    loaded; here weights always follow (a checkpoint, or the seeded init), so drop it."""
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _transform_of(model: Any, what: str) -> ImageTransform:
    """The eval transform open_clip attached to the model (``model.visual.preprocess_cfg``)."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h != w:
        raise UsageError(f"{what} is not supported: non-square input {h}x{w}")
    return ImageTransform(
        size=int(h),
        interpolation="bilinear" if cfg["interpolation"] == "bilinear" else "bicubic",  # open_clip's rule
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )
