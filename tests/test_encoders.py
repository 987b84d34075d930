"""Encoder registry, weights resolution and parity with open_clip's own forward passes.

Everything runs offline with random weights. Most tests use a tiny open_clip config
(``vqacache-tiny``: ViT with 224 px input and 16 px patches, so the same 14x14 grid, the same
transform and the same code path as ViT-B-16, but 2 narrow layers); ``clip-b16`` itself is
built once for its parity test.

Tolerances, and where they come from:

* same input tensor, our forward vs open_clip's: float32 with possibly different kernels for
  the same maths, so ``atol = 1e-5 * scale`` (observed: exact zeros);
* our tensor preprocessing vs open_clip's PIL transform: PIL resamples 8-bit images in fixed
  point, we in float32 then round, so a pixel may be one grey level off (two where an upscale
  compounds the two passes): max |diff| <= 2/255 before normalisation, and few pixels differ;
* end to end (frames -> cls, through both preprocessings): cosine > 0.999 per frame.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import open_clip
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import PreprocessCfg, image_transform_v2
from vqacache.cache_spec.errors import UnknownName, UsageError, VqaCacheError
from vqacache.cache_spec.spec import FeatureSpec, SamplingSpec, WeightsSpec
from vqacache.featurize.encoders import REGISTERED, Encoder, get_encoder, list_encoders
from vqacache.featurize.encoders import weights as weights_mod
from vqacache.featurize.encoders.open_clip_encoder import unsupported_reason

TINY = "vqacache-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2},
}
TEXTS = ["what is the man doing?", "", "a dog", "why did the girl in red pick up the ball after the boy fell"]
SAMPLING = SamplingSpec("15/2")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny config, registered with open_clip (``open_clip.list_models()``)."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> Encoder:
    return get_encoder(f"open_clip:{TINY}", "random:0")


@pytest.fixture(scope="module")
def b16() -> Encoder:
    return get_encoder("clip-b16", "random:0")


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Natural-ish frames: smooth colour fields plus a little noise, uint8 (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in small])
    noise = rng.integers(-12, 13, smooth.shape)
    return np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)


def _pil_batch(enc: Encoder, frames: np.ndarray) -> torch.Tensor:
    """open_clip's own eval transform (what create_model_and_transforms returns), per PIL image."""
    transform = image_transform_v2(PreprocessCfg(**enc.model.visual.preprocess_cfg), is_train=False)
    return torch.stack([transform(Image.fromarray(f)) for f in frames])


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


# -- registry -------------------------------------------------------------------------------


def test_registered_entries_are_openai_vits_of_the_supported_kind() -> None:
    assert list(REGISTERED) == ["clip-b16", "clip-b32", "clip-l14"]
    assert list_encoders()[-1] == "open_clip:MODEL"
    for entry in REGISTERED.values():
        assert unsupported_reason(open_clip.get_model_config(entry.model)) is None
        tag_cfg = open_clip.get_pretrained_cfg(entry.model, entry.default_tag)
        assert tag_cfg["quick_gelu"] is True and tag_cfg["resize_mode"] == "shortest"


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownName) as err:
        get_encoder("clip-b17")
    msg = str(err.value)
    assert "clip-b16" in msg and "clip-b32" in msg and "clip-l14" in msg and "open_clip:MODEL" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, VqaCacheError)
    with pytest.raises(UnknownName, match="ViT-B-16"):
        get_encoder("open_clip:ViT-B-17", "random")


def test_unsupported_models_and_bad_options_are_usage_errors(tiny: Encoder) -> None:
    with pytest.raises(UsageError, match="ResNet"):
        get_encoder("open_clip:RN50", "random")
    with pytest.raises(UsageError, match="--weights"):  # parametric names have no default tag
        get_encoder(f"open_clip:{TINY}")
    with pytest.raises(UsageError, match="random:SEED"):
        get_encoder(f"open_clip:{TINY}", "random:x")
    with pytest.raises(UsageError, match="no such file"):
        get_encoder(f"open_clip:{TINY}", "/nonexistent/model.pt")
    with pytest.raises(UsageError, match="laion2b_s34b_b88k"):  # unknown tag lists the real ones
        get_encoder("clip-b16", "laion9b")
    with pytest.raises(UsageError, match="does not divide the 14x14"):
        get_encoder(f"open_clip:{TINY}", "random", patch_pool=3)


