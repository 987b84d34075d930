"""SiaSamRea: siamese sampling, siamese knowledge (eq. 1-5), the hinge loss (eq. 7), the
training step (eq. 8) and anchor-only inference, each against an independent recomputation
(a loop or a hand example).

Mutations planted one at a time before this was committed (/tmp script: replace one line, run
this module), and the tests that failed for each:

* A_hat replaced by the identity in SKR (``propagated = probs``):
  ``test_soft_label_matches_hand_example_of_three_clips``, ``test_loss_is_alpha_soft_cross_entropy_plus_hinge``;
* W1 dropped (``p_hat = propagated.mean(1)``; also ``propagated[:, 0]``):
  ``test_soft_label_matches_hand_example_of_three_clips``, ``test_soft_label_on_the_simplex_and_weights_learnable``;
* siamese clips at random positions (offsets from ``torch.randint(-5, 6)``):
  ``test_clips_same_interval_adjacent_clamped_anchor_in_first_third``, ``test_offset_units_and_copies``,
  ``test_copies_give_a_soft_label_equal_to_the_anchor_prediction``;
* anchor start anywhere in the video instead of the first third: ``test_clips_same_interval_...``;
* siamese passes with gradients (``torch.set_grad_enabled(True)``):
  ``test_no_gradient_reaches_the_siamese_passes[False]``;
* P not detached, or the features f not detached before SKG:
  ``test_loss_is_alpha_soft_cross_entropy_plus_hinge`` (the backbone's gradients differ);
* the SKG diagonal kept (no ``-inf`` mask): ``test_affinity_zero_diagonal_rows_sum_to_one_against_loop``;
* the hinge's sign flipped (``margin - (s - pos)``): ``test_pairwise_hinge_against_loop``;
* inference on a training-style random anchor: ``test_inference_reads_only_the_anchor_clip``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vqacache.cache_spec import UnknownName
from vqacache.heads.methods import siasamrea
from vqacache.heads.methods.siasamrea import METHOD, pairwise_hinge
from vqacache.heads.modules.siamese_knowledge import SiameseKnowledgeReasoning, average_affinity, siamese_affinity
from vqacache.heads.modules.siamese_sampling import eval_anchor_clip, siamese_clips

# -- siamese sampling ------------------------------------------------------------------------


@pytest.mark.parametrize("lengths,clip,interval,expect_step", [
    ([96, 30, 5], 4, 0, [16, 5, 1]),  # floor(2L / 3B), at least 1
    ([96, 40, 20], 4, 8, [8, 8, 8]),  # fixed interval (the diagnostic's)
])
def test_clips_same_interval_adjacent_clamped_anchor_in_first_third(lengths, clip, interval, expect_step):
    offsets = [1, -1, 2, -2, 3, -3, 4, -4]
    gen = torch.Generator().manual_seed(0)
    seen_starts: list[set[int]] = [set() for _ in lengths]
    for _ in range(200):
        idx = siamese_clips(torch.tensor(lengths), clip, len(offsets), interval, generator=gen)
        assert idx.shape == (len(lengths), 1 + len(offsets), clip)
        for q, L in enumerate(lengths):
            step = expect_step[q]
            third = math.ceil(L / 3)
            last_start = max(0, L - 1 - (clip - 1) * step)
            anchor = idx[q, 0].tolist()
            s = anchor[0]
            seen_starts[q].add(s)
            assert 0 <= s < third or (s == last_start and s < third)  # first third
            for m, row in enumerate(idx[q].tolist()):
                want_start = s if m == 0 else min(max(s + offsets[m - 1], 0), last_start)
                want = [min(want_start + b * step, L - 1) for b in range(clip)]
                assert row == want, (q, m, row, want)
                assert all(0 <= i < L for i in row)
    for q, L in enumerate(lengths):  # the whole first third is drawn from
        assert seen_starts[q] == set(range(min(math.ceil(L / 3), max(0, L - 1 - (clip - 1) * expect_step[q]) + 1)))


def test_offset_units_and_copies():
    gen = torch.Generator().manual_seed(1)
    idx = siamese_clips(torch.tensor([96]), 4, 4, 8, unit="interval", generator=gen)[0]  # (5, 4)
    s = int(idx[0, 0])
    assert [int(r[0]) for r in idx] == [s, s + 8, max(s - 8, 0), s + 16, max(s - 16, 0)]
    copies = siamese_clips(torch.tensor([96, 50]), 4, 8, mode="copies", generator=gen)
    assert (copies == copies[:, :1]).all()
    with pytest.raises(UnknownName, match="adjacent, copies"):
        siamese_clips(torch.tensor([96]), 4, 2, mode="random")


def test_eval_anchor_is_deterministic_and_documented():
    L = torch.tensor([96, 7])
    # rule: start (ceil(L/3) - 1) // 2 = 15 and 1; intervals 16 and floor(14/12) = 1
    assert eval_anchor_clip(L, 4).tolist() == [[15, 31, 47, 63], [1, 2, 3, 4]]
    assert eval_anchor_clip(L, 4, 8).tolist() == [[15, 23, 31, 39], [0, 6, 6, 6]]  # does not fit: clamped
    assert eval_anchor_clip(L, 4, placement="uniform").tolist() == [[0, 32, 63, 95], [0, 2, 4, 6]]


# -- siamese knowledge -----------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_affinity_zero_diagonal_rows_sum_to_one_against_loop(temperature):
    torch.manual_seed(0)
    f = torch.randn(2, 5, 7, dtype=torch.float64)
    got = siamese_affinity(f, temperature)
    for q in range(2):
        for i in range(5):
            cos = [float(f[q, i] @ f[q, j] / (f[q, i].norm() * f[q, j].norm())) for j in range(5)]
            den = sum(math.exp(cos[j] / temperature) for j in range(5) if j != i)
            for j in range(5):
                want = 0.0 if j == i else math.exp(cos[j] / temperature) / den
                assert abs(float(got[q, i, j]) - want) < 1e-9
    assert torch.equal(torch.diagonal(got, dim1=1, dim2=2), torch.zeros(2, 5, dtype=torch.float64))
    assert torch.allclose(got.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    avg = average_affinity(f)
    assert torch.allclose(avg[0], (torch.ones(5, 5) - torch.eye(5)).double() / 4)


def _skr(w1, w2, omega=0.5):
    skr = SiameseKnowledgeReasoning(3, omega, learn_w1=w1 is not None, learn_w2=w2 is not None)
    with torch.no_grad():
        if w1 is not None:
            skr.w1_logits.copy_(torch.tensor(w1).log())
        if w2 is not None:
            skr.w2_logits.copy_(torch.tensor(w2).log())
    return skr


def test_soft_label_matches_hand_example_of_three_clips():
    P = torch.tensor([[[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]]])  # (1, 3, 2), clip 0 the anchor
    A = torch.tensor([[[0.0, 0.7, 0.3], [0.5, 0.0, 0.5], [0.1, 0.9, 0.0]]])
    # p_hat_0 = .7 p_1 + .3 p_2 = (.29, .71); p_hat_1 = (.55, .45); p_hat_2 = (.24, .76)
    # W1 = (.5, .25, .25): W1 A_hat P = (.3425, .6575); W2 = (.2, .3, .5): W2 P = (.43, .57)
    q = _skr([0.5, 0.25, 0.25], [0.2, 0.3, 0.5])(A, P)
    assert torch.allclose(q, torch.tensor([[0.38625, 0.61375]]), atol=1e-6)
    # without W1: w p_hat_anchor + (1 - w) W2 P = .5 (.29, .71) + .5 (.43, .57)
    assert torch.allclose(_skr(None, [0.2, 0.3, 0.5])(A, P), torch.tensor([[0.36, 0.64]]), atol=1e-6)
    # without W2: .5 W1 A_hat P + .5 p_anchor
    assert torch.allclose(_skr([0.5, 0.25, 0.25], None)(A, P), torch.tensor([[0.47125, 0.52875]]), atol=1e-6)
    # uniform start: W1 = W2 = 1/3
    q0 = SiameseKnowledgeReasoning(3)(A, P)
    want = 0.5 * (torch.tensor([0.29 + 0.55 + 0.24, 0.71 + 0.45 + 0.76]) / 3) + 0.5 * P[0].mean(0)
    assert torch.allclose(q0[0], want, atol=1e-6)


def test_soft_label_on_the_simplex_and_weights_learnable():
    torch.manual_seed(0)
    P = torch.randn(4, 6, 5).softmax(-1)
    A = siamese_affinity(torch.randn(4, 6, 3))
    skr = SiameseKnowledgeReasoning(6)
    with torch.no_grad():
        skr.w1_logits.normal_()
        skr.w2_logits.normal_()
    q = skr(A, P)
    assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones(4))
    (-(q * torch.randn(4, 5).log_softmax(-1)).sum()).backward()
    assert skr.w1_logits.grad.abs().sum() > 0 and skr.w2_logits.grad.abs().sum() > 0


# -- losses ----------------------------------------------------------------------------------


def test_pairwise_hinge_against_loop():
    torch.manual_seed(0)
    s = torch.randn(5, 4) * 2
    s[1, 3] = s[4, 2] = float("-inf")  # padded candidates
    a = torch.tensor([0, 2, 3, -1, 1])
    total, rows = 0.0, 0
    for i in range(5):
        if a[i] < 0:
            continue
        rows += 1
        pos = float(s[i, a[i]])
        for j in range(4):
            if j != a[i] and math.isfinite(float(s[i, j])):
                total += max(0.0, 1.0 - (pos - float(s[i, j])))
    s.requires_grad_(True)
    got = pairwise_hinge(s, a)
    assert abs(float(got.detach()) - total / rows) < 1e-5
    got.backward()
    assert torch.isfinite(s.grad).all() and s.grad[3].abs().sum() == 0
    assert float(pairwise_hinge(s.detach(), torch.full((5,), -1))) == 0.0


# -- the method ------------------------------------------------------------------------------

SMALL = {"num_select": 3, "num_layers": 1, "num_heads": 2, "dim": 0, "siamese_clips": 4, "dense_frames": 14}


def _batch(open_ended: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Q, L, E, P, W, C = 2, 14, 6, 2, 8, 4
    mask = torch.ones(Q, L, dtype=torch.bool)
    mask[1, 10:] = False  # question 1 has 10 frames
    batch = {
        "cls": torch.randn(Q, L, E, generator=g) * mask[..., None], "frame_mask": mask,
        "patch": torch.randn(Q, L, P, W, generator=g) * mask[..., None, None], "patch_mask": mask.clone(),
        "text": torch.randn(Q, E, generator=g), "answer": torch.tensor([1, 2]),
    }
    if not open_ended:
        batch["cand"] = torch.randn(Q, C, E, generator=g)
        batch["cand_mask"] = torch.tensor([[True] * 4, [True, True, True, False]])
    dims = {"cls_dim": E, "text_dim": E, "num_patches": P, "patch_dim": W, "num_answers": 5 if open_ended else 0}
    return batch, dims


def _model(dims, **extra):
    args = {**METHOD.defaults, **SMALL, **extra}
    torch.manual_seed(0)
    return METHOD.build(args, dims), args


def _record_clips(model):
    calls = []
    original = model.clips

    def clips(batch, index):
        calls.append((index.clone(), torch.is_grad_enabled()))
        return original(batch, index)

    model.clips = clips
    return calls


@pytest.mark.parametrize("gt_all_clips", [False, True])
def test_no_gradient_reaches_the_siamese_passes(gt_all_clips):
    batch, dims = _batch()
    model, args = _model(dims, gt_all_clips=gt_all_clips, mc_loss="ce")  # a hinge at 0 has no gradient
    calls = _record_clips(model)
    batch["patch"].requires_grad_(True)
    loss, logs = METHOD.loss(model, batch, args)
    loss.backward()
    (anchor, anchor_grad), (siamese, siamese_grad) = calls
    assert anchor.shape == (2, 1, 3) and siamese.shape == (2, 4, 3)
    assert anchor_grad and siamese_grad == gt_all_clips
    touched = batch["patch"].grad.abs().sum((2, 3)) > 0  # (Q, L) frames that received a gradient
    for q in range(2):
        anchor_frames = set(anchor[q, 0].tolist())
        siamese_only = set(siamese[q].flatten().tolist()) - anchor_frames
        assert all(touched[q, i] for i in anchor_frames)
        assert siamese_only, "the siamese clips should reach frames the anchor does not"
        assert all(bool(touched[q, i]) == gt_all_clips for i in siamese_only)
    assert set(logs) == {"loss", "l_gt", "l_siamese"} and math.isfinite(logs["loss"])


def test_loss_is_alpha_soft_cross_entropy_plus_hinge():
    """Eq. 8 recomputed by loops from the backbone's outputs on the recorded clips, with the soft
    label a constant: the value and the backbone's gradients must agree (P, A_hat detached)."""
    batch, dims = _batch()
    model, args = _model(dims, alpha=2.0)
    calls = _record_clips(model)
    torch.manual_seed(3)
    loss, logs = METHOD.loss(model, batch, args)
    model.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.backbone.named_parameters() if p.grad is not None}
    (anchor, _), (siamese, _) = calls
    model.zero_grad()
    a = model.backbone(_clip_inputs(batch, anchor[:, 0]))  # with gradients
    with torch.no_grad():
        rows = [model.backbone(_clip_inputs(batch, siamese[:, m])) for m in range(4)]
    logits = [a["logits"], *[r["logits"] for r in rows]]  # 5 x (Q, C)
    feats = [a["feature"].detach(), *[r["feature"] for r in rows]]
    total = torch.zeros(())
    for q in range(2):
        p = [logits[n][q].detach().softmax(-1) for n in range(5)]
        z = [feats[n][q] / feats[n][q].norm() for n in range(5)]
        q_label = torch.zeros(4)
        for i in range(5):  # uniform W1 = W2 = 1/5 at the start
            den = sum(math.exp(float(z[i] @ z[j])) for j in range(5) if j != i)
            p_hat = sum(math.exp(float(z[i] @ z[j])) / den * p[j] for j in range(5) if j != i)
            q_label += 0.5 * p_hat / 5 + 0.5 * p[i] / 5
        logp = a["logits"][q].log_softmax(-1)
        ce = -sum(q_label[k] * logp[k] for k in range(4) if q_label[k] > 0)
        ans = int(batch["answer"][q])
        hinge = sum(torch.clamp(1 - (a["logits"][q, ans] - a["logits"][q, k]), min=0) for k in range(4)
                    if k != ans and math.isfinite(float(a["logits"][q, k].detach())))
        total = total + (2.0 * ce + hinge) / 2
    assert abs(float(loss.detach()) - float(total.detach())) < 1e-4, (logs, float(total.detach()))
    total.backward()
    for n, p in model.backbone.named_parameters():
        if p.grad is not None or n in got:
            assert torch.allclose(got[n], p.grad, atol=1e-5), n


