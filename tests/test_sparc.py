"""SpARC's equations against independent recomputations on small hand-made batches.

A probe model (masked mean of the frames' CLS vectors -> a fixed linear map) stands in for
the backbone, so each prediction can be recomputed by hand with plain Python loops; the
backbones themselves are checked for what SpARC relies on (a restricted frame mask hides the
other frames), and HGA for its shapes and its use of the question's tokens.

Mutations planted in a copy of ``heads/methods/sparc.py`` (run with the copy first on
``PYTHONPATH``), each made at least one test here fail (results of the last run in brackets):

1. ignore the teacher (the causal set is every real frame) and zero out L_c and L_s
   -> ``test_causal_set_by_hand``, ``test_losses_by_hand`` fail [4 failed: also the
   single-frame and HGA-clip tests].
2. Temporal Guided Mixup mixes every frame, not only the causal ones
   -> ``test_mixup_touches_only_causal_frames`` fails [1 failed].
3. the threshold test ``p_a >= t`` instead of ``p_a > t``
   -> ``test_causal_set_by_hand`` fails (the row with p_a = t exactly) [3 failed].
4. L_c in the reverse KL order, KL(M(V_c, Q) || M(V, Q)) (this file's earlier formula)
   -> ``test_losses_by_hand`` fails [1 failed].
5. the teacher mixed with 1 - lambda instead of lambda
   -> ``test_mixup_touches_only_causal_frames`` fails [1 failed].
6. partners drawn by a plain ``randperm`` over the batch (rows with other candidate slots)
   -> ``test_pairing_keeps_candidate_slots`` fails [1 failed].

The script that plants them: a copy of ``src/`` per mutation, ``PYTHONPATH=COPY/src uv run
--no-sync pytest tests/test_sparc.py`` (13 tests; 9 to 12 pass under each mutation).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.heads.data import MissingTeacher, QADataset, collate
from vqacache.heads.methods import get_method, method_args, parse_method_args
from vqacache.heads.methods import sparc
from vqacache.heads.methods.sparc import (
    MixupDraw, causal_set, check_args, pair_within_groups, sparc_terms, temporal_guided_mixup,
)
from vqacache.heads.stores import StoreSet
from vqacache.heads.synthetic import make_temporal_store

INF = float("-inf")


class Probe(nn.Module):
    """logits = W mean_{k in mask} cls_k + b (-inf on padded candidates); records each mask."""

    def __init__(self, W: list[list[float]], b: list[float]) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.tensor(W))  # (C, E)
        self.b = nn.Parameter(torch.tensor(b))
        self.masks: list[torch.Tensor] = []

    def forward(self, inputs):
        mask = inputs["frame_mask"]
        self.masks.append(mask.clone())
        m = mask.float().unsqueeze(-1)
        pooled = (inputs["cls"] * m).sum(1) / m.sum(1).clamp_min(1)  # (B, E)
        logits = pooled @ self.W.T + self.b
        if "cand_mask" in inputs:
            logits = logits.masked_fill(~inputs["cand_mask"], INF)
        return {"logits": logits}


# B = 3 questions, N = 4 frames, C = 3 candidates, E = 2
CLS = [[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [-1.0, 0.5]],
       [[0.5, 0.5], [1.0, -1.0], [0.0, 2.0], [1.5, 0.0]],
       [[-0.5, 1.0], [2.0, 0.0], [1.0, 1.0], [9.0, 9.0]]]
VALID = [[True, True, True, True], [True, True, True, True], [True, True, True, False]]
ANSWER = [0, 2, 1]
P_A = [[0.9, 0.5, 0.6, 0.1],  # 0.5 = t exactly: not causal (strict >)
       [0.2, 0.3, 0.1, 0.4],  # none above t: all frames
       [0.3, 0.7, 0.4, 0.99]]  # frame 3 is padding: never causal
CAUSAL = [[0, 2], [0, 1, 2, 3], [1]]
W = [[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]]
BIAS = [0.1, 0.0, -0.2]


def teacher_rows() -> list[list[list[float]]]:
    """(B, N, C): p_a on the answer, the rest split 1:2 over the other two candidates."""
    rows = []
    for i, frames in enumerate(P_A):
        row = []
        for p in frames:
            others = [c for c in range(3) if c != ANSWER[i]]
            probs = [0.0] * 3
            probs[ANSWER[i]] = p
            probs[others[0]], probs[others[1]] = (1 - p) / 3, 2 * (1 - p) / 3
            row.append(probs)
        rows.append(row)
    return rows


def make_batch() -> dict:
    return {
        "cls": torch.tensor(CLS), "frame_mask": torch.tensor(VALID), "answer": torch.tensor(ANSWER),
        "imageqa": torch.tensor(teacher_rows()), "has_imageqa": torch.ones(3, dtype=torch.bool),
        "text": torch.zeros(3, 2), "cand": torch.zeros(3, 3, 2), "cand_mask": torch.ones(3, 3, dtype=torch.bool),
    }


ARGS = {**sparc.DEFAULTS, "backbone": "uniform", "num_frames": 4, "threshold": 0.5, "w_c": 0.3, "w_s": 2.0,
        "mixup_prob": 0.0}


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def probe_probs(i: int, frames: list[int]) -> list[float]:
    """The probe's softmax for row i over ``frames``, by hand."""
    pooled = [sum(CLS[i][k][e] for k in frames) / len(frames) for e in range(2)]
    return softmax([sum(W[c][e] * pooled[e] for e in range(2)) + BIAS[c] for c in range(3)])


