"""Teacher fine-tuning from cached ALBEF tokens (SpARC A.1/A.4) and the probabilities recomputed
from the cache, on a tiny random ALBEF and a tiny token store written with its own vision pass.

Planted mutations (each made a test here fail):

1. ``cached_images`` with the CLS token left out (a patch token in its place)
   -> ``test_cached_tokens_are_the_vision_pass`` and the recompute test fail [2 failed].
2. ``answer_nll`` counting the padded answer positions too
   -> ``test_answer_nll_is_minus_albefs_loglik`` fails [1 failed].
3. the text layers trained too (in ``trainable_parameters`` and without ``no_grad`` around
   ``encode_text``) -> ``test_finetune_trains_only_fusion_and_decoder`` fails [1 failed]. (Making
   them trainable alone changed nothing: ``no_grad`` already kept their gradients away.)
4. ``albef_state_dict`` numbering the fusion layers from 0 (no ``+ text_layers``)
   -> the strict read-back in ``save_teacher_checkpoint`` refuses it: the checkpoint test fails [1 failed].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_albef_checkpoint import TINY, albef_state, tame, tiny_tokenizer

from vqacache.cache_spec import FeatureSpec, OutputSpec, PreprocessSpec, SamplingSpec, WeightsSpec, open_store
from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.encoders.albef_tokenizer import pre_question, tokenize
from vqacache.featurize.imageqa.albef import AlbefImages, build_albef_teacher
from vqacache.featurize.imageqa.albef_rank import answer_loglik, AnswerTokens
from vqacache.featurize.imageqa.cached import recompute_probabilities
from vqacache.featurize.imageqa.finetune import (
    FinetuneConfig, answer_nll, cached_images, check_token_store, examples, finetune, save_teacher_checkpoint,
)
from vqacache.featurize.imageqa.teacher import TeacherQuestion

QUESTIONS = [("why did the girl sit down ?", ["run", "jump", "sit"], 2), ("where is the cat ?", ["room", "desert"], 0)]
N_FRAMES = 6


def token_spec(patch_pool: int = 1) -> FeatureSpec:
    return FeatureSpec(
        encoder="albef", architecture="albef:tiny-test", weights=WeightsSpec("random", "random:3"),
        preprocess=PreprocessSpec(decode_short_side=None, decode_interpolation="bilinear", resize_short_side=64,
                                  interpolation="bicubic", crop="center", crop_size=64, mean=(0.5, 0.5, 0.5),
                                  std=(0.5, 0.5, 0.5)),
        sampling=SamplingSpec("7.5"),
        outputs=OutputSpec(cls="post-ln-cls", cls_hidden="post-ln-cls", patch_layer="post-ln",
                           patch_pool=patch_pool, text=None, text_context=None),
        dtype="float32",
    )


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("albef") / "ALBEF_VQA.pth"
    torch.save({"model": tame(albef_state(seed=3))}, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, base, tok):
    """Two videos of 6 frames: their tokens from the tiny teacher's own vision pass, and the questions."""
    teacher = build_albef_teacher(str(base), config=TINY, tokenizer=tok, chunk_size=16)
    path = tmp_path_factory.mktemp("tokens") / "albef.zarr"
    st = open_store(path, "a", spec=token_spec(), dataset="tiny")
    rng = np.random.default_rng(0)
    pixels = {}
    for v in range(2):
        vid = f"v{v}"
        frames = rng.integers(0, 256, (N_FRAMES, 40, 56, 3), dtype=np.uint8)
        pixels[vid] = frames
        tokens = teacher.encode_images(frames).tokens.cpu().numpy()  # (F, 1 + P, W)
        with st.write_video(vid, {"source": {"test": True}}) as w:
            w.append(cls=tokens[:, 0], cls_hidden=tokens[:, 0], patch=tokens[:, 1:], pts=np.arange(N_FRAMES) / 7.5,
                     src_index=np.arange(N_FRAMES), is_repeat=np.zeros(N_FRAMES, bool))
        entries = [{"qid": f"{vid}_{i}", "question": q, "candidates": c, "answer": a, "qtype": "x", "start": None,
                    "end": None} for i, (q, c, a) in enumerate(QUESTIONS)]
        st.write_questions("train", vid, entries, {
            "text": np.zeros((2, 4)), "text_tokens": np.zeros((2, 1, 4)), "text_len": np.ones(2, np.int64),
            "cand": np.zeros((2, 3, 4)), "cand_tokens": np.zeros((2, 3, 1, 4)), "cand_len": np.ones((2, 3), np.int64)})
    return st, pixels


