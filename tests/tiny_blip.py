"""Tiny random BLIP-family checkpoints for tests, written as ``save_pretrained`` folders.

Same classes and code paths as the real ``Salesforce/blip2-opt-2.7b`` and
``Salesforce/blip-vqa-base``, but 2 narrow layers. Weights are vqacache's seeded init
(``init_random_``: 0.02-scaled noise, nothing zero or one) rather than transformers' own, whose
1e-10 vision init would make every token the same and parity tests vacuous.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vqacache.featurize.encoders.weights import init_random_

WORDS = [
    "what", "is", "the", "man", "woman", "doing", "?", "a", "dog", "cat", "red", "blue", "green", "yes",
    "no", "running", "sitting", "two", "three", "ball", "playing", "with", "color", "of", "how", "many",
    "##s", "##ing", "people", "table",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]"]


def tiny_vision_cfg(image_size: int, patch_size: int, width: int = 32) -> dict:
    return dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                image_size=image_size, patch_size=patch_size)


def write_tiny_blip2(folder: Path, *, seed: int = 0, bare: bool = False) -> Path:
    """A tiny ``Blip2ForConditionalGeneration`` (ViT 224 px / 14 px patches: BLIP-2's 16x16 grid,
    a 1-layer Q-Former and OPT) with its image processor; ``bare``: its vision tower alone
    (``Blip2VisionModel``, the same weights for the same seed)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor, OPTConfig

    config = Blip2Config(
        vision_config=tiny_vision_cfg(224, 14),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=64, max_position_embeddings=32),
        text_config=OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                              num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=16).to_dict(),
        num_query_tokens=4,
    )
    with torch.random.fork_rng(devices=[]):
        model = Blip2ForConditionalGeneration(config)
    init_random_(model, seed)
    (model.vision_model if bare else model).save_pretrained(folder)
    BlipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})


def write_tiny_blip_vqa(folder: Path, *, image_size: int = 384, seed: int = 0, tokenizer: bool = True) -> Path:
    """A tiny ``BlipForQuestionAnswering`` (ViT with 16 px patches at ``image_size``, 2-layer
    text encoder and decoder over :data:`VOCAB`, ``[DEC]`` the decoder start token)."""
    from transformers import BlipForQuestionAnswering

    config = tiny_blip_vqa_config(image_size)
    with torch.random.fork_rng(devices=[]):
        model = BlipForQuestionAnswering(config)
    init_random_(model, seed)
    with torch.no_grad():  # 10x larger weights than 0.02 noise: answers depend on the frame and the question
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.mul_(10.0)
    model.save_pretrained(folder)
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_blip_vqa_config(image_size: int = 384):
    from transformers import BlipConfig

    return BlipConfig(
        vision_config=tiny_vision_cfg(image_size, 16),
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=VOCAB.index("[DEC]"), sep_token_id=VOCAB.index("[SEP]"),
                         eos_token_id=VOCAB.index("[SEP]")),
    )