def test_causal_set_by_hand():
    got = causal_set(torch.tensor(teacher_rows()), torch.tensor(ANSWER), torch.tensor(VALID), 0.5)
    assert [torch.nonzero(r).squeeze(1).tolist() for r in got] == CAUSAL
    # a higher threshold leaves row 0 only frame 0; row 2 none -> all its real frames (fallback)
    hi = causal_set(torch.tensor(teacher_rows()), torch.tensor(ANSWER), torch.tensor(VALID), 0.8)
    assert [torch.nonzero(r).squeeze(1).tolist() for r in hi] == [[0], [0, 1, 2, 3], [0, 1, 2]]
    terms = sparc_terms(Probe(W, BIAS), make_batch(), ARGS, j=torch.tensor([1, 3, 2]), mixup=False)
    assert [torch.nonzero(r).squeeze(1).tolist() for r in terms.causal] == CAUSAL


def test_losses_by_hand():
    j = [1, 3, 2]
    terms = sparc_terms(Probe(W, BIAS), make_batch(), ARGS, j=torch.tensor(j), mixup=False)
    teacher = teacher_rows()
    l_g = l_c = l_s = 0.0
    for i in range(3):
        real = [k for k in range(4) if VALID[i][k]]
        p_whole, p_guided, p_single = probe_probs(i, real), probe_probs(i, CAUSAL[i]), probe_probs(i, [j[i]])
        l_g += -math.log(p_guided[ANSWER[i]]) / 3
        l_c += sum(pw * math.log(pw / pg) for pw, pg in zip(p_whole, p_guided)) / 3
        t = teacher[i][j[i]]
        l_s += -sum(t[c] / sum(t) * math.log(p_single[c]) for c in range(3)) / 3
    assert terms.l_g.item() == pytest.approx(l_g, abs=1e-5)
    assert terms.l_c.item() == pytest.approx(l_c, abs=1e-5) and l_c > 1e-3
    assert terms.l_s.item() == pytest.approx(l_s, abs=1e-5)
    assert terms.total.item() == pytest.approx(l_g + 0.3 * l_c + 2.0 * l_s, abs=1e-5)