def _clip_inputs(batch, index):
    """One clip per question by explicit per-row indexing (independent of ``model.clips``)."""
    Q, B = index.shape
    cls = torch.stack([batch["cls"][q, index[q]] for q in range(Q)])
    patch = torch.stack([batch["patch"][q, index[q]] for q in range(Q)])
    ones = torch.ones(Q, B, dtype=torch.bool)
    out = {"cls": cls, "patch": patch, "frame_mask": ones, "patch_mask": ones, "text": batch["text"]}
    for name in ("cand", "cand_mask"):
        if name in batch:
            out[name] = batch[name]
    return out


def test_inference_reads_only_the_anchor_clip():
    batch, dims = _batch()
    model, args = _model(dims)
    model.eval()
    calls = _record_clips(model)
    with torch.no_grad():
        logits = METHOD.predict(model, batch)
    assert len(calls) == 1 and calls[0][0].shape == (2, 1, 3)
    # rule: L = 14 -> start (5 - 1) // 2 = 2, interval floor(28 / 9) = 3; L = 10 -> start 1, interval 2
    assert calls[0][0][:, 0].tolist() == [[2, 5, 8], [1, 3, 5]]
    anchor = [{2, 5, 8}, {1, 3, 5}]
    noisy = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    for q in range(2):
        for i in range(14):
            if i not in anchor[q]:
                noisy["patch"][q, i] += 5 * torch.randn_like(noisy["patch"][q, i])
                noisy["cls"][q, i] += 5 * torch.randn_like(noisy["cls"][q, i])
    with torch.no_grad():
        assert torch.equal(METHOD.predict(model, noisy), logits)
        noisy["patch"][0, 5] += 1.0  # an anchor frame does matter
        assert not torch.equal(METHOD.predict(model, noisy)[0], logits[0])