def test_name_and_spec(tiny: Encoder) -> None:
    assert tiny.name == "open_clip-vqacache-tiny"
    spec = tiny.feature_spec(SAMPLING, dtype="float16")
    assert spec.architecture == f"open_clip:{TINY}"
    assert spec.weights.source == "random" and spec.weights.identity == "random:0"
    assert spec.preprocess.decode_short_side == 256 and spec.preprocess.decode_interpolation == "bilinear"
    assert (spec.preprocess.resize_short_side, spec.preprocess.crop_size) == (224, 224)
    assert spec.preprocess.interpolation == "bicubic" and spec.preprocess.crop == "center"
    assert spec.outputs.patch_layer == "post-ln" and spec.outputs.text_context == 77
    assert spec.compute_dtype == "float32"
    assert spec.extra["model_cfg"]["quick_gelu"] is False  # no tag: the config's own activation
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert tiny.dims == {"cls": (32,), "cls_hidden": (64,), "patch": (196, 64), "text": (32,), "text_tokens": (48,)}


def test_clip_b16_spec_records_openai_preprocessing_and_quick_gelu(b16: Encoder) -> None:
    spec = b16.feature_spec(SAMPLING)
    assert b16.name == "clip-b16" and spec.architecture == "open_clip:ViT-B-16"
    assert spec.preprocess.mean == OPENAI_DATASET_MEAN and spec.preprocess.std == OPENAI_DATASET_STD
    assert spec.preprocess.interpolation == "bicubic"
    assert spec.extra["model_cfg"]["quick_gelu"] is True  # from the openai tag, as trained
    assert b16.dims == {"cls": (512,), "cls_hidden": (768,), "patch": (196, 768), "text": (512,), "text_tokens": (512,)}


# -- parity with open_clip -------------------------------------------------------------------


def test_tensor_preprocessing_matches_open_clip_pil_transform(tiny: Encoder) -> None:
    std = torch.tensor(tiny.transform.std).view(1, 3, 1, 1)
    for h, w in [(256, 455), (256, 341), (341, 256), (120, 160), (224, 398), (480, 640)]:
        frames = _frames(2, h, w, seed=h + w)
        ours, ref = tiny.transform(frames), _pil_batch(tiny, frames)
        assert ours.shape == ref.shape == (2, 3, 224, 224)
        levels = ((ours - ref) * std * 255).abs()  # difference in grey levels
        assert levels.max() <= 2.0 + 1e-3, (h, w)
        assert (levels > 0.5).float().mean() < 0.02, (h, w)


