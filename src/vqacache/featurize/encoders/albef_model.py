"""ALBEF's VQA model (Li et al., 2021), rebuilt from timm and transformers components.

ALBEF (``salesforce/ALBEF``, ``models/model_vqa.py``) is three towers:

* ``visual``: a ViT-B/16 (``models/vit.py``: patch 16, width 768, 12 blocks, 12 heads, MLP
  ratio 4, fused ``qkv`` with bias, LayerNorm eps 1e-6, learned position embedding over
  CLS + patches, final norm). 384 px for VQA: 24 x 24 = 576 patches. Here it is timm's
  ``VisionTransformer`` with the same options, whose parameter names are ALBEF's.
* a BERT-base text encoder (``models/xbert.py`` ``BertModel``, ``configs/config_bert.json``:
  12 layers, ``fusion_layer: 6``): layers 0-5 are plain text layers, layers 6-11 add a
  cross-attention block (``crossattention``) to the image tokens after their bidirectional
  self-attention. Here the split is explicit: ``text`` is a transformers ``BertModel`` with
  the first 6 layers (and the embeddings), ``fusion`` a transformers ``BertEncoder`` with the
  last 6 (built with ``is_decoder``/``add_cross_attention`` so that transformers creates the
  cross-attention, with the self-attention made bidirectional again).
* the answer decoder (VQA only): a BERT LM head model (xbert ``BertLMHeadModel``, 6 layers,
  ``fusion_layer: 0`` so every layer cross-attends) with causal self-attention and
  cross-attention to the fused question states. Here transformers' ``BertLMHeadModel``
  (``is_decoder``, ``add_cross_attention``), whose output embedding is tied to its input
  embedding as in ALBEF.

Pre-training and retrieval checkpoints also carry ``vision_proj`` / ``text_proj`` (the 256-d
image-text contrastive embeddings); the VQA model has none. Both are optional here.

Shapes: N images, S image size, T = 1 + P visual tokens (CLS first), W vision width,
B texts, L tokens, D text width (= W: ALBEF's cross-attention reads 768-d image tokens with
768-d BERT layers), V wordpiece vocabulary size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class AlbefConfig:
    """Architecture of an ALBEF model. The defaults are ALBEF's VQA model (``configs/VQA.yaml``
    with ``configs/config_bert.json``); tests use tiny ones.

    ``embed_dim``: width of ``vision_proj``/``text_proj`` (256 in ALBEF's pre-training), or
    ``None`` when the model has none (VQA). ``decoder_layers``: 0 = no answer decoder.
    """

    image_size: int = 384
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    mlp_ratio: float = 4.0
    vocab_size: int = 30522
    hidden_size: int = 768
    text_heads: int = 12
    intermediate_size: int = 3072
    text_layers: int = 6
    fusion_layers: int = 6
    decoder_layers: int = 6
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12
    embed_dim: int | None = None

    def __post_init__(self) -> None:
        if self.vision_width != self.hidden_size:
            raise ValueError(
                "ALBEF's cross-attention needs vision_width == hidden_size, "
                f"got {self.vision_width} and {self.hidden_size}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        """Patches per side (24 at 384 px)."""
        return self.image_size // self.patch_size

    def with_(self, **changes: Any) -> AlbefConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALBEF_VQA = AlbefConfig()
"""ALBEF's VQA model: ViT-B/16 at 384 px, BERT-base 6 text + 6 fusion layers, 6-layer decoder."""

ALBEF_TINY = AlbefConfig(
    image_size=96, patch_size=16, vision_width=64, vision_layers=2, vision_heads=2, mlp_ratio=2.0,
    vocab_size=256, hidden_size=64, text_heads=2, intermediate_size=128, text_layers=2, fusion_layers=2,
    decoder_layers=2, max_position_embeddings=128,
)
"""A tiny ALBEF of the same layout (this project's, for demos and CPU smoke runs; never a real
model): 96 px, 6 x 6 patches, width 64, 2 layers per tower, a 256-token table holding the
character vocabulary of :func:`~.albef_tokenizer.character_tokenizer`, 128 positions."""


def bert_config(cfg: AlbefConfig, layers: int, *, decoder: bool = False, cross: bool = False) -> Any:
    """A transformers ``BertConfig`` for one of ALBEF's BERT stacks (``config_bert.json``)."""
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=cfg.text_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        is_decoder=decoder,
        add_cross_attention=cross,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return config


class AlbefModel(nn.Module):
    """ALBEF's towers, frozen-inference only. Build with ``AlbefModel(cfg)``; load weights with
    :func:`vqacache.featurize.encoders.albef_checkpoint.load_albef_weights`."""

    def __init__(self, cfg: AlbefConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BertLMHeadModel, BertModel
        from transformers.models.bert.modeling_bert import BertEncoder

        self.cfg = cfg
        self.visual = VisionTransformer(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_classes=0,
            global_pool="token",
            embed_dim=cfg.vision_width,
            depth=cfg.vision_layers,
            num_heads=cfg.vision_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=True,
            class_token=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
        )
        self.text = BertModel(bert_config(cfg, cfg.text_layers), add_pooling_layer=False)
        self.fusion_config = bert_config(cfg, cfg.fusion_layers, decoder=True, cross=True)
        self.fusion = BertEncoder(self.fusion_config)
        for layer in self.fusion.layer:  # ALBEF's fusion self-attention is bidirectional
            layer.attention.self.is_causal = False
        self.decoder = (
            BertLMHeadModel(bert_config(cfg, cfg.decoder_layers, decoder=True, cross=True))
            if cfg.decoder_layers
            else None
        )
        if cfg.embed_dim is not None:
            self.vision_proj: nn.Linear | None = nn.Linear(cfg.vision_width, cfg.embed_dim)
            self.text_proj: nn.Linear | None = nn.Linear(cfg.hidden_size, cfg.embed_dim)
        else:
            self.vision_proj = self.text_proj = None

    # -- the towers ---------------------------------------------------------------------------

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 3, S, S) -> ViT tokens after the final norm (N, T, W), CLS first
        (ALBEF's ``visual_encoder(image)``)."""
        return self.visual.forward_features(pixels)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) with mask (B, L) -> text-only states (B, L, D) after the first
        ``text_layers`` layers (xbert ``mode='text'``)."""
        return self.text(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    def fuse(self, text_states: torch.Tensor, mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Text states (B, L, D) with mask (B, L) and image tokens (B, T, W) -> fused states
        (B, L, D): the fusion layers (xbert ``mode='fusion'``), every image token attended."""
        from transformers.masking_utils import create_bidirectional_mask

        self_mask = create_bidirectional_mask(config=self.fusion_config, inputs_embeds=text_states, attention_mask=mask)
        return self.fusion(text_states, attention_mask=self_mask, encoder_hidden_states=image_tokens).last_hidden_state

    def decode(
        self, ids: torch.Tensor, mask: torch.Tensor, question_states: torch.Tensor, question_mask: torch.Tensor
    ) -> torch.Tensor:
        """Answer ids (B, L) with mask (B, L), fused question states (B, Lq, D) with mask
        (B, Lq) -> next-token logits (B, L, V) of the answer decoder."""
        if self.decoder is None:
            raise RuntimeError("this ALBEF model was built without its answer decoder")
        out = self.decoder(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=question_states,
            encoder_attention_mask=question_mask,
            use_cache=False,
        )
        return out.logits