def test_single_frame_prediction_touches_one_frame():
    probe = Probe(W, BIAS)
    terms = sparc_terms(probe, make_batch(), ARGS, j=torch.tensor([1, 3, 2]), mixup=False)
    whole, guided, single = probe.masks
    assert torch.equal(whole, torch.tensor(VALID))  # the whole video: every real frame
    assert torch.equal(guided, torch.tensor([[k in CAUSAL[i] for k in range(4)] for i in range(3)]))
    assert single.sum(1).tolist() == [1, 1, 1] and single.float().argmax(1).tolist() == [1, 3, 2]
    for seed in range(20):  # a drawn frame is always a real one (row 2's frame 3 is padding)
        torch.manual_seed(seed)
        t = sparc_terms(Probe(W, BIAS), make_batch(), ARGS, mixup=False)
        assert bool(torch.tensor(VALID)[torch.arange(3), t.j].all())
    assert terms.j.tolist() == [1, 3, 2]


@pytest.mark.parametrize("backbone", ["uniform", "hga"])
def test_backbone_single_frame_ignores_other_frames(backbone):
    """What SpARC relies on: a backbone given a one-frame mask reads only that frame."""
    dims = {"cls_dim": 6, "patch_dim": 6, "num_patches": 2, "text_dim": 5, "num_answers": 0}
    args = method_args(get_method("sparc"), {"backbone": backbone, "num_frames": 5, "num_select": 2, "num_layers": 1,
                                             "num_heads": 2, "dim": 6, "hga_hidden": 8, "fusion_rank": 4})
    torch.manual_seed(0)
    model = sparc.build(args, dims).eval()
    g = torch.Generator().manual_seed(1)
    batch = {"cls": torch.randn(2, 5, 6, generator=g), "patch": torch.randn(2, 5, 2, 6, generator=g),
             "text": torch.randn(2, 5, generator=g), "cand": torch.randn(2, 3, 5, generator=g),
             "cand_mask": torch.ones(2, 3, dtype=torch.bool)}
    one = torch.zeros(2, 5, dtype=torch.bool)
    one[0, 3] = one[1, 0] = True
    restricted = {**batch, "frame_mask": one, "patch_mask": one}
    other = {**restricted, "cls": torch.where(one[..., None], batch["cls"], torch.randn(2, 5, 6)),
             "patch": torch.where(one[..., None, None], batch["patch"], torch.randn(2, 5, 2, 6))}
    with torch.no_grad():
        a, b = model(restricted)["logits"], model(other)["logits"]
        full = model({**batch, "frame_mask": ~one | one, "patch_mask": ~one | one})["logits"]
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, full, atol=1e-4)


def test_mixup_touches_only_causal_frames():
    g = torch.Generator().manual_seed(0)
    B, N = 3, 4
    valid = torch.tensor([[True, True, True, True], [True, True, True, False], [True, True, True, True]])
    causal = torch.tensor([[True, False, True, False], [False, True, False, False], [False, False, False, True]])
    batch = {"cls": torch.randn(B, N, 2, generator=g), "patch": torch.randn(B, N, 2, 3, generator=g),
             "frame_mask": valid, "text": torch.randn(B, 5, generator=g),
             "text_tokens": torch.randn(B, 2, 4, generator=g),
             "text_token_mask": torch.tensor([[True, True], [True, False], [True, False]]),
             "cand": torch.randn(B, 3, 5, generator=g), "cand_mask": torch.ones(B, 3, dtype=torch.bool)}
    target = torch.eye(3)[[0, 2, 1]]
    teacher = torch.rand(B, N, 3, generator=g)
    lam, perm = 0.3, [2, 0, 1]
    out, t_mix, teach_mix = temporal_guided_mixup(batch, causal, target, teacher, MixupDraw(lam, torch.tensor(perm)))
    for i in range(B):
        for k in range(N):
            mixed = bool(causal[i, k]) and bool(valid[perm[i], k])  # row 2 frame 3: partner row 1 has none there
            for name in ("cls", "patch"):
                want = lam * batch[name][i, k] + (1 - lam) * batch[name][perm[i], k] if mixed else batch[name][i, k]
                if mixed:
                    assert torch.allclose(out[name][i, k], want, atol=1e-6)
                else:
                    assert torch.equal(out[name][i, k], batch[name][i, k])  # bit-identical
        for c in range(3):
            assert t_mix[i, c].item() == pytest.approx(lam * target[i, c].item() + (1 - lam) * target[perm[i], c].item())
            for k in range(N):
                assert teach_mix[i, k, c].item() == pytest.approx(
                    lam * teacher[i, k, c].item() + (1 - lam) * teacher[perm[i], k, c].item(), abs=1e-6)
        assert torch.allclose(out["text"][i], lam * batch["text"][i] + (1 - lam) * batch["text"][perm[i]])
        assert torch.allclose(out["cand"][i], lam * batch["cand"][i] + (1 - lam) * batch["cand"][perm[i]])
    assert not torch.equal(out["cls"][2, 3], lam * batch["cls"][2, 3] + (1 - lam) * batch["cls"][1, 3])
    assert out["text_token_mask"].tolist() == [[True, True], [True, True], [True, False]]  # the union
    assert torch.equal(out["frame_mask"], valid)


