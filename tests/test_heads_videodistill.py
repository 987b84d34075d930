"""VideoDistill as published: the VTM multiple-choice head, Table 4's ablations, the cheap
straight-through product.

Independent recomputations: the batched VTM logits against one question and one candidate
at a time through the sub-modules; the straight-through gradients against autograd of the
plain product ``mask @ frames``; soft sampling against a softmax-weighted sum by hand;
cross-attention with one text vector against ``v + W_o W_v t`` from its weights.
Mutations tried (each fails a test here):

1. ``select_frames`` backward without the mask gradient's transpose (``grad @ frames``):
   ``test_straight_through_select_gradients_equal_the_product`` fails (shape/values).
2. VTM rows selecting from the wrong video (``patch.repeat(C, ...)`` order instead of
   ``repeat_interleave``): ``test_vtm_scores_each_candidate_through_the_gates`` fails.
3. ``VideoTextMatching`` returning ``y_1`` instead of ``y_1 - y_0``: ``test_vtm_scores_each_candidate...`` fails.
4. soft sampling without the temperature: ``test_soft_sampling_is_the_weighted_sum`` fails.
5. ``CrossAttentionFusion`` without its input skip: ``test_cross_attention_with_one_text_vector`` fails.
"""

from __future__ import annotations

import pytest
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.modules.gumbel_topk import select_frames
from vqacache.heads.modules.la_gate import CrossAttentionFusion
from vqacache.heads.modules.vision_refinement import FusionTransformer

DIMS = {"cls_dim": 12, "text_dim": 10, "num_patches": 3, "patch_dim": 8, "num_answers": 0}
SMALL = {"num_frames": 7, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16, "tau": 0.5}


def _batch(B=2, C=4, N=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 5:] = False  # a shorter clip
    cand_mask = torch.ones(B, C, dtype=torch.bool)
    cand_mask[0, 3] = False  # a padded candidate
    return {"cls": torch.randn(B, N, 12, generator=g), "patch": torch.randn(B, N, 3, 8, generator=g),
            "text": torch.randn(B, 10, generator=g), "cand": torch.randn(B, C, 10, generator=g),
            "cand_mask": cand_mask, "frame_mask": mask, "answer": torch.tensor([1, 2])}


def _model(**kw):
    m = get_method("videodistill")
    torch.manual_seed(0)
    return m.build(method_args(m, {**SMALL, **kw}), DIMS)


def test_paper_defaults():
    d = get_method("videodistill").defaults
    assert (d["dim"], d["mc_head"], d["sampling"], d["refinement"], d["fusion"]) == (1024, "vtm", "hard", True, "la_gate")
    assert (d["text_tower"], d["text_lr_scale"], d["weights"]) == ("cached", 1.0, "")  # the fast default
    with pytest.raises(UsageError, match="sampling='top'.*valid: hard, soft"):
        _model(sampling="top")


def test_straight_through_select_gradients_equal_the_product():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    frames = torch.randn(2, 5, 4, 6, requires_grad=True)
    y = logits.softmax(-1)
    index = y.argmax(-1)
    mask = torch.nn.functional.one_hot(index, 5).float() + y - y.detach()  # eq. (6)
    weights = torch.randn(2, 3, 4, 6)
    out = select_frames(mask, frames)
    (out * weights).sum().backward()
    g_logits, g_frames = logits.grad.clone(), frames.grad.clone()
    logits.grad = frames.grad = None
    y = logits.softmax(-1)
    ref = ((torch.nn.functional.one_hot(index, 5).float() + y - y.detach()) @ frames.reshape(2, 5, -1)).reshape(2, 3, 4, 6)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(g_logits, logits.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_frames, frames.grad, atol=1e-6, rtol=1e-5)
    assert torch.equal(out, frames[torch.arange(2)[:, None], index])  # values: exactly the picked frames


