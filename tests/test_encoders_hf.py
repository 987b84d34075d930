"""The registry's other families: BLIP-2's ViT-g (``vitg``) and BLIP's ViT (``blip``) through
transformers, EVA-CLIP's ViT-g (``eva01-g14``) through open_clip with a timm trunk.

Everything runs offline. Real towers are far too big to build here (ViT-g has 1B parameters),
so the parity tests use tiny configurations of the same classes, handed over the way a user
would: ``--weights DIR`` holding a ``save_pretrained`` checkpoint (the registry name fixes the
family, the folder brings its config). Tolerances as in ``test_encoders.py``: the same input
tensor gives the library's numbers to float32 noise; through the two preprocessings (ours on
tensors, transformers' image processors on PIL images) cosine > 0.999.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_blip import write_tiny_blip2, write_tiny_blip_vqa

import open_clip
from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.cache_spec.spec import FeatureSpec, SamplingSpec
from vqacache.featurize.encoders import Encoder, get_encoder, list_encoders, resolve_name
from vqacache.featurize.encoders import hf_vision
from vqacache.featurize.encoders.open_clip_encoder import unsupported_reason
from vqacache.featurize.encoders.registry import ENCODERS

SAMPLING = SamplingSpec("15/2")
TEXTS = ["what is the man doing?", "", "a dog"]


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields plus noise, uint8 (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in small])
    return np.clip(smooth.astype(int) + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny full BLIP-2 checkpoint (vision tower + Q-Former + OPT) with its image processor."""
    return write_tiny_blip2(tmp_path_factory.mktemp("blip2"))


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BLIP VQA checkpoint at 384 px (24 x 24 patches, as blip-vqa-base)."""
    return write_tiny_blip_vqa(tmp_path_factory.mktemp("blip"), image_size=384, tokenizer=False)


@pytest.fixture(scope="module")
def vitg(blip2_dir: Path) -> Encoder:
    return get_encoder("vitg", str(blip2_dir))


# -- registry --------------------------------------------------------------------------------


def test_registry_lists_every_family_without_importing_them() -> None:
    names = list_encoders()
    assert names[:3] == ["clip-b16", "clip-b32", "clip-l14"] and names[-1] == "open_clip:MODEL"
    assert {"eva01-g14", "vitg", "blip", "albef"} <= set(names)
    assert ENCODERS["vitg"].default_tag == "Salesforce/blip2-opt-2.7b"
    assert ENCODERS["blip"].default_tag == "Salesforce/blip-vqa-base"
    assert resolve_name("albef").builder == "vqacache.featurize.encoders.albef:build_albef_encoder"
    with pytest.raises(UnknownName) as err:
        resolve_name("vit-g")
    assert "vitg" in str(err.value) and "blip" in str(err.value) and "eva01-g14" in str(err.value)


def test_eva01_g14_is_registered_with_its_open_clip_tag() -> None:
    entry = resolve_name("eva01-g14")
    assert (entry.model, entry.default_tag) == ("EVA01-g-14", "laion400m_s11b_b41k")
    cfg = open_clip.get_model_config("EVA01-g-14")
    assert cfg["vision_cfg"]["timm_model_name"] == "eva_giant_patch14_224" and unsupported_reason(cfg) is None
    assert open_clip.get_pretrained_cfg("EVA01-g-14", "laion400m_s11b_b41k")["resize_mode"] == "shortest"
    assert unsupported_reason(open_clip.get_model_config("RN50")) is not None  # still refused
    assert unsupported_reason(open_clip.get_model_config("ViT-B-16-SigLIP")) is not None


# -- vitg: BLIP-2's ViT-g tower ----------------------------------------------------------------


def test_vitg_stores_the_affine_free_trunk_output_of_the_blip2_vision_model(vitg: Encoder, blip2_dir: Path) -> None:
    """vitg stores ``last_hidden_state`` without post_layernorm's affine part (issue 12): the
    checkpoint's gamma * stored + beta is transformers' ``last_hidden_state``
    (``tests/test_token_norm.py`` checks the normalisation itself)."""
    from transformers import Blip2ForConditionalGeneration, BlipImageProcessorPil

    assert vitg.name == "vitg" and vitg.has_text is False
    assert vitg.dims == {"cls": (32,), "cls_hidden": (32,), "patch": (256, 32)}  # CLS + 16 x 16
    frames = _frames(2, 256, 341, seed=1)
    out = vitg.encode_frames(frames)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"cls": (2, 32), "cls_hidden": (2, 32), "patch": (2, 256, 32)}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in out.values())
    torch.testing.assert_close(out["cls"], out["cls_hidden"], atol=0, rtol=0)  # no projection

    model = Blip2ForConditionalGeneration.from_pretrained(blip2_dir).eval()  # the full model, loaded by transformers
    ln = model.vision_model.post_layernorm
    with torch.no_grad():
        ref = model.vision_model(pixel_values=vitg.transform(frames))  # same input tensor
        cls, patch = ln.weight * out["cls"] + ln.bias, ln.weight * out["patch"] + ln.bias
    torch.testing.assert_close(cls, ref.last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patch, ref.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["cls"], ref.last_hidden_state[:, 0], atol=1e-3)  # the affine part is not in the store
    assert not torch.allclose(cls, ref.pooler_output, atol=1e-3)  # pooler_output: the norm applied twice
    with torch.no_grad():
        torch.testing.assert_close(ref.pooler_output, ln(cls), atol=1e-5, rtol=1e-5)

    pixels = BlipImageProcessorPil.from_pretrained(blip2_dir)(
        images=[Image.fromarray(f) for f in frames], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():  # end to end through transformers' own image processor
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
    assert _cos(cls, hidden[:, 0]).min() > 0.999 and _cos(patch, hidden[:, 1:]).min() > 0.999


def test_vitg_spec_records_architecture_config_weights_and_preprocessing(vitg: Encoder, blip2_dir: Path) -> None:
    spec = vitg.feature_spec(SAMPLING, dtype="float16")
    assert spec.architecture == "transformers:Blip2VisionModel" and spec.encoder == "vitg"
    assert spec.weights.source == "file" and spec.weights.identity.startswith("sha256:")
    cfg = spec.extra["model_cfg"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["image_size"], cfg["patch_size"]) == (32, 2, 224, 14)
    assert "transformers_version" not in json.dumps(cfg)
    assert spec.extra["tokens"] == "layernorm-affine-free" and spec.extra["cls_projection"] == "none"
    assert spec.extra["token_norm"]["kind"] == "affine-free" and len(spec.extra["token_norm"]["trunk_sha256"]) == 64
    assert spec.extra["resize"] == "squash" and spec.preprocess.crop == "none"
    assert (spec.preprocess.resize_short_side, spec.preprocess.crop_size, spec.preprocess.interpolation) == (224, 224, "bicubic")
    assert spec.outputs.text is None and spec.outputs.text_context is None and spec.outputs.patch_layer == "post-ln-affine-free"
    assert spec.compute_dtype == "float32" and "random_init" not in spec.extra
    assert FeatureSpec.from_json(spec.to_json()) == spec


def test_vitg_reads_a_bare_tower_too_and_refuses_other_models(
    tmp_path: Path, vitg: Encoder, blip2_dir: Path, blip_dir: Path
) -> None:
    bare = write_tiny_blip2(tmp_path / "bare", bare=True)  # same seed: the same vision weights
    enc = get_encoder("vitg", str(bare))
    frames = _frames(1, 240, 320, seed=2)
    torch.testing.assert_close(enc.encode_frames(frames), vitg.encode_frames(frames), atol=0, rtol=0)
    assert enc.feature_spec(SAMPLING).extra["model_cfg"] == vitg.feature_spec(SAMPLING).extra["model_cfg"]
    assert enc.feature_spec(SAMPLING).fingerprint() != vitg.feature_spec(SAMPLING).fingerprint()  # other bytes
    with pytest.raises(UsageError, match="'blip' model"):
        get_encoder("vitg", str(blip_dir))
    with pytest.raises(UsageError, match="no config.json"):
        get_encoder("vitg", str(tmp_path))
    with pytest.raises(UsageError, match="no such file"):
        get_encoder("vitg", str(tmp_path / "missing" / "model.safetensors"))
    with pytest.raises(UsageError, match="does not divide the 16x16"):
        get_encoder("vitg", str(blip2_dir), patch_pool=3)
    with pytest.raises(NotImplementedError, match="vision-only"):
        vitg.encode_text(TEXTS)


def test_vitg_patch_pool_averages_the_grid(vitg: Encoder, blip2_dir: Path) -> None:
    pooled = get_encoder("vitg", str(blip2_dir), patch_pool=4)
    frames = _frames(2, 240, 320, seed=3)
    out, full = pooled.encode_frames(frames), vitg.encode_frames(frames)
    assert out["patch"].shape == (2, 16, 32) and pooled.dims["patch"] == (16, 32)
    grid = full["patch"].reshape(2, 16, 16, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.avg_pool2d(grid, 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out["patch"], expected, atol=1e-6, rtol=1e-5)
    assert pooled.feature_spec(SAMPLING).outputs.patch_pool == 4
    no_patches = get_encoder("vitg", str(blip2_dir), patches=False)
    assert set(no_patches.encode_frames(frames)) == {"cls", "cls_hidden"} and "patch" not in no_patches.dims


def test_state_dict_file_and_random_weights_use_the_default_architecture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vitg: Encoder
) -> None:
    from safetensors.torch import save_file

    monkeypatch.setattr(hf_vision, "default_config", lambda tower: vitg.model.config)  # tiny, not 1B
    path = tmp_path / "vision.safetensors"
    save_file({f"vision_model.{k}": v.contiguous() for k, v in vitg.model.state_dict().items()}, path)
    enc = get_encoder("vitg", str(path))
    frames = _frames(1, 256, 256, seed=4)
    torch.testing.assert_close(enc.encode_frames(frames), vitg.encode_frames(frames), atol=0, rtol=0)
    assert enc.feature_spec(SAMPLING).weights.identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    bad = tmp_path / "bad.safetensors"
    save_file({"vision_model.embeddings.class_embedding": torch.zeros(1, 1, 32)}, bad)
    with pytest.raises(UsageError, match="missing key"):
        get_encoder("vitg", str(bad))

    before = torch.random.get_rng_state()
    r0, r0_again, r1 = (get_encoder("vitg", w) for w in ("random", "random:0", "random:1"))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    torch.testing.assert_close(r0.encode_frames(frames), r0_again.encode_frames(frames), atol=0, rtol=0)
    assert not torch.allclose(r0.encode_frames(frames)["cls"], r1.encode_frames(frames)["cls"])
    spec = r0.feature_spec(SAMPLING)
    assert spec.weights.identity == "random:0" and spec.extra["random_init"] == "vqacache-normal-v1"
    assert len({e.feature_spec(SAMPLING).fingerprint() for e in (vitg, enc, r0, r1)}) == 4


# -- hub names: cache only, no network ------------------------------------------------------------


def _offline_empty_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_name_offline_and_not_cached_is_one_line_naming_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network_attempts: list[str]
) -> None:
    _offline_empty_cache(monkeypatch, tmp_path)
    for name, repo in (("vitg", "Salesforce/blip2-opt-2.7b"), ("blip", "Salesforce/blip-vqa-base")):
        with pytest.raises(UsageError) as err:
            get_encoder(name)
        assert network_attempts == []  # fails fast: offline, not one try (nor retry) on the network
        msg = str(err.value)
        assert repo in msg and "--weights" in msg and "offline" in msg and "\n" not in msg
    with pytest.raises(UsageError, match="offline"):
        get_encoder("eva01-g14")  # open_clip's path: same promise


def test_hub_name_loads_from_the_cache_offline_and_records_the_commit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, vitg: Encoder, blip2_dir: Path
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--vqacache--tiny-blip2" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    for f in blip2_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    _offline_empty_cache(monkeypatch, tmp_path)
    enc = get_encoder("vitg", "vqacache/tiny-blip2")
    spec = enc.feature_spec(SAMPLING)
    assert spec.weights.source == "pretrained" and spec.weights.identity == f"vqacache/tiny-blip2@{commit}"
    frames = _frames(1, 240, 320, seed=5)
    torch.testing.assert_close(enc.encode_frames(frames), vitg.encode_frames(frames), atol=0, rtol=0)
    (snapshot / "model.safetensors").unlink()  # config cached, weights not: offline error, no random fallback
    with pytest.raises(UsageError, match="not complete in the Hugging Face cache"):
        get_encoder("vitg", "vqacache/tiny-blip2")


# -- blip: BLIP's ViT tower ---------------------------------------------------------------------


def test_blip_tower_matches_the_vqa_models_vision_model(blip_dir: Path) -> None:
    from transformers import BlipForQuestionAnswering, BlipImageProcessor

    enc = get_encoder("blip", str(blip_dir), patch_pool=2)
    assert enc.transform.size == 384 and enc.transform.resize == "squash"
    assert enc.dims == {"cls": (32,), "cls_hidden": (32,), "patch": (144, 32)}  # 24 x 24 pooled 2 x 2
    frames = _frames(2, 256, 341, seed=6)
    out = enc.encode_frames(frames)
    model = BlipForQuestionAnswering.from_pretrained(blip_dir).eval()
    with torch.no_grad():
        ref = model.vision_model(pixel_values=enc.transform(frames)).last_hidden_state  # (2, 577, 32)
    torch.testing.assert_close(out["cls"], ref[:, 0], atol=1e-5, rtol=1e-5)
    grid = ref[:, 1:].reshape(2, 24, 24, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(out["patch"], torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2),
                               atol=1e-5, rtol=1e-5)
    pixels = BlipImageProcessor()(images=[Image.fromarray(f) for f in frames], return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # transformers' default BLIP processor: 384 x 384, bicubic, CLIP mean/std
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
    assert _cos(out["cls"], hidden[:, 0]).min() > 0.999
    spec = enc.feature_spec(SAMPLING)
    assert spec.architecture == "transformers:BlipVisionModel" and spec.extra["model_cfg"]["image_size"] == 384
    assert enc.has_text is False and "text" not in enc.dims


# -- preprocessing against transformers' BLIP image processors, on real frames --------------------


def _real_frames(videos: Path) -> list[np.ndarray]:
    frames = []
    for path in sorted(videos.iterdir()):
        with av.open(str(path)) as container:
            frames.append(next(container.decode(video=0)).to_ndarray(format="rgb24"))
    return frames


@pytest.mark.parametrize("size", [384, 224])
def test_squash_preprocessing_matches_transformers_blip_processors(shared_videos: Path, size: int) -> None:
    from transformers import BlipImageProcessor, BlipImageProcessorPil

    from vqacache.featurize.encoders.preprocess import ImageTransform

    transform = ImageTransform(size=size, interpolation="bicubic", mean=hf_vision.OPENAI_CLIP_MEAN,
                               std=hf_vision.OPENAI_CLIP_STD, resize="squash")
    std = torch.tensor(transform.std).view(1, 3, 1, 1)
    processors = {"pil": BlipImageProcessorPil(size={"height": size, "width": size}),
                  "torchvision": BlipImageProcessor(size={"height": size, "width": size})}
    for frame in _real_frames(shared_videos):
        ours = transform(frame[None])
        assert ours.shape == (1, 3, size, size)
        for kind, processor in processors.items():
            ref = processor(images=[Image.fromarray(frame)], return_tensors="pt")["pixel_values"]
            levels = ((ours - ref) * std * 255).abs()  # grey levels
            assert levels.max() <= 2.0 + 1e-3, (kind, frame.shape)
            assert (levels > 0.5).float().mean() < 0.01, (kind, frame.shape)


# -- eva01-g14: open_clip with a timm EVA trunk ---------------------------------------------------

TINY_EVA = "vqacache-tiny-eva"


@pytest.fixture(scope="module")
def tiny_eva(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    """EVA01-g-14's layout (CustomTextCLIP, timm EVA trunk with token pooling and its classifier
    head as the projection, open_clip text tower) with a 2-block, 64-wide trunk."""
    from timm.models import register_model
    from timm.models.eva import _create_eva

    def vqacache_tiny_eva(pretrained: bool = False, **kwargs):
        args = dict(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
        return _create_eva("eva_giant_patch14_224", pretrained=False, **dict(args, **kwargs))

    vqacache_tiny_eva.__module__ = __name__
    register_model(vqacache_tiny_eva)
    cfg = json.loads(json.dumps(open_clip.get_model_config("EVA01-g-14")))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"]["timm_model_name"] = "vqacache_tiny_eva"
    cfg["text_cfg"].update(width=48, heads=2, layers=2)
    folder = tmp_path_factory.mktemp("eva_config")
    (folder / f"{TINY_EVA}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return get_encoder(f"open_clip:{TINY_EVA}", "random:0")


def test_eva_trunk_features_match_open_clip_and_timm(tiny_eva: Encoder) -> None:
    model = tiny_eva.model
    assert isinstance(model, open_clip.CustomTextCLIP) and tiny_eva.has_text
    assert tiny_eva.dims == {"cls": (32,), "cls_hidden": (64,), "patch": (196, 64), "text": (32,), "text_tokens": (48,)}
    frames = _frames(2, 256, 341, seed=7)
    out = tiny_eva.encode_frames(frames)
    x = tiny_eva.transform(frames)
    trunk = model.visual.trunk
    with torch.no_grad():
        tokens = trunk.forward_features(x)  # (2, 1 + 196, 64), after the trunk's norm
        ref_cls = model.encode_image(x)
        head = trunk.forward_head(tokens)
    torch.testing.assert_close(out["cls"], ref_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["cls"], head, atol=1e-5, rtol=1e-5)  # timm_proj null: the head projects
    torch.testing.assert_close(out["cls_hidden"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["patch"], tokens[:, 1:], atol=1e-5, rtol=1e-5)

    text = tiny_eva.encode_text(TEXTS)
    ids = open_clip.get_tokenizer(TINY_EVA)(TEXTS)
    with torch.no_grad():
        ref = model.encode_text(ids)
    torch.testing.assert_close(text["emb"], ref, atol=1e-5, rtol=1e-5)
    assert text["tokens"].shape == (3, int((ids != 0).sum(1).max()), 48)
    spec = tiny_eva.feature_spec(SAMPLING)
    assert spec.architecture == f"open_clip:{TINY_EVA}" and spec.extra["model_cfg"]["custom_text"] is True


@pytest.mark.slow
def test_real_size_towers_build_with_random_weights() -> None:
    """The registered towers at full size (ViT-g: 1B parameters, minutes and ~10 GB on a CPU)."""
    frames = _frames(1, 256, 341)
    for name, dims in (("vitg", {"cls": (1408,), "cls_hidden": (1408,), "patch": (256, 1408)}),
                       ("blip", {"cls": (768,), "cls_hidden": (768,), "patch": (576, 768)}),
                       ("eva01-g14", {"cls": (1024,), "cls_hidden": (1408,), "patch": (256, 1408),
                                      "text": (1024,), "text_tokens": (768,)})):
        enc = get_encoder(name, "random")
        assert enc.dims == dims
        assert {k: tuple(v.shape[1:]) for k, v in enc.encode_frames(frames).items()} == {
            k: v for k, v in dims.items() if k in ("cls", "cls_hidden", "patch")}
        del enc