def test_cached_tokens_are_the_vision_pass(store, base, tok):
    st, pixels = store
    teacher = build_albef_teacher(str(base), config=TINY, tokenizer=tok)
    rows = np.array([4, 1, 1])
    got = cached_images(st, "v1", rows, torch.device("cpu")).tokens
    want = teacher.encode_images(pixels["v1"][rows]).tokens
    assert got.shape == want.shape == (3, 1 + (64 // 16) ** 2, TINY.vision_width)
    assert torch.allclose(got, want, atol=1e-6)


def test_token_store_must_hold_unpooled_albef_tokens(tmp_path):
    pooled = open_store(tmp_path / "p.zarr", "a", spec=token_spec(patch_pool=2), dataset="tiny")
    with pytest.raises(UsageError, match="--encoder albef --patch-pool 1"):
        check_token_store(pooled)


def test_answer_nll_is_minus_albefs_loglik(base, tok):
    """The training loss against the ranking's own eq. (2) (independent code, answers of other lengths)."""
    teacher = build_albef_teacher(str(base), config=TINY, tokenizer=tok)
    torch.manual_seed(0)
    images = AlbefImages(torch.randn(3, 17, TINY.vision_width))
    ids, mask = tokenize(tok, [pre_question("where is the cat ?")] * 3, answer=False, max_length=32, device="cpu")
    answers = ["room", "green cat", "the boy fell down"]
    aids, amask = tokenize(tok, answers, answer=True, max_length=32, device="cpu")
    with torch.no_grad():
        states = teacher.model.fuse(teacher.model.encode_text(ids, mask), mask, images.tokens)
        loss = answer_nll(teacher.model, states, mask, aids, amask)
        ll, _ = answer_loglik(teacher.model, states, mask, torch.arange(3), AnswerTokens(aids, amask), torch.arange(3), 8)
    assert amask.sum(1).tolist() != [int(amask.sum(1)[0])] * 3  # the answers differ in length (padding matters)
    assert loss.item() == pytest.approx(-ll.mean().item(), rel=1e-5)


def test_examples_take_the_shared_frames_and_the_answer_text(store):
    st, _ = store
    ex = examples(st, "train", 4)
    assert len(ex) == 4 and {e.answer for e in ex} == {"sit", "room"}
    assert all(e.rows.tolist() == [0, 2, 3, 5] for e in ex)  # frame_indices over 6 frames, 4 asked


def test_finetune_trains_only_fusion_and_decoder(store, base, tok):
    st, _ = store
    teacher = build_albef_teacher(str(base), config=TINY, tokenizer=tok)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    report = finetune(teacher, st, FinetuneConfig(epochs=3, lr=1e-3, frames=4, batch_size=8))
    after = teacher.model.state_dict()
    assert report["questions"] == 4 and len(report["losses"]) == 3 and report["losses"][-1] < report["losses"][0]
    for key, value in after.items():
        moved = not torch.equal(value, before[key])
        if key.startswith(("fusion.", "decoder.")) and value.dtype.is_floating_point and "position_ids" not in key:
            continue
        assert not moved, key  # the ViT, the text layers and buffers stay as they were
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("fusion."))
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("decoder."))
    with pytest.raises(UsageError, match="--lr"):
        FinetuneConfig(lr=0).check()


def test_checkpoint_loads_as_imageqa_weights_and_recompute_decodes_nothing(store, base, tok, tmp_path):
    st, pixels = store
    teacher = build_albef_teacher(str(base), config=TINY, tokenizer=tok)
    finetune(teacher, st, FinetuneConfig(epochs=1, lr=1e-3, frames=4, batch_size=8))
    out = save_teacher_checkpoint(teacher.model, tmp_path / "ft.pth", {"note": "test"})
    assert not list(tmp_path.glob(".ft.pth.tmp-*"))
    tuned = build_albef_teacher(str(out), config=TINY, tokenizer=tok, chunk_size=16)  # what --imageqa-weights does
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[key], value), key
    assert json.loads(torch.load(out, weights_only=True)["vqacache_finetune"])["note"] == "test"

    record = recompute_probabilities(tuned, st, st, ["train"], 4, {"finetune": {"note": "test"}})
    assert record["frames_decoded"] == 0 and record["frames_read_from_cache"] == 2 * 4 and record["questions"] == 4
    spec = st.teacher_spec()
    assert spec.model["weights"]["identity"].startswith("sha256:") and spec.extra["tokens_from"] == st.fingerprint
    q = st.read_question("v1_0")
    rows = [0, 2, 3, 5]
    want = tuned.rank_many(tuned.encode_images(pixels["v1"][rows]), [TeacherQuestion(*QUESTIONS[0][:2])], None)[0]
    assert q.imageqa.shape == (4, 3) and np.allclose(q.imageqa, want, atol=1e-5)
    assert np.allclose(q.imageqa_pts, np.array(rows) / 7.5)
    assert st.run_logs()[-1]["frames_decoded"] == 0
