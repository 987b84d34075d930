"""ALBEF's checkpoint key map, proved on checkpoints written in ALBEF's exact key layout.

:func:`albef_state` writes a state dict the way ALBEF's ``models/model_vqa.py`` names it
(``models/vit.py`` ViT with fused ``qkv``; ``models/xbert.py`` BERT layers, the layers from
``fusion_layer`` on with ``crossattention``; the answer decoder ``text_decoder.bert`` /
``text_decoder.cls`` with its tied output layer; the ``_m`` momentum copies; optionally the
pre-training layout ``text_encoder.bert.`` with its heads and queues), with tiny dimensions
and random values, so that every tensor is distinct. The tests check where each tensor
lands (by name, against the table restated here), that accounting is strict both ways, and,
with forward passes written from ALBEF's code straight on the checkpoint tensors, that the
model computes what ALBEF computes with them.

Also the tiny config and vocabulary shared by ``test_albef.py`` and ``test_albef_teacher.py``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.encoders.albef_checkpoint import (
    interpolate_pos_embed,
    load_albef_weights,
    read_albef_checkpoint,
    resolve_albef_weights,
)
from vqacache.featurize.encoders.albef_model import AlbefConfig, AlbefModel

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "what",
    "is",
    "the",
    "man",
    "doing",
    "a",
    "dog",
    "red",
    "blue",
    "car",
    "to",
    "dig",
    "out",
    "sand",
    "play",
    "##ing",
    "yes",
    "no",
    "wave",
    "sit",
    "stand",
    "up",
    "down",
    "ball",
    "girl",
    "boy",
    "in",
    "why",
    "did",
    "pick",
    "after",
    "fell",
    "where",
    "desert",
    "room",
    "two",
    "three",
    "one",
    "?",
    ".",
    ",",
    "green",
    "cat",
    "run",
    "jump",
]
TINY = AlbefConfig(
    image_size=64,
    patch_size=16,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    mlp_ratio=2.0,
    vocab_size=len(VOCAB),
    hidden_size=32,
    text_heads=2,
    intermediate_size=48,
    text_layers=2,
    fusion_layers=2,
    decoder_layers=2,
    max_position_embeddings=40,
)


def write_vocab(folder: Path) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return path


def tiny_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer over :data:`VOCAB` (lower-casing, like bert-base-uncased)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=str(write_vocab(folder)), do_lower_case=True)


# -- ALBEF's key layout, written from its code -------------------------------------------------


def albef_state(
    cfg: AlbefConfig = TINY,
    *,
    seed: int = 0,
    grid: int | None = None,
    decoder: bool = True,
    embed_dim: int | None = None,
    momentum: bool = True,
    pretrain_layout: bool = False,
) -> dict[str, torch.Tensor]:
    """A random state dict named as ALBEF's VQA model (or, with ``pretrain_layout``, as its
    pre-training model) with ``cfg``'s dimensions; ``grid``: the checkpoint's patch grid."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def put(name: str, *shape: int) -> None:
        sd[name] = torch.randn(*shape, generator=g)

    w, d, p = cfg.vision_width, cfg.hidden_size, cfg.patch_size
    grid = grid or cfg.grid
    # models/vit.py VisionTransformer
    put("visual_encoder.cls_token", 1, 1, w)
    put("visual_encoder.pos_embed", 1, grid * grid + 1, w)
    put("visual_encoder.patch_embed.proj.weight", w, 3, p, p)
    put("visual_encoder.patch_embed.proj.bias", w)
    hidden = int(w * cfg.mlp_ratio)
    for j in range(cfg.vision_layers):
        b = f"visual_encoder.blocks.{j}."
        for norm in ("norm1", "norm2"):
            put(b + norm + ".weight", w)
            put(b + norm + ".bias", w)
        put(b + "attn.qkv.weight", 3 * w, w)
        put(b + "attn.qkv.bias", 3 * w)
        put(b + "attn.proj.weight", w, w)
        put(b + "attn.proj.bias", w)
        put(b + "mlp.fc1.weight", hidden, w)
        put(b + "mlp.fc1.bias", hidden)
        put(b + "mlp.fc2.weight", w, hidden)
        put(b + "mlp.fc2.bias", w)
    put("visual_encoder.norm.weight", w)
    put("visual_encoder.norm.bias", w)

    # models/xbert.py BertModel (text encoder): layers >= fusion_layer have crossattention
    text = "text_encoder.bert." if pretrain_layout else "text_encoder."
    _bert_embeddings(put, sd, text, cfg)
    for i in range(cfg.text_layers + cfg.fusion_layers):
        _bert_layer(put, f"{text}encoder.layer.{i}.", cfg, cross=i >= cfg.text_layers)
    if decoder:  # BertLMHeadModel, fusion_layer = 0: every layer cross-attends
        _bert_embeddings(put, sd, "text_decoder.bert.", cfg)
        for i in range(cfg.decoder_layers):
            _bert_layer(put, f"text_decoder.bert.encoder.layer.{i}.", cfg, cross=True)
        _lm_head(put, sd, "text_decoder.", cfg, tied=True)
    if embed_dim:
        put("vision_proj.weight", embed_dim, w)
        put("vision_proj.bias", embed_dim)
        put("text_proj.weight", embed_dim, d)
        put("text_proj.bias", embed_dim)
    if pretrain_layout:  # BertForMaskedLM head (untied here: it is dropped anyway), ITM head, ITC state
        _lm_head(put, sd, "text_encoder.", cfg, tied=False)
        put("itm_head.weight", 2, d)
        put("itm_head.bias", 2)
        sd["temp"] = torch.tensor(0.07)
        put("image_queue", embed_dim or 8, 16)
        put("text_queue", embed_dim or 8, 16)
        sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    if momentum:
        for key in [
            k
            for k in sd
            if k.split(".")[0] in ("visual_encoder", "text_encoder", "text_decoder", "vision_proj", "text_proj")
        ]:
            top, rest = key.split(".", 1)
            sd[f"{top}_m.{rest}"] = torch.randn(sd[key].shape, generator=g)
    return sd


