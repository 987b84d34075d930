"""The BLIP-2-family parts VLAP trains and freezes, from a checkpoint or tiny random configs.

``load_parts(weights, ...)`` returns :class:`Blip2Parts`: InstructBLIP's Q-Former, its learned
queries, the projection to the LLM, the frozen Flan-T5, both tokenizers, the checkpoint's own
vision LayerNorm (gamma, beta, eps: the one VLAP re-applies to the cached tokens and trains),
the digest of the checkpoint's frozen vision trunk and the weights' identity.

``weights`` is one of

* a Hugging Face **hub name** (default ``Salesforce/instructblip-flan-t5-xl``): read from the
  local Hugging Face cache only; stage two never downloads (a missing snapshot is a one-line
  :class:`UsageError` saying how to get it, never a fall-back to random weights). Identity:
  ``<name>@<snapshot commit>``.
* a local ``save_pretrained`` **folder** of an ``InstructBlipForConditionalGeneration`` (and
  its processor: the T5 tokenizer at the top, the Q-Former's in ``qformer_tokenizer/``).
  Identity: ``sha256:<hex>`` over every file's relative path and sha256.
* ``random``: only with ``size="tiny"``, a 2-layer Q-Former and a 2+2-layer T5 built from
  configs (:func:`tiny_configs`) with word-level tokenizers over ``vocab`` (the run's own
  text, :mod:`.word_tokenizer`); seeded, so a rebuild gives the same weights. Identity
  ``random:<seed>``; no trunk digest (nothing to compare).

Checkpoints load in float32 (the trained parts need it for AdamW; bf16 autocast on CUDA
speeds the forward passes). The vision tower's weights are read only to hash its trunk (every tensor but
``post_layernorm.*``, as float32, with ``vqacache.cache_spec.token_norm.trunk_digest`` when
that module exists) and then dropped: the tokens come from the cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.modules.word_tokenizer import word_tokenizer

DEFAULT_WEIGHTS = "Salesforce/instructblip-flan-t5-xl"
SIZES = ("checkpoint", "tiny")
NUM_QUERIES = 32


@dataclass
class Blip2Parts:
    """What :func:`load_parts` returns (see the module docstring); ``query_tokens`` (1, Q, H),
    ``vision_gamma``/``vision_beta`` (W,)."""

    qformer: nn.Module
    query_tokens: Tensor
    projection: nn.Linear
    llm: nn.Module
    qformer_tokenizer: Any
    llm_tokenizer: Any
    vision_gamma: Tensor
    vision_beta: Tensor
    vision_eps: float
    trunk_sha256: str | None
    identity: str


def tiny_configs(vision_width: int, qformer_vocab: int, llm_vocab: int) -> tuple[Any, Any]:
    """(InstructBlipQFormerConfig, T5Config) of the ``tiny`` size: 2 Q-Former layers of width 32
    (cross-attention every 2nd layer, as InstructBLIP), a T5 of width 32 with 2 encoder and
    2 decoder layers and gated-GELU feed-forward (Flan-T5's)."""
    from transformers import InstructBlipQFormerConfig, T5Config

    qcfg = InstructBlipQFormerConfig(
        vocab_size=qformer_vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, encoder_hidden_size=vision_width, cross_attention_frequency=2, pad_token_id=0,
    )
    tcfg = T5Config(
        vocab_size=llm_vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        tie_word_embeddings=False,
    )
    return qcfg, tcfg


def load_parts(weights: str, *, size: str = "checkpoint", vision_width: int = 1408, vocab: list[str] | None = None,
               seed: int = 0) -> Blip2Parts:
    """The parts named by ``weights`` (see the module docstring)."""
    if builds_random(weights, size, "a random Flan-T5-XL"):
        return _random_parts(vision_width, vocab or [], seed)
    folder, identity = resolve_folder(weights)
    return _checkpoint_parts(folder, identity)


def _random_parts(vision_width: int, vocab: list[str], seed: int) -> Blip2Parts:
    from transformers import InstructBlipQFormerModel, T5ForConditionalGeneration

    qtok, ttok = word_tokenizer(vocab, "bert"), word_tokenizer(vocab, "t5")
    qcfg, tcfg = tiny_configs(vision_width, len(qtok), len(ttok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        qformer = InstructBlipQFormerModel(qcfg)
        queries = torch.randn(1, NUM_QUERIES, qcfg.hidden_size) * 0.02
        llm = T5ForConditionalGeneration(tcfg)
        projection = nn.Linear(qcfg.hidden_size, tcfg.d_model)
    return Blip2Parts(
        qformer=qformer, query_tokens=queries, projection=projection, llm=llm, qformer_tokenizer=qtok,
        llm_tokenizer=ttok, vision_gamma=torch.ones(vision_width), vision_beta=torch.zeros(vision_width),
        vision_eps=1e-6, trunk_sha256=None, identity=f"random:{seed}",
    )


def builds_random(weights: str, size: str, useless: str) -> bool:
    """Whether ``--weights``/``size`` ask for tiny random parts (True) or pretrained ones
    (False); one line for the pairs that make no sense (``useless``: what full-size random
    parts would be, for the message)."""
    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; valid: {', '.join(SIZES)}")
    if weights == "random" and size != "tiny":
        raise UsageError(f"--weights random needs --method-arg size=tiny ({useless} is of no use)")
    if weights != "random" and size == "tiny":
        raise UsageError("size=tiny builds random weights; pass --weights random with it")
    return weights == "random"


def resolve_folder(weights: str) -> tuple[Path, str]:
    """(folder to load, identity) of a local folder or a hub name in the local HF cache."""
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"--weights {weights}: not a save_pretrained folder (no config.json)")
        return path, f"sha256:{directory_sha256(path)}"
    if path.exists() or "/" not in weights or weights.startswith((".", "/", "~")):
        raise UsageError(f"--weights {weights!r}: not a folder, a hub name (owner/name) or 'random'")
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(weights, "config.json")
    if not isinstance(hit, str):
        raise UsageError(
            f"--weights {weights}: not in the local Hugging Face cache (stage two never downloads); fetch it once "
            f"with `huggingface-cli download {weights}`, pass a local save_pretrained folder, or --weights random "
            "--method-arg size=tiny"
        )
    folder = Path(hit).parent
    return folder, f"{weights}@{folder.name}"


def _checkpoint_parts(folder: Path, identity: str) -> Blip2Parts:
    from transformers import AutoTokenizer, InstructBlipForConditionalGeneration

    try:
        model = InstructBlipForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        llm_tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, truncation_side="left")
        q_tok = AutoTokenizer.from_pretrained(folder, subfolder="qformer_tokenizer", local_files_only=True,
                                              truncation_side="left")
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot load InstructBLIP from {folder}: {first}") from None
    if model.config.text_config.model_type != "t5":
        raise UsageError(f"{identity}: VLAP needs a Flan-T5 InstructBLIP, this one's LLM is "
                         f"{model.config.text_config.model_type}")
    vision = model.vision_model
    ln = vision.post_layernorm
    trunk = {k: v for k, v in vision.state_dict().items() if not k.startswith("post_layernorm.")}
    return Blip2Parts(
        qformer=model.qformer, query_tokens=model.query_tokens.detach(), projection=model.language_projection,
        llm=model.language_model, qformer_tokenizer=q_tok, llm_tokenizer=llm_tok,
        vision_gamma=ln.weight.detach().float().clone(), vision_beta=ln.bias.detach().float().clone(),
        vision_eps=float(ln.eps), trunk_sha256=_trunk_sha256(trunk), identity=identity,
    )


def _trunk_sha256(trunk: dict[str, Tensor]) -> str | None:
    """The vision trunk's digest by the store's rule (None when that rule is not available)."""
    try:
        from vqacache.cache_spec.token_norm import trunk_digest
    except ImportError:
        return None
    return trunk_digest({k: v.detach().float().cpu().numpy() for k, v in trunk.items()})


def directory_sha256(folder: Path) -> str:
    """sha256 over ``<relative path>\\0<file sha256>\\n`` of every non-hidden file, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest.update(f"{path.relative_to(folder).as_posix()}\0{h.hexdigest()}\n".encode())
    return digest.hexdigest()
