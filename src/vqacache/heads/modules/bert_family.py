"""MCG's text side: a question encoder (no visual input), a cross-modal fusor (cross-attention to
the video tokens X, a [FUS] token first) and a causal answer decoder with cross-attention to
the fusor's states, from transformers' text models, or tiny random configs for tests.

Two text models (``text_model``):

* ``blip`` (:class:`BlipTextSide`): BLIP's text models (``BlipForQuestionAnswering``). Its
  ``text_encoder`` is the question encoder without visual input and the fusor with it (BLIP's
  weight sharing; the question's first token replaced by [ENC], MCG's [FUS]); its
  ``text_decoder`` generates (its [DEC] is MCG's [GEN]).
* ``bert`` (:class:`BertTextSide`, the paper's Sec. IV-A2): a plain BERT split in two. The
  first half of its layers (6 of ``bert-base-uncased``'s 12) is the question encoder; the
  second half, each layer given a new cross-attention to X between its self-attention and its
  feed-forward network (the paper's SA + CA + FFN blocks), is the fusor (:class:`BertFusor`),
  which reads the encoder's states with the [FUS] token's embedding prepended (the paper's
  "additional [FUS] token"). The encoder never sees the video. The answer decoder is what the
  released code builds (``BertLMHeadModel(config)``): a causal ``BertLMHeadModel`` of the
  model's full depth with cross-attention in every layer, here initialised from the same BERT
  (every layer, the MLM head as the LM head, new cross-attention); the released code loads BLIP's
  ``model_base_14M`` decoder over it, the paper says "the last six layers". The tokenizer gains
  ``[FUS]`` and ``[GEN]`` (the released code adds [ENC] and [DEC]: 30,524 tokens either way).

``load_text_parts(weights, text_model=..., ...)`` returns the side. ``weights`` is one of

* a Hugging Face **hub name** (``DEFAULT_WEIGHTS[text_model]``: ``Salesforce/blip-vqa-base``,
  ``google-bert/bert-base-uncased``; the bare legacy ``bert-base-uncased`` is looked up under
  both names), read from the local cache only (stage two never downloads: a missing snapshot
  is a one-line :class:`UsageError` naming ``--weights``, never random weights); identity
  ``<name>@<snapshot>``; or a local ``save_pretrained`` folder (identity ``sha256:...`` over
  its files): a ``BlipForQuestionAnswering`` for ``blip``, a BERT checkpoint with its
  tokenizer for ``bert`` (``BertForPreTraining``, ``BertForMaskedLM``, ``BertModel``: the LM
  head is new where the folder has none).
* ``random`` with ``size="tiny"``: tiny random configs over a word-level tokenizer of the run's
  own text (:mod:`.word_tokenizer`, with ``[FUS]`` and ``[GEN]`` added), seeded; identity
  ``random:<seed>``. ``blip``: 2-layer, width-32 BLIP text models; ``bert``: a 4-layer,
  width-32 BERT split 2/2 and a 4-layer decoder.

All attention runs ``eager``: alpha is read from the encoder's last self-attention weights.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.modules.blip2_family import builds_random, resolve_folder
from vqacache.heads.modules.word_tokenizer import word_tokenizer

TEXT_MODELS = ("blip", "bert")
DEFAULT_WEIGHTS = {"blip": "Salesforce/blip-vqa-base", "bert": "google-bert/bert-base-uncased"}
BERT_ALIASES = {"bert-base-uncased": "google-bert/bert-base-uncased"}
TINY_FUS, TINY_GEN = "[FUS]", "[GEN]"


class TextSide(nn.Module):
    """What MCG needs of a text model: :meth:`encode`, :meth:`fuse`, :meth:`decode`; the
    ``tokenizer``; token ids of [FUS], [GEN] (start), end and pad; ``specials`` (token strings
    that are no word); ``video_width`` (the width the cross-attention reads); ``identity``."""

    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, tokenizer: Any, fus_id: int, gen_id: int, eos_id: int, pad_id: int, specials: set[str],
                 video_width: int, identity: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.fus_id, self.gen_id, self.eos_id, self.pad_id = fus_id, gen_id, eos_id, pad_id
        self.specials, self.video_width, self.identity = specials, video_width, identity

    @property
    def width(self) -> int:
        return int(self.encoder.config.hidden_size)

    def encode(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The question alone: ids, mask (B, L) -> Y (B, L, H), the last self-attention layer's
        CLS attention over the tokens (B, L; mean over heads, no gradient)."""
        captured: list[Tensor] = []
        handle = self.encoder.encoder.layer[-1].attention.self.register_forward_hook(
            lambda m, i, o: captured.append(o[1]))
        try:
            y = self._run_encoder(ids, mask)
        finally:
            handle.remove()
        return y, captured[-1][:, :, 0].mean(1).detach()

    def _run_encoder(self, ids: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def fuse(self, ids: Tensor, mask: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The question ([CLS] words [SEP]) with X (B, 1 + P, D) -> fused states (B, L', H) with
        [FUS] first, their mask (B, L')."""
        raise NotImplementedError

    def decode(self, ids: Tensor, mask: Tensor, states: Tensor, smask: Tensor) -> Tensor:
        """Decoder logits (B, L, V) of ids (B, L) ([GEN] answer [SEP]) cross-attending ``states``."""
        raise NotImplementedError


class BlipTextSide(TextSide):
    """BLIP: one text encoder as question encoder and fusor (its first token [ENC] = [FUS] with X)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, **kw: Any) -> None:
        super().__init__(**kw)
        self.encoder, self.decoder = encoder, decoder

    def _run_encoder(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask, is_decoder=False).last_hidden_state

    def fuse(self, ids: Tensor, mask: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        ids = ids.clone()
        ids[:, 0] = self.fus_id
        xmask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        out = self.encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=x, encoder_attention_mask=xmask,
                           is_decoder=False).last_hidden_state
        return out, mask

    def decode(self, ids: Tensor, mask: Tensor, states: Tensor, smask: Tensor) -> Tensor:
        return self.decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
                            encoder_attention_mask=smask, is_decoder=True).logits


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, L) 1/0 -> (B, 1, 1, L) 0 / most negative: the eager attention's additive key mask."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class FusorLayer(nn.Module):
    """One fusor block: a BERT layer's self-attention, a new cross-attention to X, the BERT layer's
    feed-forward network (each with its residual and LayerNorm, as BERT's decoder layers)."""

    def __init__(self, layer: nn.Module, config: Any) -> None:
        from transformers.models.bert.modeling_bert import BertAttention

        super().__init__()
        self.attention = layer.attention
        self.crossattention = BertAttention(config, is_cross_attention=True)
        self.intermediate, self.output = layer.intermediate, layer.output

    def forward(self, h: Tensor, mask: Tensor, x: Tensor) -> Tensor:
        """h (B, L, H), mask (B, 1, 1, L) additive, x (B, M, H) (every video token attended)."""
        h = self.attention(h, mask)[0]
        h = self.crossattention(h, encoder_hidden_states=x, encoder_attention_mask=None)[0]
        return self.output(self.intermediate(h), h)


class BertFusor(nn.Module):
    """The upper BERT layers as fusor blocks (:class:`FusorLayer`)."""

    def __init__(self, layers: list[nn.Module], config: Any) -> None:
        super().__init__()
        self.layer = nn.ModuleList([FusorLayer(layer, config) for layer in layers])
        std = config.initializer_range
        for fl in self.layer:  # BERT's initialisation for the new cross-attention
            for mod in fl.crossattention.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.normal_(mod.weight, std=std)
                    nn.init.zeros_(mod.bias)
                elif isinstance(mod, nn.LayerNorm):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)

    def forward(self, h: Tensor, mask: Tensor, x: Tensor) -> Tensor:
        """h (B, L, H), mask (B, L) 1/0, x (B, M, H) -> (B, L, H)."""
        am = additive_mask(mask, h.dtype)
        for layer in self.layer:
            h = layer(h, am, x)
        return h


class BertTextSide(TextSide):
    """BERT split in two: ``encoder`` (a ``BertModel`` of the first ``split`` layers), ``fusor``
    (the remaining layers with cross-attention), ``decoder`` (a ``BertLMHeadModel``)."""

    def __init__(self, bert: nn.Module, decoder: nn.Module, **kw: Any) -> None:
        super().__init__(**kw)
        n = int(bert.config.num_hidden_layers)
        self.split = n // 2
        upper = list(bert.encoder.layer[self.split:])
        bert.encoder.layer = nn.ModuleList(list(bert.encoder.layer[:self.split]))
        bert.config = copy.deepcopy(bert.config)
        bert.config.num_hidden_layers = self.split
        self.encoder = bert
        self.fusor = BertFusor(upper, bert.config)
        self.decoder = decoder

    def _run_encoder(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def fus_embedding(self, batch: int, device: torch.device) -> Tensor:
        """The [FUS] token through the embeddings (word + position 0 + type 0, LayerNorm): (B, 1, H)."""
        return self.encoder.embeddings(input_ids=torch.full((batch, 1), self.fus_id, device=device))

    def fuse(self, ids: Tensor, mask: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._run_encoder(ids, mask)
        h = torch.cat([self.fus_embedding(ids.shape[0], ids.device), y], 1)
        fmask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        return self.fusor(h, fmask, x), fmask

    def decode(self, ids: Tensor, mask: Tensor, states: Tensor, smask: Tensor) -> Tensor:
        return self.decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
                            encoder_attention_mask=smask).logits


def tiny_config(vocab_size: int, gen_id: int) -> Any:
    """BlipTextConfig of the ``tiny`` size (2 layers, width 32, 4 heads, cross-attention to
    32-wide video tokens, label smoothing 0.1)."""
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=vocab_size, hidden_size=32, encoder_hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, is_decoder=True, label_smoothing=0.1, pad_token_id=0,
        bos_token_id=gen_id, sep_token_id=3, eos_token_id=3,
    )


def tiny_bert_config(vocab_size: int) -> Any:
    """BertConfig of the ``tiny`` size: 4 layers (split 2/2), width 32, 4 heads, eager attention."""
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    cfg._attn_implementation = "eager"
    return cfg


def load_text_parts(weights: str, *, text_model: str = "blip", size: str = "checkpoint",
                    vocab: list[str] | None = None, seed: int = 0) -> TextSide:
    """The side named by ``text_model`` and ``weights`` (see the module docstring)."""
    if text_model not in TEXT_MODELS:
        raise UsageError(f"unknown text_model {text_model!r}; valid: {', '.join(TEXT_MODELS)}")
    if weights == "default":
        weights = DEFAULT_WEIGHTS[text_model]
    if text_model == "bert":
        if builds_random(weights, size, "a random BERT-base"):
            return _random_bert(vocab or [], seed)
        folder, identity = resolve_bert(weights)
        return _bert_parts(folder, identity, seed)
    if builds_random(weights, size, "a random BLIP-base"):
        return _random_parts(vocab or [], seed)
    folder, identity = resolve_folder(weights)
    return _blip_parts(folder, identity)


def resolve_bert(weights: str) -> tuple[Path, str]:
    """(folder, identity) of a BERT: a folder, a hub name, or a bare legacy name (``bert-base-uncased``,
    looked up in the cache under itself, then under its current owner/name)."""
    if weights in BERT_ALIASES and not Path(weights).exists():
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(weights, "config.json")
        if isinstance(hit, str):
            folder = Path(hit).parent
            return folder, f"{weights}@{folder.name}"
        weights = BERT_ALIASES[weights]
    return resolve_folder(weights)


def _random_parts(vocab: list[str], seed: int) -> BlipTextSide:
    from transformers import BlipTextLMHeadModel, BlipTextModel

    tok = word_tokenizer([*vocab, TINY_FUS, TINY_GEN], "bert")
    gen = tok.convert_tokens_to_ids(TINY_GEN)
    cfg = tiny_config(len(tok), gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BlipTextModel(cfg, add_pooling_layer=False)
        decoder = BlipTextLMHeadModel(cfg)
    return BlipTextSide(encoder, decoder, tokenizer=tok, fus_id=tok.convert_tokens_to_ids(TINY_FUS), gen_id=gen,
                        eos_id=tok.sep_token_id, pad_id=tok.pad_token_id,
                        specials={"[PAD]", "[UNK]", "[CLS]", "[SEP]", TINY_FUS, TINY_GEN}, video_width=32,
                        identity=f"random:{seed}")


def _blip_parts(folder: Any, identity: str) -> BlipTextSide:
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
    return BlipTextSide(model.text_encoder, model.text_decoder, tokenizer=tok, fus_id=enc, gen_id=dec,
                        eos_id=tok.sep_token_id, pad_id=tok.pad_token_id, specials=set(tok.all_special_tokens),
                        video_width=int(model.config.text_config.encoder_hidden_size), identity=identity)


def _decoder_config(cfg: Any) -> Any:
    dcfg = copy.deepcopy(cfg)
    dcfg.is_decoder, dcfg.add_cross_attention = True, True
    dcfg._attn_implementation = "eager"
    return dcfg


def _random_bert(vocab: list[str], seed: int) -> BertTextSide:
    from transformers import BertLMHeadModel, BertModel

    tok = word_tokenizer([*vocab, TINY_FUS, TINY_GEN], "bert")
    cfg = tiny_bert_config(len(tok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = BertModel(cfg, add_pooling_layer=False)
        decoder = BertLMHeadModel(_decoder_config(cfg))
        decoder.bert.load_state_dict(bert.state_dict(), strict=False)  # the same BERT; cross-attention new
        side = BertTextSide(bert, decoder, tokenizer=tok, fus_id=tok.convert_tokens_to_ids(TINY_FUS),
                            gen_id=tok.convert_tokens_to_ids(TINY_GEN), eos_id=tok.sep_token_id,
                            pad_id=tok.pad_token_id, specials={"[PAD]", "[UNK]", "[CLS]", "[SEP]", TINY_FUS, TINY_GEN},
                            video_width=cfg.hidden_size, identity=f"random:{seed}")
    return side


def _bert_parts(folder: Any, identity: str, seed: int) -> BertTextSide:
    from transformers import AutoTokenizer, BertLMHeadModel, BertModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load reports list the new cross-attention and the unused heads
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the new cross-attention and token rows
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            bert = BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                             attn_implementation="eager", dtype=torch.float32)
            if getattr(bert.config, "model_type", "") != "bert":
                raise ValueError(f"a {bert.config.model_type} checkpoint, not BERT")
            decoder = BertLMHeadModel.from_pretrained(folder, local_files_only=True, is_decoder=True,
                                                      add_cross_attention=True, attn_implementation="eager",
                                                      dtype=torch.float32)
            tok.add_special_tokens({"additional_special_tokens": [TINY_FUS, TINY_GEN]})
            bert.resize_token_embeddings(len(tok), mean_resizing=False)
            decoder.resize_token_embeddings(len(tok), mean_resizing=False)
            side = BertTextSide(bert, decoder, tokenizer=tok, fus_id=tok.convert_tokens_to_ids(TINY_FUS),
                                gen_id=tok.convert_tokens_to_ids(TINY_GEN), eos_id=tok.sep_token_id,
                                pad_id=tok.pad_token_id, specials=set(tok.all_special_tokens),
                                video_width=int(bert.config.hidden_size), identity=identity)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--weights {identity}: cannot load a BERT from {folder}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return side
