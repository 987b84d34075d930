"""A trainable CLIP text tower: the open_clip text transformer a store's text features were
computed with, rebuilt from the store's spec so stage two can fine-tune it (VideoDistill
fine-tunes CLIP's text encoder; the cached sentence vectors stay the default).

**Identity** (:func:`text_tower_identity`, plain data recorded in the run's arguments): the
text store's ``architecture`` (``open_clip:MODEL``), the final model config
(``extra.model_cfg``, QuickGELU included), the tokenizer (open_clip's ``SimpleTokenizer``
only), the context length, and the weights, rebuilt offline:

* ``random:SEED``: the seeded init of :func:`vqacache.cache_spec.random_init.init_random_`
  over the whole CLIP model, as stage one drew it (``extra.random_init`` must name it);
* ``file`` (``sha256:HEX``) or ``pretrained`` (``TAG@sha256:HEX``): a local checkpoint whose
  sha256 is the recorded one, given as ``--weights PATH`` or, for a pretrained tag, found in
  the local Hugging Face cache (open_clip's download location); otherwise one line naming
  ``--weights``, before any training.

**Forward** (:class:`ClipTextTower`): strings -> open_clip's tokenizer -> token embedding +
positions -> the transformer (causal mask; only the first L positions, as stage one ran it)
-> ``ln_final`` -> the EOT position's state -> ``text_projection``: the sentence vector
``encode_text`` gives, so at step 0 the tower's output equals the stored ``text``/``cand``
vectors (to their float16 rounding).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.random_init import RANDOM_INIT, init_random_
from vqacache.cache_spec.spec import FeatureSpec

OPEN_CLIP = "open_clip:"
TOKENIZER = "open_clip.SimpleTokenizer"


def text_tower_identity(spec: FeatureSpec, weights: str = "") -> dict[str, Any]:
    """What :class:`ClipTextTower` needs to rebuild the text tower of a store with ``spec``, as
    plain data; ``weights``: a local checkpoint path (``--weights``), "" to look in the cache.
    Refuses (one line naming ``--weights``) what cannot be rebuilt offline."""
    if not spec.architecture.startswith(OPEN_CLIP) or spec.outputs.text != "clip-text":
        raise UsageError(f"text_tower=trainable needs a text store made by an open_clip encoder; this one's text "
                         f"comes from {spec.architecture!r} ({spec.encoder})")
    model_cfg = spec.extra.get("model_cfg")
    if not isinstance(model_cfg, dict) or spec.extra.get("tokenizer") != TOKENIZER:
        raise UsageError(f"text_tower=trainable: the store of {spec.encoder} records no open_clip model config or "
                         f"tokenizer {TOKENIZER}; featurize it again with this version")
    identity = {"model": spec.architecture[len(OPEN_CLIP):], "model_cfg": model_cfg,
                "context_length": int(spec.outputs.text_context or 77), "weights": spec.weights.identity,
                "checkpoint": ""}
    if spec.weights.source == "random":
        if spec.extra.get("random_init") != RANDOM_INIT:
            raise UsageError(f"text_tower=trainable: the store's random weights come from "
                             f"{spec.extra.get('random_init')!r}, not {RANDOM_INIT}; cannot rebuild them")
        return identity
    digest = spec.weights.identity.rsplit("sha256:", 1)[-1]
    path = weights or _cached_checkpoint(identity["model"], spec.weights.identity.split("@")[0])
    what = f"the store's text tower (open_clip {identity['model']}, weights {spec.weights.identity[:32]}...)"
    if not path:
        where = "is not in the local cache" if spec.weights.source == "pretrained" else "came from a local file"
        raise UsageError(f"{what} {where}; pass --weights PATH, the checkpoint the store was made with")
    if not os.path.isfile(path):
        raise UsageError(f"--weights {path}: no such file")
    if _sha256(path) != digest:
        raise UsageError(f"--weights {path} is not {what}: its sha256 differs")
    return {**identity, "checkpoint": os.path.abspath(path)}


def _cached_checkpoint(model: str, tag: str) -> str:
    """The local Hugging Face cache's copy of open_clip ``model``/``tag`` (safetensors first), or ""."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag) if open_clip.is_pretrained_cfg(model, tag) else {}
    if not cfg.get("hf_hub"):
        return ""
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or "open_clip_pytorch_model.bin"
    for name in (filename.rsplit(".", 1)[0] + ".safetensors", "open_clip_model.safetensors", filename):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return hit
    return ""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ClipTextTower(nn.Module):
    """n strings -> sentence vectors (n, E), trainable. Built from :func:`text_tower_identity`.

    Holds only the text parts of the CLIP model (``tower``: open_clip's ``TextTransformer``,
    or the CLIP's own ``token_embedding``, ``positional_embedding``, ``transformer``,
    ``ln_final``, ``text_projection``); the image tower is dropped after the weights load.
    """

    def __init__(self, identity: dict[str, Any]) -> None:
        super().__init__()
        import open_clip

        model = _build_clip(identity)
        custom = hasattr(model, "text")
        self.tower: nn.Module = model.text if custom else _clip_text_parts(model)
        if custom:  # (open_clip's two layouts, as featurize reads them)
            self.pool_type, self.eos_id = model.text.pool_type, getattr(model.text, "eos_id", None)
        else:
            self.pool_type, self.eos_id = model.text_pool_type, getattr(model, "text_eos_id", None)
        text_cfg = identity["model_cfg"].get("text_cfg", {})
        self.tokenizer = open_clip.SimpleTokenizer(context_length=identity["context_length"],
                                                   **text_cfg.get("tokenizer_kwargs", {}))

    def eot_index(self, ids: Tensor) -> Tensor:
        """(n, C) token ids -> (n,) position of the token the sentence vector pools (EOT)."""
        if self.pool_type == "argmax":  # EOT has the highest id in CLIP's BPE vocabulary
            return ids.argmax(dim=-1)
        return (ids == self.eos_id).int().argmax(dim=-1)

    def forward(self, texts: list[str]) -> Tensor:
        """n strings -> (n, E) float32, the tower's projected EOT states."""
        m = self.tower
        device = m.positional_embedding.device
        ids = self.tokenizer(list(texts)).to(device)  # (n, C)
        eot = self.eot_index(ids)  # (n,)
        if m.attn_mask is not None:  # causal: positions past the longest EOT change nothing before it
            ids = ids[:, : int(eot.max()) + 1]
        n_pos = ids.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(cast) + m.positional_embedding[:n_pos].to(cast)  # (n, L, W)
        mask = m.attn_mask[:n_pos, :n_pos] if m.attn_mask is not None else None  # (L, L)
        states = m.ln_final(m.transformer(x, attn_mask=mask))  # (n, L, W)
        pooled = states[torch.arange(len(ids), device=device), eot]  # (n, W)
        proj = m.text_projection
        if proj is None:
            return pooled.float()
        return (proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj).float()  # (n, E)


