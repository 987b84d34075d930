"""VideoDistill's trainable text tower: rebuilt from a store's spec it is stage one's tower.

The reference is stage one itself: featurize's ``OpenClipEncoder`` (a tiny open_clip config,
random weights) encodes the strings and its spec is the one a store records; the stored
vectors are those rounded to float16, as the store keeps them. The rebuilt tower's output at
step 0 must equal them; another seed must not. In the model, the trainable tower's vectors
replace the cached ones (same logits at step 0), its parameters get gradients and their own
learning rate, and the cached path neither builds a tower nor reads the strings.

Mutations tried (each fails a test here):

1. ``ClipTextTower.forward`` pooling the last position instead of the EOT token
   (``states[:, -1]``): ``test_rebuilt_tower_equals_the_stored_text`` fails.
2. ``_build_clip`` drawing the random init over the text parts only (``init_random_`` on
   ``_clip_text_parts(model)``): ``test_rebuilt_tower_equals_the_stored_text`` fails.
3. ``encode_text`` replacing only the question (candidates left cached) -- the VTM pairs then
   mix stored and tower vectors and no gradient reaches the tower through them:
   ``test_trainable_tower_gets_gradients_and_its_lr`` fails (candidate gradient check).
4. ``lr_scale`` returning 1 for the tower: ``test_trainable_tower_gets_gradients_and_its_lr`` fails.
5. ``text_tower_identity`` accepting a file-weights store without ``--weights``:
   ``test_refusals_name_the_flag`` fails.
6. ``_build_clip`` not loading the checkpoint (open_clip's own init left):
   ``test_file_weights_load_from_the_checkpoint_with_the_recorded_sha256`` fails.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from vqacache.cache_spec import SamplingSpec, WeightsSpec
from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.encoders import get_encoder
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.modules.text_tower import ClipTextTower, text_tower_identity
from vqacache.heads.recipe import parameter_groups

QUESTIONS = ["what colour is the square when the circle appears?", "how many shapes move?"]
CANDIDATES = [["red", "green", "blue"], ["two", "three", "red"]]  # "red" twice: encoded once
SMALL = {"num_frames": 5, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16, "tau": 0.5}


@pytest.fixture(scope="module")
def stage_one(tiny_clip):
    """(spec, stored vectors of every string) from featurize's tiny open_clip encoder."""
    encoder = get_encoder(tiny_clip, "random:3", patches=False)
    spec = encoder.feature_spec(SamplingSpec(fps="15/2"))
    strings = [*QUESTIONS, *(c for cs in CANDIDATES for c in cs)]
    emb = encoder.encode_text(strings)["emb"].half().float()  # the store keeps float16
    return spec, dict(zip(strings, emb, strict=True))


def test_rebuilt_tower_equals_the_stored_text(stage_one):
    spec, stored = stage_one
    tower = ClipTextTower(text_tower_identity(spec))
    strings = list(stored)
    with torch.no_grad():
        out = tower(strings)  # (S, E)
    expect = torch.stack([stored[s] for s in strings])
    assert out.shape == expect.shape == (len(strings), 32)
    torch.testing.assert_close(out, expect, rtol=2e-3, atol=1e-3)  # float16 rounding of the stored vectors
    other = dataclasses.replace(spec, weights=WeightsSpec("random", "random:4"))
    with torch.no_grad():
        assert (ClipTextTower(text_tower_identity(other))(strings) - expect).abs().max() > 0.05


