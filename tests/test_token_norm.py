"""One ViT-g cache for every BLIP-2-family checkpoint (issue 12, the cache side, part 1).

``vitg`` stores the trunk's output normalised without the LayerNorm's affine part and records
the featurizing checkpoint's gamma, beta, eps and trunk digest; stage two's
:class:`VisionLayerNorm` applies any checkpoint's (gamma', beta') to it exactly. The towers
are tiny random ``Blip2VisionModel``\\ s (``tests/tiny_blip.py``), references come from
transformers' own forward pass.

Mutations tried (each fails a test here):
- affine-free tokens computed with the affine kept (``post_layernorm`` applied as is);
- ``eps`` left out of the normalisation (``var`` instead of ``var + eps``), on a tower with eps 0.1;
- the affine path without ``- beta`` (``gamma'/gamma * y + beta'``);
- the affine path multiplying by ``gamma/gamma'`` (ratio inverted);
- the near-zero check on ``max |gamma|`` instead of ``min``;
- ``trunk_digest`` not skipping ``post_layernorm.*``; skipping nothing else but hashing names only.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_blip import write_tiny_blip2

from vqacache.cache_spec import SamplingSpec, SpecMismatch, open_store
from vqacache.cache_spec.token_norm import UNKNOWN, TokenNorm, require_same_trunk, token_norm_of, trunk_digest
from vqacache.featurize.encoders import Encoder, get_encoder
from vqacache.heads.modules.vision_layernorm import MIN_ABS_GAMMA, VisionLayerNorm

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format_v1.zarr"


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_blip2(tmp_path_factory.mktemp("blip2"))


@pytest.fixture(scope="module")
def vitg(blip2_dir: Path) -> Encoder:
    return get_encoder("vitg", str(blip2_dir))


def _frames(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 240, 320, 3), dtype=np.uint8)


def _stored(enc: Encoder, frames: np.ndarray) -> torch.Tensor:
    """What the store holds per frame, as one token sequence (N, 1 + P, W)."""
    out = enc.encode_frames(frames)
    return torch.cat([out["cls_hidden"][:, None], out["patch"]], dim=1)


def _reference(tower: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(trunk output before post_layernorm, last_hidden_state) from transformers' own forward."""
    with torch.no_grad():
        out = tower(pixel_values=x, output_hidden_states=True)
    return out.hidden_states[-1], out.last_hidden_state


