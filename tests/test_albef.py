"""The ``albef`` encoder: ALBEF's test transform, outputs, spec and weights, with a tiny ALBEF.

Tolerances: the batched squash resize vs ALBEF's PIL ``Resize((384, 384), BICUBIC)``: PIL
resamples 8-bit images in fixed point, we in float32 then round, so a pixel may be a grey
level or two off (max |diff| <= 2/255 before normalisation, few pixels differ); forward
passes on the same tensors: float32 noise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_albef_checkpoint import TINY, albef_state, albef_vit, tame, tiny_tokenizer
from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import FeatureSpec, SamplingSpec
from vqacache.featurize.encoders.albef import ALBEF_MEAN, ALBEF_STD, AlbefEncoder, albef_transform, build_albef_encoder
from vqacache.featurize.encoders.base import Encoder

SAMPLING = SamplingSpec("15/2")
TEXTS = ["what is the man doing?", "", "a red car", "why did the girl pick up the ball after the boy fell"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def enc(tok) -> AlbefEncoder:
    return build_albef_encoder("albef", weights="random:0", config=TINY, tokenizer=tok)


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in small])


def _real_frames(videos: Path, per_video: int = 2) -> list[np.ndarray]:
    """The first frames of two of the shared videos, as decoded (uint8 RGB, native size)."""
    import av

    out = []
    for path in sorted(p for p in videos.iterdir() if p.is_file())[:2]:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(per_video), container.decode(video=0))]
        out.append(np.stack(frames))
    return out


def _albef_pil_transform(frame: np.ndarray, size: int) -> torch.Tensor:
    """ALBEF's ``test_transform`` (dataset/__init__.py) on one frame: torchvision's
    ``Resize((size, size), BICUBIC)`` on a PIL image is ``image.resize((size, size), BICUBIC)``,
    then ``ToTensor`` and ``Normalize`` (written out: importing torchvision alone costs seconds)."""
    resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    x = torch.from_numpy(resized).permute(2, 0, 1)  # (3, S, S)
    return (x - torch.tensor(ALBEF_MEAN).view(3, 1, 1)) / torch.tensor(ALBEF_STD).view(3, 1, 1)


def test_squash_transform_matches_albef_pil_transform_on_real_frames(shared_videos: Path) -> None:
    transform = albef_transform(384)
    std = torch.tensor(ALBEF_STD).view(1, 3, 1, 1)
    for frames in _real_frames(shared_videos) + [_frames(2, 480, 640, seed=3)]:  # upscale and downscale
        ours = transform(frames)
        ref = torch.stack([_albef_pil_transform(f, 384) for f in frames])
        assert ours.shape == ref.shape == (len(frames), 3, 384, 384)
        levels = ((ours - ref) * std * 255).abs()  # difference in grey levels
        assert levels.max() <= 2.0 + 1e-3
        assert (levels > 0.5).float().mean() < 0.02


def test_encoder_protocol_dims_and_spec(enc: AlbefEncoder) -> None:
    assert isinstance(enc, Encoder) and enc.name == "albef" and enc.has_text is True
    assert enc.dims == {"cls": (32,), "cls_hidden": (32,), "patch": (16, 32), "text": (32,), "text_tokens": (32,)}
    spec = enc.feature_spec(SAMPLING, dtype="float16")
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert spec.architecture == "albef:albef-vqa" and spec.weights.identity == "random:0"
    assert spec.outputs.cls == "post-ln-cls" and spec.outputs.text == "albef-text-cls"  # no vision_proj: the CLS
    assert spec.preprocess.crop == "none" and spec.preprocess.resize_short_side == 64
    assert spec.preprocess.mean == ALBEF_MEAN and spec.preprocess.interpolation == "bicubic"
    assert spec.extra["resize"] == "squash" and spec.extra["random_init"]
    assert (
        spec.extra["albef_config"]["decoder_layers"] == 0 and spec.extra["tokenizer"]["vocab_size"] == TINY.vocab_size
    )


def test_encode_frames_is_albefs_vit_after_albefs_transform(tok, tmp_path: Path) -> None:
    state = tame(albef_state(embed_dim=None))
    path = tmp_path / "ALBEF_VQA.pth"
    torch.save({"model": state}, path)
    enc = build_albef_encoder("albef", weights=str(path), config=TINY, tokenizer=tok)
    spec = enc.feature_spec(SAMPLING)
    assert spec.weights.identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert enc.model.decoder is None  # the encoder ignores the answer decoder's keys
    frames = _frames(3, 48, 80, seed=1)
    out = enc.encode_frames(frames)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"cls": (3, 32), "cls_hidden": (3, 32), "patch": (3, 16, 32)}
    with torch.no_grad():
        ref = albef_vit(state, albef_transform(64)(frames))  # (3, 17, 32)
    scale = float(ref.abs().max())
    torch.testing.assert_close(out["cls_hidden"], ref[:, 0], atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(out["patch"], ref[:, 1:], atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(out["cls"], out["cls_hidden"], atol=0, rtol=0)


def test_projections_give_itc_embeddings(tok, tmp_path: Path) -> None:
    state = albef_state(embed_dim=8, decoder=False, pretrain_layout=True)  # a pre-training checkpoint
    path = tmp_path / "ALBEF.pth"
    torch.save({"model": state}, path)
    enc = build_albef_encoder("albef", weights=str(path), config=TINY, tokenizer=tok)
    assert enc.dims["cls"] == (8,) and enc.dims["text"] == (8,)
    outputs = enc.feature_spec(SAMPLING).outputs
    assert outputs.cls == "albef-image-itc" and outputs.text == "albef-text-itc"
    frames = _frames(2, 64, 64, seed=2)
    out = enc.encode_frames(frames)
    proj = F.linear(out["cls_hidden"], state["vision_proj.weight"], state["vision_proj.bias"])
    torch.testing.assert_close(out["cls"], proj, atol=1e-5, rtol=1e-5)
    text = enc.encode_text(TEXTS)
    first = F.linear(text["tokens"][:, 0], state["text_proj.weight"], state["text_proj.bias"])
    torch.testing.assert_close(text["emb"], first, atol=1e-5, rtol=1e-5)


def test_encode_text_is_albefs_text_mode(enc: AlbefEncoder, tok) -> None:
    out = enc.encode_text(TEXTS)
    pieces = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert out["length"].tolist() == [1 + len(p) for p in pieces]  # [CLS] text, no [SEP] (ALBEF's tokenizer)
    assert out["tokens"].shape == (4, max(1 + len(p) for p in pieces), 32) and out["emb"].shape == (4, 32)
    torch.testing.assert_close(out["emb"], out["tokens"][:, 0], atol=0, rtol=0)
    one = enc.encode_text([TEXTS[3]])  # padding does not change a text's states
    torch.testing.assert_close(one["tokens"][0], out["tokens"][3, : one["length"][0]], atol=1e-5, rtol=1e-5)
    empty = enc.encode_text([])
    assert empty["emb"].shape == (0, 32) and empty["tokens"].shape == (0, 0, 32) and empty["length"].shape == (0,)
    with pytest.raises(TypeError):
        enc.encode_text("a dog")


def test_patch_pool_and_no_patches(enc: AlbefEncoder, tok) -> None:
    pooled = build_albef_encoder("albef", weights="random:0", config=TINY, tokenizer=tok, patch_pool=2)
    frames = _frames(2, 40, 72, seed=4)
    full, out = enc.encode_frames(frames), pooled.encode_frames(frames)
    grid = full["patch"].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(out["patch"], F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2), atol=1e-6, rtol=1e-5)
    assert pooled.dims["patch"] == (4, 32) and pooled.feature_spec(SAMPLING).outputs.patch_pool == 2
    none = build_albef_encoder("albef", weights="random:0", config=TINY, tokenizer=tok, patches=False, patch_pool=2)
    assert (
        set(none.encode_frames(frames)) == {"cls", "cls_hidden"} and none.feature_spec(SAMPLING).outputs.patch_pool == 1
    )
    with pytest.raises(UsageError, match="does not divide the 4x4"):
        build_albef_encoder("albef", weights="random:0", config=TINY, tokenizer=tok, patch_pool=3)
    assert enc.encode_frames(np.zeros((0, 40, 72, 3), np.uint8))["patch"].shape == (0, 16, 32)


def test_random_weights_are_deterministic_and_leave_the_global_rng(enc: AlbefEncoder, tok) -> None:
    frames = _frames(2, 64, 64, seed=5)
    before = torch.random.get_rng_state()
    again = build_albef_encoder("albef", weights="random", config=TINY, tokenizer=tok)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.testing.assert_close(again.encode_frames(frames), enc.encode_frames(frames), atol=0, rtol=0)
    other = build_albef_encoder("albef", weights="random:1", config=TINY, tokenizer=tok)
    assert not torch.allclose(other.encode_frames(frames)["cls"], enc.encode_frames(frames)["cls"])
    assert other.feature_spec(SAMPLING).fingerprint() != enc.feature_spec(SAMPLING).fingerprint()


def test_bfloat16_is_recorded_and_close(enc: AlbefEncoder, tok) -> None:
    bf16 = build_albef_encoder("albef", weights="random:0", config=TINY, tokenizer=tok, compute_dtype="bfloat16")
    assert bf16.feature_spec(SAMPLING).compute_dtype == "bfloat16"
    frames = _frames(2, 64, 64, seed=6)
    a, b = bf16.encode_frames(frames)["cls"], enc.encode_frames(frames)["cls"]
    assert a.dtype == torch.float32 and F.cosine_similarity(a, b).min() > 0.99


def test_usage_errors(tok, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ALBEF_VQA.pth") as err:
        build_albef_encoder("albef", weights=None, config=TINY, tokenizer=tok)
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="unknown ALBEF architecture"):
        build_albef_encoder("albef", "albef-vqa-999", weights="random", tokenizer=tok)
    with pytest.raises(UsageError, match="compute dtype"):
        build_albef_encoder("albef", weights="random", config=TINY, tokenizer=tok, compute_dtype="float64")
    with pytest.raises(UsageError, match="tokenizer is not available locally"):
        build_albef_encoder("albef", weights="random", config=TINY, tokenizer=tmp_path / "no-such-dir")
    bad = tmp_path / "other.pth"
    torch.save({"model": {"visual.proj": torch.zeros(2)}}, bad)
    with pytest.raises(UsageError, match="not an ALBEF checkpoint"):
        build_albef_encoder("albef", weights=str(bad), config=TINY, tokenizer=tok)


def test_registry_builds_albef_and_needs_its_checkpoint(tok, tmp_path: Path) -> None:
    from vqacache.featurize.encoders import get_encoder, resolve_name

    assert resolve_name("albef").builder.endswith("albef:build_albef_encoder")
    with pytest.raises(UsageError, match="ALBEF_VQA.pth") as err:
        get_encoder("albef")  # no default weights: where to get them, in one line
    assert "\n" not in str(err.value)
    path = tmp_path / "ALBEF_VQA.pth"
    torch.save({"model": albef_state()}, path)
    enc = build_albef_encoder(**_registry_kwargs(resolve_name("albef")), weights=str(path), config=TINY, tokenizer=tok)
    assert enc.name == "albef" and enc.feature_spec(SAMPLING).architecture == "albef:albef-vqa"


def _registry_kwargs(entry) -> dict:
    """What ``get_encoder`` passes a family builder besides the weights and options."""
    return {"name": entry.name, "model_name": entry.model, "default_tag": entry.default_tag}