def test_file_weights_load_from_the_checkpoint_with_the_recorded_sha256(stage_one, tiny_clip, tmp_path):
    """A store made from a checkpoint file: ``--weights PATH`` (sha256 checked) rebuilds the same tower."""
    spec, stored = stage_one
    path = tmp_path / "tiny.pt"
    torch.save(get_encoder(tiny_clip, "random:3", patches=False).model.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    file_spec = dataclasses.replace(spec, weights=WeightsSpec("file", f"sha256:{digest}"))
    identity = text_tower_identity(file_spec, str(path))
    assert identity["checkpoint"] == str(path) and identity["weights"] == f"sha256:{digest}"
    with torch.no_grad():
        out = ClipTextTower(identity)(list(stored))
    torch.testing.assert_close(out, torch.stack(list(stored.values())), rtol=2e-3, atol=1e-3)


def _batch(stored, B=2, N=5):
    g = torch.Generator().manual_seed(0)
    C = max(len(c) for c in CANDIDATES)
    cand = torch.zeros(B, C, 32)
    for b, cs in enumerate(CANDIDATES):
        cand[b, : len(cs)] = torch.stack([stored[c] for c in cs])
    return {"cls": torch.randn(B, N, 12, generator=g), "patch": torch.randn(B, N, 3, 8, generator=g),
            "frame_mask": torch.ones(B, N, dtype=torch.bool), "text": torch.stack([stored[q] for q in QUESTIONS]),
            "cand": cand, "cand_mask": torch.ones(B, C, dtype=torch.bool), "answer": torch.tensor([0, 1]),
            "question": list(QUESTIONS), "candidates": [list(c) for c in CANDIDATES]}


def _model(spec, **kw):
    m = get_method("videodistill")
    args = method_args(m, {**SMALL, **kw})
    args = {**args, **m.prepare(args, _Stores(spec))}
    torch.manual_seed(0)
    return m.build(args, {"cls_dim": 12, "text_dim": 32, "num_patches": 3, "patch_dim": 8, "num_answers": 0}), args


class _Stores:
    def __init__(self, spec):
        self.spec = spec

    def store(self, role):
        return self


@pytest.mark.parametrize("head", ["vtm", "cosine"])
def test_step_zero_logits_equal_the_cached_path(stage_one, head):
    spec, stored = stage_one
    batch = _batch(stored)
    cached, args = _model(spec, mc_head=head)
    trainable, targs = _model(spec, mc_head=head, text_tower="trainable")
    assert "text_tower_identity" not in args and not any("text_tower" in n for n, _ in cached.named_parameters())
    assert get_method("videodistill").data(targs)["text"] == "strings" and "text" not in get_method("videodistill").data(args)
    cached.eval(), trainable.eval()
    with torch.no_grad():
        a = cached(batch)["logits"]
        b = trainable(batch)["logits"]
        scrambled = cached({**batch, "question": ["x", "y"], "candidates": [["z"] * 3, ["w"] * 3]})["logits"]
    torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-3)  # the same text at step 0 (float16 apart)
    assert torch.equal(scrambled, a)  # the cached path never reads the strings


def test_trainable_tower_gets_gradients_and_its_lr(stage_one):
    spec, stored = stage_one
    model, args = _model(spec, text_tower="trainable", text_lr_scale=0.1)
    batch = _batch(stored)
    out = model(batch)
    torch.nn.functional.cross_entropy(out["logits"], batch["answer"]).backward()
    tower = {n: p for n, p in model.named_parameters() if n.startswith("text_tower.")}
    assert tower and all(p.grad is not None for p in tower.values())
    assert tower["text_tower.tower.token_embedding.weight"].grad.abs().sum() > 0

    # candidates alone (question fixed) move the logits through the tower: a candidate's string gets a gradient
    ids = model.text_tower.tokenizer(["red"])[0]  # (77,) SOT, "red", EOT, padding
    model.zero_grad()
    model(batch)["logits"][0, 0].backward()
    assert model.text_tower.tower.token_embedding.weight.grad[ids[1]].abs().sum() > 0  # "red"'s token

    groups = parameter_groups(model, {"lr": 1e-3, "weight_decay": 0.01})
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert all(lr_of[id(p)] == pytest.approx(1e-4) for p in tower.values())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for n, p in model.named_parameters() if n not in tower)


def test_refusals_name_the_flag(stage_one, tmp_path):
    spec, _ = stage_one
    file_spec = dataclasses.replace(spec, weights=WeightsSpec("file", "sha256:" + "0" * 64))
    with pytest.raises(UsageError, match="pass --weights PATH"):
        text_tower_identity(file_spec)
    wrong = tmp_path / "other.pt"
    wrong.write_bytes(b"not these weights")
    with pytest.raises(UsageError, match=r"--weights .*other.pt is not .*sha256 differs"):
        text_tower_identity(file_spec, str(wrong))
    with pytest.raises(UsageError, match="open_clip encoder"):
        text_tower_identity(dataclasses.replace(spec, architecture="vqacache.heads.synthetic/temporal-v1"))
    m = get_method("videodistill")
    with pytest.raises(UsageError, match="text_tower='frozen'.*valid: cached, trainable"):
        m.check(method_args(m, {"text_tower": "frozen"}))
    with pytest.raises(UsageError, match="--weights is for videodistill's --method-arg text_tower=trainable"):
        m.check(method_args(m, {"weights": "x.pt"}))
    with pytest.raises(UsageError, match="text_lr_scale=0.0: must be positive"):
        m.check(method_args(m, {"text_lr_scale": 0.0}))