def _other_ln(tower: torch.nn.Module, seed: int = 1) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A copy of ``tower`` with another post_layernorm (another BLIP-2-family checkpoint)."""
    g = torch.Generator().manual_seed(seed)
    width = tower.post_layernorm.weight.shape[0]
    gamma2 = 0.5 + torch.rand(width, generator=g)
    beta2 = torch.randn(width, generator=g)
    other = copy.deepcopy(tower)
    with torch.no_grad():
        other.post_layernorm.weight.copy_(gamma2)
        other.post_layernorm.bias.copy_(beta2)
    return other, gamma2, beta2


# -- what vitg stores ----------------------------------------------------------------------------


def test_vitg_stores_the_affine_free_normalised_trunk_output(vitg: Encoder) -> None:
    frames = _frames()
    stored = _stored(vitg, frames)
    trunk, _ = _reference(vitg.model, vitg.transform(frames))
    x = trunk.double()
    eps = vitg.model.post_layernorm.eps
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    torch.testing.assert_close(stored.double(), expected, atol=2e-5, rtol=1e-5)
    ln = torch.nn.LayerNorm(x.shape[-1], eps=eps, elementwise_affine=False)  # post_layernorm with weight 1, bias 0
    torch.testing.assert_close(stored, ln(trunk), atol=1e-5, rtol=1e-5)
    assert stored.mean(-1).abs().max() < 1e-4 and (stored.std(-1, unbiased=False) - 1).abs().max() < 1e-2


def test_eps_is_the_towers_own(tmp_path: Path) -> None:
    """A tower with eps 0.1 (not the default 1e-6 or 1e-5): a dropped or wrong eps shows."""
    folder = write_tiny_blip2(tmp_path / "eps")
    import json

    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_config"]["layer_norm_eps"] = 0.1
    (folder / "config.json").write_text(json.dumps(cfg))
    enc = get_encoder("vitg", str(folder))
    assert enc.model.post_layernorm.eps == 0.1 and enc.token_norm.eps == 0.1
    frames = _frames(1, seed=5)
    trunk, last = _reference(enc.model, enc.transform(frames))
    x = trunk.double()
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 0.1)
    torch.testing.assert_close(_stored(enc, frames).double(), expected, atol=2e-5, rtol=1e-5)
    vln = VisionLayerNorm(enc.token_norm, enc.model.post_layernorm.weight, enc.model.post_layernorm.bias)
    torch.testing.assert_close(vln(_stored(enc, frames)), last, atol=1e-5, rtol=1e-5)


def test_spec_records_the_form_gamma_beta_eps_and_trunk(vitg: Encoder, blip2_dir: Path, tmp_path: Path) -> None:
    spec = vitg.feature_spec(SamplingSpec("15/2"))
    assert spec.extra["tokens"] == "layernorm-affine-free"
    assert spec.outputs.patch_layer == "post-ln-affine-free" and spec.outputs.cls == spec.outputs.cls_hidden == "post-ln-affine-free-cls"
    norm = token_norm_of(spec)
    ln = vitg.model.post_layernorm
    assert norm.kind == "affine-free" and norm.eps == ln.eps
    np.testing.assert_array_equal(norm.gamma, ln.weight.detach().numpy())  # exact bits through JSON
    np.testing.assert_array_equal(norm.beta, ln.bias.detach().numpy())
    store = open_store(tmp_path / "s.zarr", "a", spec=spec, dataset="demo")
    assert token_norm_of(store) == norm == TokenNorm.from_extra(norm.to_extra())
    assert token_norm_of(open_store(tmp_path / "s.zarr")).trunk_sha256 == norm.trunk_sha256

    from safetensors.numpy import load_file  # stage two computes the digest from a checkpoint file

    tensors = {}
    for f in sorted(blip2_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    assert trunk_digest(tensors, prefix="vision_model.") == norm.trunk_sha256


def test_blip_keeps_last_hidden_state_and_old_stores_read_as_unknown_affine(tmp_path: Path) -> None:
    from tiny_blip import write_tiny_blip_vqa

    blip = get_encoder("blip", str(write_tiny_blip_vqa(tmp_path / "blip", image_size=384, tokenizer=False)))
    spec = blip.feature_spec(SamplingSpec("15/2"))
    assert "token_norm" not in spec.extra and spec.extra["tokens"] == "last_hidden_state"
    assert spec.outputs.patch_layer == "post-ln"
    assert token_norm_of(spec) == UNKNOWN
    old = token_norm_of(open_store(FIXTURE))  # format v1 fixture: written before the record
    assert old.kind == "affine" and old.gamma is None and old.beta is None and old.eps is None and old.trunk_sha256 is None


# -- VisionLayerNorm ------------------------------------------------------------------------------


def test_own_layernorm_reproduces_last_hidden_state(vitg: Encoder) -> None:
    """The exactness test the issue asks for: stored tokens + the featurizing checkpoint's own
    LayerNorm = the tower's ``last_hidden_state``."""
    frames = _frames(seed=2)
    ln = vitg.model.post_layernorm
    vln = VisionLayerNorm(vitg.token_norm, ln.weight, ln.bias)
    _, last = _reference(vitg.model, vitg.transform(frames))
    torch.testing.assert_close(vln(_stored(vitg, frames)), last, atol=1e-5, rtol=1e-5)