def _build_clip(identity: dict[str, Any]) -> nn.Module:
    """The whole open_clip model of ``identity`` on the CPU with its weights; global RNG untouched."""
    import open_clip

    cfg = dict(identity["model_cfg"])
    cls = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"] = {**cfg["vision_cfg"], "timm_model_pretrained": False}  # never a download
    with torch.random.fork_rng(devices=[]):
        model = cls(**cfg)
    if identity["checkpoint"]:
        try:
            open_clip.load_checkpoint(model, identity["checkpoint"], strict=True, weights_only=True)
        except FileNotFoundError:
            raise UsageError(f"--weights: the text tower's checkpoint {identity['checkpoint']} is gone") from None
    elif identity["weights"].startswith("random:"):
        init_random_(model, int(identity["weights"].split(":", 1)[1]))
    else:
        raise UsageError("text_tower=trainable: no checkpoint for the store's text tower; pass --weights PATH")
    return model


def _clip_text_parts(model: nn.Module) -> nn.Module:
    """A CLIP model's inline text tower as one module (the names open_clip's TextTransformer uses)."""
    parts = nn.Module()
    for name in ("token_embedding", "transformer", "ln_final"):
        setattr(parts, name, getattr(model, name))
    parts.positional_embedding = model.positional_embedding
    parts.text_projection = model.text_projection
    parts.register_buffer("attn_mask", model.attn_mask, persistent=False)
    return parts