def test_open_ended_uses_cross_entropy_and_every_ablation_runs():
    batch, dims = _batch(open_ended=True)
    for extra in ({}, {"reasoning": "average"}, {"w1": False}, {"w2": False}, {"siamese": "copies"},
                  {"siamese_clips": 0}, {"offset_unit": "interval"}, {"gt_all_clips": True}, {"backbone": "videodistill",
                                                                                            "num_frames": 4}):
        model, args = _model(dims, **extra)
        loss, logs = METHOD.loss(model, batch, args)
        loss.backward()
        assert math.isfinite(float(loss.detach())) and model(batch)["logits"].shape == (2, 5), extra
        assert ("l_siamese" in logs) == (args["siamese_clips"] > 0), extra


def test_copies_give_a_soft_label_equal_to_the_anchor_prediction():
    batch, dims = _batch()
    model, args = _model(dims, siamese="copies")
    model.eval()  # no dropout: N identical passes
    calls = _record_clips(model)
    METHOD.loss(model, batch, args)
    (anchor, _), (siamese, _) = calls
    assert (siamese == anchor).all()


def test_unknown_names_list_the_valid_ones():
    _, dims = _batch()
    for key, valid in (("backbone", "uniform, videodistill"), ("reasoning", "average, skg"),
                       ("mc_loss", "ce, hinge"), ("eval_anchor", "rule, uniform"), ("siamese", "adjacent, copies"),
                       ("offset_unit", "frame, interval")):
        with pytest.raises(UnknownName, match=valid):
            _model(dims, **{key: "nope"})  # refused when built, before any training


