"""MCG's text side: a BERT-style question encoder that is also the cross-modal fusor (with
visual input), and a causal answer decoder with cross-attention, from transformers' BLIP
text models, or tiny random configs for tests.

``load_text_parts(weights, ...)`` returns :class:`TextParts`. ``weights`` is one of

* a Hugging Face **hub name** of a ``BlipForQuestionAnswering`` (default
  ``Salesforce/blip-vqa-base``), read from the local cache only (stage two never downloads:
  a missing snapshot is a one-line :class:`UsageError`, never random weights); identity
  ``<name>@<snapshot>``; or a local ``save_pretrained`` folder of one (identity
  ``sha256:...`` over its files). Its ``text_encoder`` encodes the question without visual
  input and fuses with it (BLIP's weight sharing; [ENC] is MCG's [FUS]); its
  ``text_decoder`` generates (its [DEC] is MCG's [GEN]).
* ``random`` with ``size="tiny"``: 2-layer, width-32 BLIP text models over a word-level
  tokenizer of the run's own text (:mod:`.word_tokenizer`, with ``[FUS]`` and ``[GEN]``
  added), seeded; identity ``random:<seed>``.

The paper's alternative, BERT-base split 6/6 (question encoder = layers 1-6, fusor and
generator = layers 7-12), is not wired yet (docs/mcg.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.modules.blip2_family import SIZES, builds_random, resolve_folder
from vqacache.heads.modules.word_tokenizer import word_tokenizer

DEFAULT_WEIGHTS = "Salesforce/blip-vqa-base"
TINY_FUS, TINY_GEN = "[FUS]", "[GEN]"


@dataclass
class TextParts:
    """``encoder`` (BlipTextModel with cross-attention layers), ``decoder``
    (BlipTextLMHeadModel), ``tokenizer``; token ids of [FUS], [GEN] (start), end and pad;
    ``specials`` (token strings that are no word); ``video_width`` the cross-attention reads;
    ``identity``."""

    encoder: nn.Module
    decoder: nn.Module
    tokenizer: Any
    fus_id: int
    gen_id: int
    eos_id: int
    pad_id: int
    specials: set[str]
    video_width: int
    identity: str

    @property
    def width(self) -> int:
        return int(self.encoder.config.hidden_size)


def tiny_config(vocab_size: int, gen_id: int) -> Any:
    """BlipTextConfig of the ``tiny`` size (2 layers, width 32, 4 heads, cross-attention to
    32-wide video tokens, label smoothing 0.1)."""
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=vocab_size, hidden_size=32, encoder_hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, is_decoder=True, label_smoothing=0.1, pad_token_id=0,
        bos_token_id=gen_id, sep_token_id=3, eos_token_id=3,
    )


def load_text_parts(weights: str, *, size: str = "checkpoint", vocab: list[str] | None = None,
                    seed: int = 0) -> TextParts:
    """The parts named by ``weights`` (see the module docstring)."""
    if builds_random(weights, size, "a random BLIP-base"):
        return _random_parts(vocab or [], seed)
    folder, identity = resolve_folder(weights)
    return _blip_parts(folder, identity)


def _random_parts(vocab: list[str], seed: int) -> TextParts:
    from transformers import BlipTextLMHeadModel, BlipTextModel

    tok = word_tokenizer([*vocab, TINY_FUS, TINY_GEN], "bert")
    gen = tok.convert_tokens_to_ids(TINY_GEN)
    cfg = tiny_config(len(tok), gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BlipTextModel(cfg, add_pooling_layer=False)
        decoder = BlipTextLMHeadModel(cfg)
    return TextParts(encoder, decoder, tok, tok.convert_tokens_to_ids(TINY_FUS), gen, tok.sep_token_id,
                     tok.pad_token_id, {"[PAD]", "[UNK]", "[CLS]", "[SEP]", TINY_FUS, TINY_GEN}, 32,
                     f"random:{seed}")


def _blip_parts(folder: Any, identity: str) -> TextParts:
    from transformers import AutoTokenizer, BlipForQuestionAnswering

    try:
        model = BlipForQuestionAnswering.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot load BlipForQuestionAnswering from {folder}: {first}") from None
    enc, dec = tok.convert_tokens_to_ids("[ENC]"), tok.convert_tokens_to_ids("[DEC]")
    if enc == tok.unk_token_id or dec == tok.unk_token_id:
        raise UsageError(f"{identity}: the tokenizer has no [ENC]/[DEC] tokens (not BLIP's)")
    model.text_decoder.config.label_smoothing = 0.1
    return TextParts(model.text_encoder, model.text_decoder, tok, enc, dec, tok.sep_token_id, tok.pad_token_id,
                     set(tok.all_special_tokens), int(model.config.text_config.encoder_hidden_size), identity)