def test_pairing_keeps_candidate_slots():
    """A row is paired only with rows of the same candidate slots: a mixed target never lands
    on a padded candidate (whose logit is -inf: an infinite L_g)."""
    cand_mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True], [True, True, False],
                              [True, False, False]])
    for seed in range(30):
        perm = pair_within_groups(cand_mask, 5, torch.Generator().manual_seed(seed))
        assert torch.equal(cand_mask[perm], cand_mask) and sorted(perm.tolist()) == list(range(5))
    # end to end: a 3-candidate row answering its third candidate beside 2-candidate rows
    batch = make_batch()
    batch["cand_mask"] = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    batch["answer"] = torch.tensor([2, 1, 0])
    teacher = batch["imageqa"] * batch["cand_mask"][:, None, :]  # a teacher scores real candidates only
    batch["imageqa"] = teacher / teacher.sum(-1, keepdim=True)
    args = {**ARGS, "mixup_prob": 1.0}
    for seed in range(10):
        torch.manual_seed(seed)
        terms = sparc_terms(Probe(W, BIAS), dict(batch), args)
        assert terms.mixup is not None and torch.isfinite(terms.total)


def test_inference_uses_the_whole_video_only():
    probe = Probe(W, BIAS)
    batch = {k: v for k, v in make_batch().items() if k not in ("imageqa", "has_imageqa")}  # no teacher needed
    logits = get_method("sparc").predict(probe, batch)
    assert len(probe.masks) == 1 and torch.equal(probe.masks[0], torch.tensor(VALID))
    want = [math.log(p) for p in probe_probs(0, [0, 1, 2, 3])]
    assert torch.allclose(logits[0].log_softmax(-1), torch.tensor(want), atol=1e-5)


def test_hga_clips_use_their_first_frame_teacher():
    """clip_len 2: clip u's teacher is frame 2u's (A.3); causal clips cover both their frames."""
    batch = make_batch()
    teacher = torch.full((3, 4, 3), 0.0)
    teacher[..., 1] = 1.0  # answer 1 everywhere ...
    teacher[0, 0] = torch.tensor([1.0, 0.0, 0.0])  # ... row 0: clip 0's first frame says answer 0
    teacher[0, 3] = torch.tensor([1.0, 0.0, 0.0])  # second frame of clip 1: not its first, ignored
    batch.update(imageqa=teacher, answer=torch.tensor([0, 1, 1]))
    args = {**ARGS, "backbone": "hga", "clip_len": 2}
    terms = sparc_terms(Probe(W, BIAS), batch, args, j=torch.tensor([1, 0, 1]), mixup=False)
    assert terms.causal.tolist()[0] == [True, True, False, False]
    assert terms.causal.tolist()[1] == [True, True, True, True]
    assert terms.causal.tolist()[2] == [True, True, True, False]  # frame 3 is padding