def test_another_checkpoints_layernorm_equals_that_tower(vitg: Encoder) -> None:
    frames = _frames(seed=3)
    other, gamma2, beta2 = _other_ln(vitg.model)
    _, last_other = _reference(other, vitg.transform(frames))
    vln = VisionLayerNorm(vitg.token_norm, gamma2, beta2)
    torch.testing.assert_close(vln(_stored(vitg, frames)), last_other, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(last_other, _reference(vitg.model, vitg.transform(frames))[1], atol=1e-2)
    assert isinstance(vln.gamma, torch.nn.Parameter) and vln.gamma.requires_grad and vln.beta.requires_grad
    vln(_stored(vitg, frames)).sum().backward()  # trainable, as VLAP trains it
    assert vln.gamma.grad is not None and vln.beta.grad is not None


def test_old_affine_stores_take_another_layernorm_through_gamma_and_beta(vitg: Encoder) -> None:
    """An old-form store (``y = gamma * n + beta``, gamma and beta known) -> ``gamma'/gamma *
    (y - beta) + beta'``, checked against the other tower itself and a per-channel loop."""
    frames = _frames(seed=4)
    first, gamma, beta = _other_ln(vitg.model, seed=7)  # the featurizing checkpoint of the old store
    second, gamma2, beta2 = _other_ln(vitg.model, seed=8)  # the checkpoint stage two loads
    x = vitg.transform(frames)
    _, y_old = _reference(first, x)  # what an old vitg store held
    _, want = _reference(second, x)
    stored = TokenNorm("affine", gamma.numpy(), beta.numpy(), first.post_layernorm.eps, None)
    got = VisionLayerNorm(stored, gamma2, beta2)(y_old)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    loop = torch.empty_like(y_old)
    for c in range(y_old.shape[-1]):
        loop[..., c] = gamma2[c] * (y_old[..., c] - beta[c]) / gamma[c] + beta2[c]
    torch.testing.assert_close(got, loop, atol=1e-6, rtol=1e-6)


def test_near_zero_gamma_and_unknown_gamma_are_refused_in_one_line() -> None:
    width = 8
    gamma = np.linspace(0.5, 1.5, width).astype(np.float32)
    gamma[3] = MIN_ABS_GAMMA / 2
    with pytest.raises(SpecMismatch, match=r"near zero \(\|gamma\[3\]\|") as err:
        VisionLayerNorm(TokenNorm("affine", gamma, np.zeros(width, np.float32), 1e-6, None), torch.ones(width), torch.zeros(width))
    assert "\n" not in str(err.value)
    gamma[3] = -2 * MIN_ABS_GAMMA  # negative but not near zero: fine
    VisionLayerNorm(TokenNorm("affine", gamma, np.zeros(width, np.float32), 1e-6, None), torch.ones(width), torch.zeros(width))
    with pytest.raises(SpecMismatch, match="re-featurize") as err:
        VisionLayerNorm(UNKNOWN, torch.ones(width), torch.zeros(width))
    assert "\n" not in str(err.value)
    with pytest.raises(SpecMismatch, match="width 8"):
        VisionLayerNorm(TokenNorm("affine", gamma, np.zeros(width, np.float32), 1e-6, None), torch.ones(4), torch.zeros(4))


# -- the trunk digest -----------------------------------------------------------------------------


def test_trunk_digest_follows_the_trunk_not_the_layernorm(vitg: Encoder) -> None:
    state = {k: v.detach().numpy().copy() for k, v in vitg.model.state_dict().items()}
    base = trunk_digest(state)
    assert base == vitg.token_norm.trunk_sha256
    changed_ln = {**state, "post_layernorm.weight": state["post_layernorm.weight"] * 3, "post_layernorm.bias": state["post_layernorm.bias"] + 1}
    assert trunk_digest(changed_ln) == base
    name = "encoder.layers.1.mlp.fc2.weight"
    one = state[name].copy()
    one.flat[5] += 1e-3
    assert trunk_digest({**state, name: one}) != base
    assert trunk_digest({k: v.astype(np.float16).astype(np.float32) for k, v in state.items()}) == trunk_digest(
        {k: v.astype(np.float16) for k, v in state.items()}
    )  # values taken as float32
    assert trunk_digest({**state, "embeddings.position_ids": np.arange(4)}) == base  # integer buffers left out
    assert trunk_digest({f"vision_model.{k}": v for k, v in state.items()} | {"qformer.x": np.ones(2, np.float32)}, prefix="vision_model.") == base
    require_same_trunk(vitg.token_norm, base, what="checkpoint A")
    with pytest.raises(SpecMismatch, match="another vision trunk") as err:
        require_same_trunk(vitg.token_norm, trunk_digest({**state, name: one}), what="checkpoint B")
    assert "\n" not in str(err.value)
    with pytest.raises(SpecMismatch, match="no vision trunk digest"):
        require_same_trunk(UNKNOWN, base, what="checkpoint C")


def test_trunk_digest_format_by_hand() -> None:
    tensors = {"b": np.array([[1.0, 2.0]], dtype=np.float64), "a": np.array([0.5], dtype=np.float16), "post_layernorm.weight": np.ones(2)}
    h = hashlib.sha256()
    h.update(b"a\t1\n" + np.array([0.5], "<f4").tobytes())
    h.update(b"b\t1,2\n" + np.array([1.0, 2.0], "<f4").tobytes())
    assert trunk_digest(tensors) == h.hexdigest()