def _check_frames_parity(enc: Encoder, n: int) -> None:
    """encode_frames vs open_clip's forward on the same tensor, and end to end via PIL."""
    model = enc.model
    frames = _frames(n, 256, 341, seed=1)
    out = enc.encode_frames(frames)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "cls": (n, *enc.dims["cls"]), "cls_hidden": (n, *enc.dims["cls_hidden"]), "patch": (n, *enc.dims["patch"])
    }
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in out.values())

    x = enc.transform(frames)  # same input tensor: the forward passes must agree to fp32 noise
    model.visual.output_tokens = True  # open_clip's token output: visual(x) -> (encode_image(x), tokens)
    try:
        with torch.no_grad():
            ref_cls, ref_tokens = model.visual(x)
    finally:
        model.visual.output_tokens = False
    scale = float(ref_cls.abs().max())
    torch.testing.assert_close(out["cls"], ref_cls, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(out["patch"], ref_tokens, atol=1e-5 * float(ref_tokens.abs().max()), rtol=1e-5)
    with torch.no_grad():
        projected = out["cls_hidden"] @ model.visual.proj
    torch.testing.assert_close(projected, out["cls"], atol=1e-5 * scale, rtol=1e-5)

    with torch.no_grad():  # end to end: open_clip's PIL transform + encode_image
        ref_pil = model.encode_image(_pil_batch(enc, frames))
    assert _cos(out["cls"], ref_pil).min() > 0.999


def _check_text_parity(enc: Encoder) -> None:
    """encode_text vs open_clip's tokenizer + encode_text; EOT state @ text_projection == emb."""
    out = enc.encode_text(TEXTS)
    ids = open_clip.get_tokenizer(enc.model_name)(TEXTS)
    lengths = (ids != 0).sum(dim=1)  # SOT .. EOT, no padding
    assert out["length"].dtype == torch.int64 and out["length"].tolist() == lengths.tolist()
    assert out["tokens"].shape == (len(TEXTS), int(lengths.max()), *enc.dims["text_tokens"])
    assert out["emb"].shape == (len(TEXTS), *enc.dims["text"])
    with torch.no_grad():
        ref = enc.model.encode_text(ids)
        eot = out["tokens"][torch.arange(len(TEXTS)), out["length"] - 1] @ enc.model.text_projection
    scale = float(ref.abs().max())
    torch.testing.assert_close(out["emb"], ref, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(eot, out["emb"], atol=1e-5 * scale, rtol=1e-5)


def test_encode_frames_matches_open_clip_tiny(tiny: Encoder) -> None:
    _check_frames_parity(tiny, n=2)


def test_encode_frames_matches_open_clip_clip_b16(b16: Encoder) -> None:
    _check_frames_parity(b16, n=1)  # a ViT-B/16 forward costs ~0.3 s per frame on 2 cores
    _check_text_parity(b16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip-b16", "clip-b32", "clip-l14"])
def test_every_registered_encoder_matches_open_clip(name: str) -> None:
    enc = get_encoder(name, "random:0")
    _check_frames_parity(enc, n=2)
    _check_text_parity(enc)


def test_encode_text_matches_open_clip(tiny: Encoder) -> None:
    _check_text_parity(tiny)
    empty = tiny.encode_text([])
    assert empty["emb"].shape == (0, 32) and empty["tokens"].shape == (0, 0, 48) and empty["length"].shape == (0,)


def test_patch_pool_2_averages_the_14x14_grid(tiny_dir: Path, tiny: Encoder) -> None:
    pooled = get_encoder(f"open_clip:{TINY}", "random:0", patch_pool=2)
    frames = _frames(2, 240, 320, seed=2)
    out, full = pooled.encode_frames(frames), tiny.encode_frames(frames)
    assert out["patch"].shape == (2, 49, 64) and pooled.dims["patch"] == (49, 64)
    grid = full["patch"].reshape(2, 14, 14, 64).permute(0, 3, 1, 2)  # row-major tokens -> (N, W, 14, 14)
    expected = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)  # (N, 49, W)
    torch.testing.assert_close(out["patch"], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["cls"], full["cls"])
    assert pooled.feature_spec(SAMPLING).outputs.patch_pool == 2

    no_patches = get_encoder(f"open_clip:{TINY}", "random:0", patches=False, patch_pool=2)
    assert set(no_patches.encode_frames(frames)) == {"cls", "cls_hidden"} and "patch" not in no_patches.dims
    outputs = no_patches.feature_spec(SAMPLING).outputs
    assert outputs.patch_layer is None and outputs.patch_pool == 1  # the knob changes nothing


def test_bfloat16_autocast_is_recorded_and_close(tiny_dir: Path, tiny: Encoder) -> None:
    bf16 = get_encoder(f"open_clip:{TINY}", "random:0", compute_dtype="bfloat16")
    assert bf16.feature_spec(SAMPLING).compute_dtype == "bfloat16"
    frames = _frames(2, 256, 256, seed=3)
    out = bf16.encode_frames(frames)
    assert out["cls"].dtype == torch.float32
    assert _cos(out["cls"], tiny.encode_frames(frames)["cls"]).min() > 0.99


# -- weights ---------------------------------------------------------------------------------


def state_checksum(model: torch.nn.Module) -> str:
    """sha256 over every (name, tensor bytes) of a state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


_FRESH_PROCESS = """
import hashlib, inspect, json, sys, time
import numpy as np, torch, open_clip
import vqacache.featurize.encoders.open_clip_encoder  # imports done before any timing
from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import SamplingSpec
from vqacache.featurize.encoders import get_encoder

folder, checksum_src = sys.argv[1], sys.argv[2]
exec(checksum_src)
result = {}
import socket
attempts = []
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def _refuse(*args, **kwargs):
    attempts.append(repr(args[1:]))
    raise OSError("network refused by the test")
socket.socket.connect, socket.getaddrinfo = _refuse, _refuse
try:
    get_encoder("clip-b16")  # default weights: ViT-B-16/openai, not cached, offline
    result["offline_error"] = None
except UsageError as exc:
    result["offline_error"] = str(exc)
socket.socket.connect, socket.getaddrinfo = _connect, _getaddrinfo
result["offline_network_attempts"] = attempts

torch.manual_seed(12345)  # another global RNG state must not matter
open_clip.add_model_config(folder)
enc = get_encoder("open_clip:vqacache-tiny", "random:0")
out = enc.encode_frames(np.load(folder + "/frames.npy"))
result["cls"] = out["cls"].tolist()
result["fingerprint"] = enc.feature_spec(SamplingSpec("15/2")).fingerprint()
result["state"] = state_checksum(enc.model)
print(json.dumps(result))
"""


@pytest.fixture(scope="module", autouse=True)
def _fresh_process_started(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    """Start the fresh interpreter with the module, so its imports overlap the other tests.

    It runs offline (HF_HUB_OFFLINE=1) with an empty Hugging Face cache: it tries the default
    pretrained weights, then builds the tiny model with random:0. One process answers both
    questions: an interpreter start with torch and open_clip costs many seconds."""
    np.save(tiny_dir / "frames.npy", _frames(2, 256, 341, seed=4))
    home = tmp_path_factory.mktemp("empty_cache")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), XDG_CACHE_HOME=str(home / "xdg"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _FRESH_PROCESS, str(tiny_dir), inspect.getsource(state_checksum)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    yield proc
    if proc.poll() is None:  # a test before it failed hard: don't leave it running
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def fresh_process(_fresh_process_started: subprocess.Popen) -> dict:
    """The fresh interpreter's answers (see ``_FRESH_PROCESS``)."""
    stdout, stderr = _fresh_process_started.communicate(timeout=300)
    assert _fresh_process_started.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_random_weights_are_the_same_in_a_fresh_process(fresh_process: dict, tiny_dir: Path, tiny: Encoder) -> None:
    assert fresh_process["state"] == state_checksum(tiny.model)
    assert fresh_process["fingerprint"] == tiny.feature_spec(SAMPLING).fingerprint()
    frames = np.load(tiny_dir / "frames.npy")
    torch.testing.assert_close(torch.tensor(fresh_process["cls"]), tiny.encode_frames(frames)["cls"], atol=1e-5, rtol=1e-5)
    before = torch.random.get_rng_state()
    get_encoder(f"open_clip:{TINY}", "random:0")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone


def test_offline_pretrained_fails_fast_and_names_weights_option(fresh_process: dict) -> None:
    """HF_HUB_OFFLINE=1 and an empty cache: one clear one-line UsageError, without trying the
    network (what made it slow: retries), checked instead of timing it."""
    error = fresh_process["offline_error"]
    assert error is not None, "pretrained weights loaded offline from an empty cache?"
    assert "ViT-B-16/openai" in error and "--weights" in error and "\n" not in error
    assert fresh_process["offline_network_attempts"] == []


def test_checkpoint_file_loads_by_path_and_is_named_by_content(tmp_path: Path, tiny_dir: Path, tiny: Encoder) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = get_encoder(f"open_clip:{TINY}", str(path))
    spec = loaded.feature_spec(SAMPLING)
    assert spec.weights.source == "file"
    assert spec.weights.identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    frames = _frames(2, 256, 341, seed=5)
    torch.testing.assert_close(loaded.encode_frames(frames), tiny.encode_frames(frames), atol=0, rtol=0)
    torch.testing.assert_close(loaded.encode_text(TEXTS), tiny.encode_text(TEXTS), atol=0, rtol=0)

    seed1 = get_encoder(f"open_clip:{TINY}", "random:1")
    assert not torch.allclose(seed1.encode_frames(frames)["cls"], tiny.encode_frames(frames)["cls"])
    fingerprints = {e.feature_spec(SAMPLING).fingerprint() for e in (tiny, seed1, loaded)}
    assert len(fingerprints) == 3
    assert get_encoder(f"open_clip:{TINY}", "random").feature_spec(SAMPLING) == tiny.feature_spec(SAMPLING)

    bad = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, bad)
    with pytest.raises(UsageError, match="not an open_clip"):
        get_encoder(f"open_clip:{TINY}", str(bad))


def test_pretrained_tag_loads_from_the_hub_cache_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dir: Path, tiny: Encoder
) -> None:
    """The real tag path without a network: a tag of the tiny model whose hub repo is cached.
    Its preprocessing and QuickGELU come from the tag, and it is recorded by tag and file content."""
    from huggingface_hub import constants
    from open_clip import pretrained as oc_pretrained
    from open_clip.transformer import QuickGELU
    from safetensors.torch import save_file

    tag_cfg = {"url": "", "hf_hub": "vqacache/tiny-test/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
               "interpolation": "bilinear", "resize_mode": "shortest", "quick_gelu": True}
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"testtag": tag_cfg})
    repo = tmp_path / "models--vqacache--tiny-test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    weights_file = repo / "snapshots" / ("0" * 40) / "open_clip_model.safetensors"
    save_file(dict(tiny.model.state_dict()), weights_file)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    enc = get_encoder(f"open_clip:{TINY}", "TestTag")  # open_clip's tag normalisation applies
    spec = enc.feature_spec(SAMPLING)
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert spec.weights == WeightsSpec("pretrained", f"testtag@sha256:{digest}")  # tag and content
    assert spec.preprocess.mean == (0.5, 0.5, 0.5) and spec.preprocess.std == (0.25, 0.25, 0.25)
    assert spec.preprocess.interpolation == "bilinear"
    assert spec.extra["model_cfg"]["quick_gelu"] is True and "random_init" not in spec.extra
    assert isinstance(enc.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert state_checksum(enc.model) == state_checksum(tiny.model)


def test_unreachable_hub_fails_fast_without_offline_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network_attempts: list[str]
) -> None:
    """No HF_HUB_OFFLINE, nothing cached, host unreachable: the probe answers, not 5 hub retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights_mod, "_reachable", lambda host: False)
    with pytest.raises(UsageError, match="--weights PATH"):
        get_encoder("clip-b32")
    assert network_attempts == []  # the probe answered: no hub retries