def test_hga_shapes_tokens_and_padded_candidates():
    dims = {"cls_dim": 6, "text_dim": 5, "num_answers": 0}
    args = method_args(get_method("hga"), {"num_frames": 6, "clip_len": 2, "hga_hidden": 8, "fusion_rank": 4,
                                           "token_dim": 3})
    torch.manual_seed(0)
    model = get_method("hga").build(args, dims).eval()
    g = torch.Generator().manual_seed(2)
    batch = {"cls": torch.randn(2, 6, 6, generator=g), "frame_mask": torch.ones(2, 6, dtype=torch.bool),
             "text": torch.randn(2, 5, generator=g), "text_tokens": torch.randn(2, 4, 3, generator=g),
             "text_token_mask": torch.tensor([[True] * 4, [True, True, False, False]]),
             "cand": torch.randn(2, 3, 5, generator=g), "cand_mask": torch.tensor([[True] * 3, [True, True, False]])}
    with torch.no_grad():
        logits = model(batch)["logits"]
        assert logits.shape == (2, 3) and logits[1, 2].item() == INF and torch.isfinite(logits[0]).all()
        tokens = model({**batch, "text_tokens": batch["text_tokens"].roll(1, -1)})["logits"]  # other token states
        padded = batch["text_tokens"].clone()
        padded[1, 2:] = 7.0  # padded token rows are never read
        same = model({**batch, "text_tokens": padded})["logits"]
    assert not torch.allclose(tokens[0], logits[0]) and torch.allclose(same[1, :2], logits[1, :2], atol=1e-6)
    oe = get_method("hga").build({**args, "token_dim": 0, "question_tokens": False}, {**dims, "num_answers": 7})
    assert oe({k: v for k, v in batch.items() if not k.startswith("cand")})["logits"].shape == (2, 7)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_temporal_store(tmp_path_factory.mktemp("sparc") / "t.zarr", splits={"train": 4, "val": 2},
                               n_frames=10, dim=16, n_patches=2).path


def test_frames_are_the_teachers_by_default(store):
    stores = StoreSet(store)
    args = method_args(get_method("sparc"), {"backbone": "hga"})
    assert sparc.prepare(args, stores)["num_frames"] == 10
    with pytest.raises(UsageError, match="--method-arg num_frames=8"):
        sparc.prepare({**args, "num_frames": 8}, stores)
    with pytest.warns(UserWarning, match="nearest"):
        out = sparc.prepare({**args, "num_frames": 8, "frames_mismatch": True}, stores)
    assert "num_frames" not in out and out["token_dim"] == 16
    ds = QADataset(stores, "train", **sparc.data({**args, **sparc.prepare(args, stores)}))
    assert collate([ds[0]])["cls"].shape[1] == 10


def test_every_hyperparameter_is_a_method_arg():
    m = get_method("sparc")
    got = parse_method_args(m, ["w_c=0.5", "w_s=2", "threshold=0.3", "mixup_prob=1", "mixup_alpha=0.2",
                                "mixup_beta=0.4", "frames_mismatch=true", "clip_len=2", "backbone=hga"])
    assert got == {"w_c": 0.5, "w_s": 2.0, "threshold": 0.3, "mixup_prob": 1.0, "mixup_alpha": 0.2,
                   "mixup_beta": 0.4, "frames_mismatch": True, "clip_len": 2, "backbone": "hga"}
    assert set(sparc.HELP) == set(sparc.DEFAULTS)
    assert "this project's choice" in sparc.HELP["threshold"] and "this project's choice" in sparc.HELP["mixup_prob"]
    for bad, flag in [({"threshold": 1.5}, "threshold"), ({"mixup_prob": -0.1}, "mixup_prob"), ({"w_s": -1.0}, "w_s"),
                      ({"mixup_alpha": 0.0}, "mixup_alpha")]:
        with pytest.raises(UsageError, match=f"--method-arg {flag}="):
            check_args({**sparc.DEFAULTS, **bad})
    with pytest.raises(UnknownName, match="hga, uniform, videodistill"):
        sparc.backbone_of({"backbone": "vgt"})