def _bert_embeddings(put, sd: dict, prefix: str, cfg: AlbefConfig) -> None:
    put(prefix + "embeddings.word_embeddings.weight", cfg.vocab_size, cfg.hidden_size)
    put(prefix + "embeddings.position_embeddings.weight", cfg.max_position_embeddings, cfg.hidden_size)
    put(prefix + "embeddings.token_type_embeddings.weight", cfg.type_vocab_size, cfg.hidden_size)
    put(prefix + "embeddings.LayerNorm.weight", cfg.hidden_size)
    put(prefix + "embeddings.LayerNorm.bias", cfg.hidden_size)
    sd[prefix + "embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings).expand(1, -1)


def _bert_layer(put, prefix: str, cfg: AlbefConfig, *, cross: bool) -> None:
    d, i = cfg.hidden_size, cfg.intermediate_size
    for block in ("attention", "crossattention") if cross else ("attention",):
        for lin in ("query", "key", "value"):
            put(f"{prefix}{block}.self.{lin}.weight", d, d)  # key/value of crossattention: encoder_width = d
            put(f"{prefix}{block}.self.{lin}.bias", d)
        put(f"{prefix}{block}.output.dense.weight", d, d)
        put(f"{prefix}{block}.output.dense.bias", d)
        put(f"{prefix}{block}.output.LayerNorm.weight", d)
        put(f"{prefix}{block}.output.LayerNorm.bias", d)
    put(prefix + "intermediate.dense.weight", i, d)
    put(prefix + "intermediate.dense.bias", i)
    put(prefix + "output.dense.weight", d, i)
    put(prefix + "output.dense.bias", d)
    put(prefix + "output.LayerNorm.weight", d)
    put(prefix + "output.LayerNorm.bias", d)


def _lm_head(put, sd: dict, prefix: str, cfg: AlbefConfig, *, tied: bool) -> None:
    d, v = cfg.hidden_size, cfg.vocab_size
    c = prefix + "cls.predictions."
    put(c + "bias", v)
    put(c + "transform.dense.weight", d, d)
    put(c + "transform.dense.bias", d)
    put(c + "transform.LayerNorm.weight", d)
    put(c + "transform.LayerNorm.bias", d)
    if tied:  # ALBEF ties the output layer to the input embedding; state_dict saves both names
        sd[c + "decoder.weight"] = sd[prefix + "bert.embeddings.word_embeddings.weight"]
        sd[c + "decoder.bias"] = sd[c + "bias"]
    else:
        put(c + "decoder.weight", v, d)
        put(c + "decoder.bias", v)


# the key map, restated independently of the implementation
_IGNORED = re.compile(
    r"(\w+_m\..*|.*embeddings\.position_ids|text_encoder\.cls\..*|itm_head\..*|temp|image_queue|text_queue|queue_ptr)"
)


def expected_name(key: str, cfg: AlbefConfig = TINY) -> str | None:
    if _IGNORED.fullmatch(key):
        return None
    if key.startswith("visual_encoder."):
        return "visual." + key.removeprefix("visual_encoder.")
    key = key.replace("text_encoder.bert.", "text_encoder.")
    if key.startswith("text_encoder.embeddings."):
        return "text." + key.removeprefix("text_encoder.")
    m = re.fullmatch(r"text_encoder\.encoder\.layer\.(\d+)\.(.*)", key)
    if m:
        i = int(m.group(1))
        if i < cfg.text_layers:
            return f"text.encoder.layer.{i}.{m.group(2)}"
        return f"fusion.layer.{i - cfg.text_layers}.{m.group(2)}"
    if key.startswith("text_decoder."):
        return "decoder." + key.removeprefix("text_decoder.")
    return key  # vision_proj / text_proj


def tame(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trained-like magnitudes (weights ~0.2, layer norm gains ~1) so that forward passes do
    not saturate every softmax."""
    state = {k: v * 0.2 if v.dtype.is_floating_point else v for k, v in state.items()}
    for k in [k for k in state if k.endswith(("norm1.weight", "norm2.weight", "norm.weight", "LayerNorm.weight"))]:
        state[k] = 1.0 + 0.5 * state[k]
    return state


def _loaded(state: dict[str, torch.Tensor], cfg: AlbefConfig = TINY) -> AlbefModel:
    model = AlbefModel(cfg)
    load_albef_weights(model, state)
    return model


# -- the key map ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pretrain_layout", [False, True])
def test_every_checkpoint_tensor_lands_in_its_parameter(pretrain_layout: bool) -> None:
    embed = 8 if pretrain_layout else None
    cfg = TINY.with_(embed_dim=embed, decoder_layers=0 if pretrain_layout else TINY.decoder_layers)
    state = albef_state(cfg, decoder=not pretrain_layout, embed_dim=embed, pretrain_layout=pretrain_layout)
    model = _loaded(state, cfg)
    ours = model.state_dict()
    landed = set()
    for key, value in state.items():
        name = expected_name(key, cfg)
        if name is None:
            continue
        assert name in ours, key
        assert torch.equal(ours[name], value), f"{key} -> {name}"
        landed.add(name)
    assert landed == set(ours)  # no parameter left with its initial values
    assert all(n.startswith(("visual.", "text.", "fusion.", "decoder.", "vision_proj.", "text_proj.")) for n in ours)
    assert len([n for n in ours if ".crossattention." in n and n.startswith("fusion.")]) == cfg.fusion_layers * 10
    assert not any(".crossattention." in n for n in ours if n.startswith("text."))
    if not pretrain_layout:  # the decoder's output layer stays tied to its input embedding
        assert model.decoder.cls.predictions.decoder.weight is model.decoder.bert.embeddings.word_embeddings.weight


def test_checkpoint_file_with_model_entry_reads_back(tmp_path: Path) -> None:
    state = albef_state()
    path = tmp_path / "ALBEF_VQA.pth"
    torch.save({"model": state, "epoch": 7, "config": {"k_test": 128}}, path)
    read = read_albef_checkpoint(path)
    assert set(read) == set(state) and all(torch.equal(read[k], state[k]) for k in state)
    weights = resolve_albef_weights(str(path))
    assert weights.spec.source == "file" and weights.spec.identity.startswith("sha256:") and weights.path == path
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read"):
        read_albef_checkpoint(tmp_path / "junk.pth")


def test_unknown_and_missing_keys_are_one_clear_error() -> None:
    state = albef_state()
    state["text_encoder.encoder.layer.9.attention.self.query.weight"] = torch.zeros(1)
    state["mystery_head.weight"] = torch.zeros(1)
    del state["visual_encoder.blocks.1.attn.qkv.weight"]
    with pytest.raises(UsageError) as err:
        _loaded(state)
    msg = str(err.value)
    assert "\n" not in msg and "2 unexpected key(s)" in msg and "mystery_head.weight" in msg
    assert "text_encoder.encoder.layer.9" in msg and "1 parameter(s) missing (visual.blocks.1.attn.qkv.weight)" in msg

    state = albef_state()
    state["visual_encoder.blocks.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    with pytest.raises(UsageError, match="shape mismatch.*visual.blocks.0.mlp.fc1.weight"):
        _loaded(state)

    state = albef_state()
    state["text_decoder.cls.predictions.decoder.bias"] = state["text_decoder.cls.predictions.bias"] + 1
    with pytest.raises(UsageError, match="tied"):
        _loaded(state)


def test_a_tied_copy_may_be_absent() -> None:
    state = albef_state()
    del state["text_decoder.cls.predictions.decoder.weight"], state["text_decoder.cls.predictions.decoder.bias"]
    model = _loaded(state)
    assert torch.equal(model.decoder.cls.predictions.decoder.bias, state["text_decoder.cls.predictions.bias"])
    assert torch.equal(
        model.decoder.cls.predictions.decoder.weight, state["text_decoder.bert.embeddings.word_embeddings.weight"]
    )


def test_pos_embed_of_another_grid_is_resized_as_albef_does() -> None:
    state = albef_state(grid=2)  # a 32 px checkpoint into the 64 px model (4 x 4 patches)
    model = _loaded(state)
    pos = state["visual_encoder.pos_embed"]  # (1, 5, W)
    grid = pos[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    resized = (
        F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, -1)
    )
    torch.testing.assert_close(model.visual.pos_embed.data, torch.cat([pos[:, :1], resized], dim=1), atol=0, rtol=0)
    assert interpolate_pos_embed(pos, 2) is pos


def test_weights_option_errors_say_where_albef_weights_come_from(tmp_path: Path) -> None:
    for value in (None, "", "ALBEF_VQA"):
        with pytest.raises(UsageError) as err:
            resolve_albef_weights(value)
        assert "ALBEF_VQA.pth" in str(err.value) and "github.com/salesforce/ALBEF" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="no such file"):
        resolve_albef_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(UsageError, match="random:SEED"):
        resolve_albef_weights("random:x")
    assert resolve_albef_weights("random").spec.identity == "random:0"
    assert resolve_albef_weights("random:7").seed == 7


# -- what ALBEF computes with the same tensors ----------------------------------------------------


def _ln(x: torch.Tensor, sd: dict, name: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _lin(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def albef_vit(sd: dict, images: torch.Tensor, cfg: AlbefConfig = TINY) -> torch.Tensor:
    """models/vit.py VisionTransformer.forward on checkpoint tensors: (N, 3, S, S) -> (N, T, W)."""
    p, heads = cfg.patch_size, cfg.vision_heads
    x = F.conv2d(
        images, sd["visual_encoder.patch_embed.proj.weight"], sd["visual_encoder.patch_embed.proj.bias"], stride=p
    )
    x = x.flatten(2).transpose(1, 2)  # (N, P, W)
    x = torch.cat([sd["visual_encoder.cls_token"].expand(len(x), -1, -1), x], dim=1) + sd["visual_encoder.pos_embed"]
    n, t, c = x.shape
    for j in range(cfg.vision_layers):
        b = f"visual_encoder.blocks.{j}."
        qkv = (
            _lin(_ln(x, sd, b + "norm1", 1e-6), sd, b + "attn.qkv")
            .reshape(n, t, 3, heads, c // heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        x = x + _lin((attn @ v).transpose(1, 2).reshape(n, t, c), sd, b + "attn.proj")
        h = _lin(_ln(x, sd, b + "norm2", 1e-6), sd, b + "mlp.fc1")
        x = x + _lin(F.gelu(h), sd, b + "mlp.fc2")
    return _ln(x, sd, "visual_encoder.norm", 1e-6)


def _xbert_attention(
    sd: dict, prefix: str, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor, heads: int
) -> torch.Tensor:
    """xbert BertAttention: additive mask (B, 1, Lq, Lk) of 0 / -10000."""
    b, lq, d = x.shape
    hd = d // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], heads, hd).permute(0, 2, 1, 3)

    q, k, v = (
        split(_lin(x, sd, prefix + ".self.query")),
        split(_lin(ctx, sd, prefix + ".self.key")),
        split(_lin(ctx, sd, prefix + ".self.value")),
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
    out = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3).reshape(b, lq, d)
    return _ln(_lin(out, sd, prefix + ".output.dense") + x, sd, prefix + ".output.LayerNorm", 1e-12)


def xbert_text_encoder(
    sd: dict, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, cfg: AlbefConfig = TINY
) -> torch.Tensor:
    """xbert BertModel.forward (``mode='multi_modal'``) of ALBEF's text encoder on checkpoint
    tensors: bidirectional self-attention everywhere, cross-attention from ``fusion_layer`` on."""
    e = "text_encoder.embeddings."
    n = ids.shape[1]
    x = (
        sd[e + "word_embeddings.weight"][ids]
        + sd[e + "token_type_embeddings.weight"][0]
        + sd[e + "position_embeddings.weight"][:n]
    )
    x = _ln(x, sd, e + "LayerNorm", 1e-12)
    ext = (1.0 - mask[:, None, None, :].float()) * -10000.0
    for i in range(cfg.text_layers + cfg.fusion_layers):
        lp = f"text_encoder.encoder.layer.{i}."
        x = _xbert_attention(sd, lp + "attention", x, x, ext, cfg.text_heads)
        if i >= cfg.text_layers:  # fusion_layer
            x = _xbert_attention(
                sd, lp + "crossattention", x, image, torch.zeros(1, 1, 1, image.shape[1]), cfg.text_heads
            )
        h = F.gelu(_lin(x, sd, lp + "intermediate.dense"))
        x = _ln(_lin(h, sd, lp + "output.dense") + x, sd, lp + "output.LayerNorm", 1e-12)
    return x


def test_forward_matches_albef_code_on_the_same_tensors() -> None:
    """ViT, text + fusion layers and decoder, each written from ALBEF's code, on the raw
    checkpoint tensors, agree with the model loaded through the key map. (The fusion
    self-attention must be bidirectional and the decoder's causal: padding is in the batch.)"""
    state = tame(albef_state())
    model = _loaded(state).eval()
    images = torch.randn(2, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[2, 5, 6, 7, 8, 9], [2, 11, 12, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [3]])).long()
    with torch.no_grad():
        image_tokens = model.encode_image(images)
        torch.testing.assert_close(image_tokens, albef_vit(state, images), atol=1e-5, rtol=1e-5)

        fused = model.fuse(model.encode_text(ids, mask), mask, image_tokens)
        ref = xbert_text_encoder(state, ids, mask, image_tokens)
        keep = mask.bool()
        torch.testing.assert_close(fused[keep], ref[keep], atol=1e-5, rtol=1e-5)

        answers = torch.tensor([[2, 21, 3, 0], [2, 12, 14, 3]])
        amask = (answers != 0).long()
        logits = model.decode(answers, amask, fused, mask)  # (2, 4, V)
        dec = _xbert_decoder(state, answers, amask, fused, mask)
        head = _ln(
            F.gelu(_lin(dec, state, "text_decoder.cls.predictions.transform.dense")),
            state,
            "text_decoder.cls.predictions.transform.LayerNorm",
            1e-12,
        )
        ref_logits = (
            head @ state["text_decoder.bert.embeddings.word_embeddings.weight"].T
            + state["text_decoder.cls.predictions.bias"]
        )
        keep = amask.bool()
        torch.testing.assert_close(logits[keep], ref_logits[keep], atol=1e-4, rtol=1e-4)


def _xbert_decoder(
    sd: dict, ids: torch.Tensor, mask: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor, cfg: AlbefConfig = TINY
) -> torch.Tensor:
    """xbert BertLMHeadModel's BERT: causal self-attention, cross-attention masked by the
    question's padding (``invert_attention_mask``)."""
    e = "text_decoder.bert.embeddings."
    n = ids.shape[1]
    x = (
        sd[e + "word_embeddings.weight"][ids]
        + sd[e + "token_type_embeddings.weight"][0]
        + sd[e + "position_embeddings.weight"][:n]
    )
    x = _ln(x, sd, e + "LayerNorm", 1e-12)
    self_mask = (1.0 - mask[:, None, None, :].float() * torch.tril(torch.ones(n, n))[None, None]) * -10000.0
    cross_mask = (1.0 - ctx_mask[:, None, None, :].float()) * -10000.0
    for i in range(cfg.decoder_layers):
        lp = f"text_decoder.bert.encoder.layer.{i}."
        x = _xbert_attention(sd, lp + "attention", x, x, self_mask, cfg.text_heads)
        x = _xbert_attention(sd, lp + "crossattention", x, ctx, cross_mask, cfg.text_heads)
        h = F.gelu(_lin(x, sd, lp + "intermediate.dense"))
        x = _ln(_lin(h, sd, lp + "output.dense") + x, sd, lp + "output.LayerNorm", 1e-12)
    return x