def test_vtm_scores_each_candidate_through_the_gates():
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        assert out["logits"].shape == (2, 4) and out["logits"][0, 3] == float("-inf")
        for b in range(2):
            for c in range(4):
                if not batch["cand_mask"][b, c]:
                    continue
                sentence = model.pair.proj(torch.cat([batch["text"][b], batch["cand"][b, c]]))[None]  # (1, Et)
                logits = model.sampler(model.cls_in(batch["cls"][b:b + 1]), sentence, batch["frame_mask"][b:b + 1])
                idx = logits.argmax(-1)[0]  # (K,) no noise in eval
                video = model.refine(model.patch_in(batch["patch"][b, idx][None]), sentence)  # (1, D)
                y = model.head.proj(video)[0]
                torch.testing.assert_close(out["logits"][b, c], y[1] - y[0], atol=1e-5, rtol=1e-5)
                assert torch.equal(out["index_per_candidate"][b, c], idx)
            assert torch.equal(out["index"][b], out["index_per_candidate"][b, out["logits"][b].argmax()])
        changed = dict(batch, cand=batch["cand"].clone())
        changed["cand"][1, 2] += 1.0
        delta = (model(changed)["logits"] - out["logits"])[1]
        assert delta[2] != 0 and torch.equal(delta[[0, 1, 3]], torch.zeros(3))  # candidates scored apart
    model.train()
    loss, logs = get_method("videodistill").loss(model, batch, {})
    loss.backward()
    assert torch.isfinite(loss) and model.sampler.w_s.weight.grad.abs().sum() > 0  # the logits learn through VTM


def test_cosine_head_is_an_option():
    model = _model(mc_head="cosine").eval()
    with torch.no_grad():
        out = model(_batch())
    assert out["logits"].shape == (2, 4) and out["feature"].shape == (2, 16) and not hasattr(model, "pair")


def test_soft_sampling_is_the_weighted_sum():
    model = _model(sampling="soft", mc_head="cosine").eval()
    batch = _batch()
    logits = torch.randn(2, 2, 7)
    logits[1, :, 5:] = float("-inf")
    picked, index = model.select(logits, batch["patch"])
    w = torch.exp(logits / 0.5)
    w = w / w.sum(-1, keepdim=True)  # softmax(x / tau) by hand
    expect = torch.einsum("bkn,bnpw->bkpw", w, batch["patch"])
    torch.testing.assert_close(picked, expect, atol=1e-5, rtol=1e-5)
    assert torch.equal(index, logits.argmax(-1))
    loss, _ = get_method("videodistill").loss(model.train(), batch, {})
    loss.backward()
    assert model.sampler.w_s.weight.grad.abs().sum() > 0


def test_cross_attention_with_one_text_vector():
    torch.manual_seed(2)
    fusion = CrossAttentionFusion(8, 2, text_dim=6)
    v, t = torch.randn(3, 5, 8), torch.randn(3, 6)
    a = fusion.attn
    w_v = a.v_proj_weight  # (D, Dt)
    b_v, b_o = a.in_proj_bias[16:], a.out_proj.bias
    text_out = (t @ w_v.T + b_v) @ a.out_proj.weight.T + b_o  # (B, D): softmax over one key is 1
    torch.testing.assert_close(fusion(v, t), v + text_out.unsqueeze(1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{"refinement": False}, {"fusion": "cross_attention"}, {"sampling": "soft"}])
def test_ablations_train_a_step(kw):
    model = _model(**kw)
    if "refinement" in kw:
        assert isinstance(model.refine, FusionTransformer)
    loss, logs = get_method("videodistill").loss(model, _batch(), {})
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_argument_fails_before_the_store_is_opened(tmp_path):
    from vqacache.heads.train import TrainConfig, train

    with pytest.raises(UsageError, match="--method-arg fusion='gates'"):
        train(TrainConfig(method="videodistill", store=str(tmp_path / "no-such.zarr"), out=str(tmp_path / "r"),
                          args={"fusion": "gates"}))