def test_trains_on_hga_and_needs_a_teacher(store, tmp_path):
    from vqacache.heads.train import TrainConfig, train

    small = {"backbone": "hga", "hga_hidden": 8, "fusion_rank": 4, "mixup_prob": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no frame-mismatch warning by default
        m = train(TrainConfig(method="sparc", store=str(store), out=str(tmp_path / "r"), epochs=1, batch_size=4,
                              lr=1e-3, args=small, optimizer="adam"))
    assert all(math.isfinite(m[k]) for k in ("train_loss", "train_l_g", "train_l_c", "train_l_s"))
    cfg = (tmp_path / "r" / "config.json").read_text()
    assert '"optimizer": "adam"' in cfg and '"num_frames": 10' in cfg
    bare = make_temporal_store(tmp_path / "bare.zarr", splits={"train": 2, "val": 1}, n_frames=10, dim=16,
                               n_patches=2, teacher=False).path
    with pytest.raises(MissingTeacher):
        train(TrainConfig(method="sparc", store=str(bare), out=str(tmp_path / "b"), epochs=1, args=small))


def test_cli_preset_sparc_hga(store, tmp_path):
    from typer.testing import CliRunner

    from vqacache.cli.train_head import app

    runner = CliRunner()
    base = ["--store", str(store), "--preset", "sparc-hga", "--epochs", "1", "--batch-size", "4",
            "--method-arg", "hga_hidden=8", "--method-arg", "fusion_rank=4"]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])  # Table 6's 16 frames; the teacher has 10
    assert refused.exit_code == 2 and "--method-arg num_frames=16" in refused.output
    ok = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--method-arg", "num_frames=0"])
    assert ok.exit_code == 0, ok.output
    import json

    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["optim"]["optimizer"] == "adam" and cfg["optim"]["lr"] == 1e-4 and cfg["batch_size"] == 4
    assert cfg["args"]["backbone"] == "hga" and cfg["args"]["mixup_prob"] == 1.0 and cfg["args"]["num_frames"] == 10
    wrong = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--method", "uniform"])
    assert wrong.exit_code == 2 and "--preset sparc-hga trains --method sparc" in wrong.output
    unknown = runner.invoke(app, ["--store", str(store), "--out", str(tmp_path / "d"), "--preset", "nope"])
    assert unknown.exit_code == 2 and "valid: hga, hga-agqa, sparc-hga, sparc-hga-agqa" in unknown.output


def test_open_ended_answers_outside_the_teachers_top_k_are_counted():
    batch = {k: v for k, v in make_batch().items() if k not in ("cand", "cand_mask")}  # open-ended
    teacher = batch["imageqa"].clone()
    teacher[1, :, ANSWER[1]] = 0.0  # row 1's answer is outside the teacher's top-k on every frame
    teacher[2, 0, ANSWER[2]] = 0.0  # row 2's only on one frame: still inside
    batch["imageqa"] = teacher
    _, logs = sparc.loss(Probe(W, BIAS), batch, ARGS)
    assert logs["outside_topk"] == pytest.approx(1 / 3)
    terms = sparc_terms(Probe(W, BIAS), batch, ARGS, j=torch.tensor([1, 3, 2]), mixup=False)
    assert terms.causal[1].tolist() == [True] * 4  # p_a = 0 everywhere: the fallback
    _, mc_logs = sparc.loss(Probe(W, BIAS), make_batch(), ARGS)
    assert "outside_topk" not in mc_logs  # multiple choice: nothing to report