def test_trains_on_a_store_and_writes_predictions(tmp_path):
    from vqacache.heads.synthetic import make_temporal_store
    from vqacache.heads.train import TrainConfig, load_checkpoint, train

    store = make_temporal_store(tmp_path / "s.zarr", splits={"train": 6, "val": 2}, n_frames=20, dim=16, n_patches=2)
    for backbone, extra in (("uniform", {}), ("videodistill", {"num_frames": 6})):
        out = tmp_path / backbone
        m = train(TrainConfig(method="siasamrea", store=str(store.path), out=str(out), epochs=1, batch_size=4,
                              args={**SMALL, "dense_frames": 20, "backbone": backbone, **extra}))
        assert np.isfinite(m["train_loss"]) and "train_l_siamese" in m and 0 <= m["val_acc"] <= 100
        preds = json.loads((out / "predictions" / "val.json").read_text())
        assert len(preds) == 4
        ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
        assert ckpt["model_args"]["backbone"] == backbone and ckpt["method"] == "siasamrea"
        w1, w2 = ckpt["model"]["skr.w1_logits"], ckpt["model"]["skr.w2_logits"]
        assert w1.shape == (5,) and not torch.equal(w1, torch.zeros(5)) and not torch.equal(w2, torch.zeros(5))
    assert siasamrea.OPTIM == {"lr": 5e-4, "weight_decay": 0.01, "warmup": 0.1}


def test_diagnostic_ece_and_store(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from siasamrea_diagnostic import ece, key_frames, write_store

    # bins [0.1, 0.2) and [0.9, 1.0]: |0 - 0.15| * 2/4 + |1/2 - 0.95| * 2/4 = 0.075 + 0.225
    conf = np.array([0.1, 0.2 - 1e-9, 0.9, 1.0])
    assert abs(ece(conf, np.array([0.0, 0.0, 1.0, 0.0])) - 100 * (0.075 + 0.225)) < 1e-6
    store = write_store(tmp_path / "m.zarr", "main", {"train": 3}, dim=8)
    keys = key_frames(store.path, "train")
    for qid, frames in keys.items():
        e = min(frames)
        assert frames == {e, e + 1} and 8 <= e <= 40
        v = store.read_video(qid.split("_")[0])
        assert v.cls.shape == (96, 8) and v.patch.shape == (96, 4, 8)
