"""Each head component against its equation (VideoDistill eq. 1-6), on small random tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqacache.heads.modules import (
    AnswerClassifier,
    CandidateScorer,
    DividedAttention,
    FrameSampler,
    FrameSamplingBlock,
    GumbelTopK,
    LAGate,
    VisionRefinement,
    VisionRefinementBlock,
    gumbel_topk,
    select_frames,
)

B, N, K, P, D, DT, H = 2, 10, 4, 6, 32, 24, 4  # batch, frames, selected, patches, dims, heads


def seeded(seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --- shapes ---------------------------------------------------------------------------


def test_shapes() -> None:
    seeded()
    text, frames, patches = torch.randn(B, DT), torch.randn(B, N, D), torch.randn(B, N, P, D)
    assert LAGate(D, H, DT)(frames, text).shape == (B, N, D)
    assert FrameSamplingBlock(D, H, DT)(frames, text).shape == (B, N, D)

    logits = FrameSampler(D, K, max_frames=16, num_layers=2, num_heads=H, text_dim=DT)(frames, text)
    assert logits.shape == (B, K, N)
    index, mask = GumbelTopK()(logits)
    assert index.shape == (B, K) and index.dtype == torch.int64 and mask.shape == (B, K, N)
    selected = select_frames(mask, patches)
    assert selected.shape == (B, K, P, D)

    tokens = torch.randn(B, 1 + K * P, D)
    assert DividedAttention(D, H, "time")(tokens, K).shape == tokens.shape
    assert DividedAttention(D, H, "space")(tokens, K).shape == tokens.shape
    assert VisionRefinementBlock(D, H, DT)(tokens, text, K).shape == tokens.shape
    video = VisionRefinement(D, K, P, num_layers=2, num_heads=H, text_dim=DT)(selected, text)
    assert video.shape == (B, D)

    assert AnswerClassifier(D, 7)(video).shape == (B, 7)
    cands, cand_mask = torch.randn(B, 5, DT), torch.ones(B, 5, dtype=torch.bool)
    scorer = CandidateScorer(D, DT, 16)
    assert scorer(video, cands, cand_mask).shape == (B, 5)
    assert scorer(torch.randn(B, 5, D), cands, cand_mask).shape == (B, 5)  # one video per candidate


# --- LA-Gate, eq. (1)-(3) ---------------------------------------------------------------


def test_la_gate_scales_each_token_by_one_cosine_per_head() -> None:
    seeded()
    gate, v, text = LAGate(D, H, DT), torch.randn(B, N, D), torch.randn(B, DT)
    seen = {}
    gate.w_v.register_forward_hook(lambda m, i, o: seen.__setitem__("value", o))
    gate.w_o.register_forward_pre_hook(lambda m, i: seen.__setitem__("gated", i[0]))
    out, gates = gate.forward_with_gates(v, text)

    # eq. (1)-(2) by hand from the module's weights: cosine of query and key, head by head.
    q = v @ gate.w_q.weight.T + gate.w_q.bias  # (B, N, D)
    k = text @ gate.w_k.weight.T + gate.w_k.bias  # (B, D)
    d = D // H
    cos = torch.empty(B, H, N)
    for h in range(H):
        qh, kh = q[..., h * d : (h + 1) * d], k[:, None, h * d : (h + 1) * d]
        cos[:, h] = (qh * kh).sum(-1) / (qh.norm(dim=-1) * kh.norm(dim=-1))
    torch.testing.assert_close(gates, cos)
    assert gates.abs().max() <= 1 + 1e-6

    # Every channel of head h of token i is its value times that one scalar, nothing else.
    value = (v @ gate.w_v.weight.T + gate.w_v.bias).view(B, N, H, d)
    torch.testing.assert_close(seen["value"].view(B, N, H, d), value)
    expected_gated = cos.transpose(1, 2)[..., None] * value  # (B, N, H, d)
    torch.testing.assert_close(seen["gated"].view(B, N, H, d), expected_gated)

    # eq. (3) plus the input skip connection.
    expected = v + expected_gated.reshape(B, N, D) @ gate.w_o.weight.T + gate.w_o.bias
    torch.testing.assert_close(out, expected)


def test_la_gate_never_mixes_tokens() -> None:
    seeded()
    gate, v, text = LAGate(D, H, DT), torch.randn(B, N, D), torch.randn(B, DT)
    v2 = v.clone()
    v2[:, 3] += 5.0
    changed = (gate(v2, text) - gate(v, text)).abs().amax(dim=(0, 2)) > 1e-6  # (N,)
    assert changed.tolist() == [i == 3 for i in range(N)]


# --- Gumbel top-K, eq. (4)-(6) ----------------------------------------------------------


def test_straight_through_mask_is_hard_forward_and_soft_backward() -> None:
    g = seeded()
    logits = torch.randn(B, K, N, requires_grad=True)
    frames = torch.randn(B, N, D)
    index, mask = gumbel_topk(logits, tau=0.5, generator=g)
    torch.testing.assert_close(mask.detach(), F.one_hot(index, N).float())  # eq. (5) forward
    selected = select_frames(mask, frames)  # (B, K, D)
    gathered = torch.stack([f[i] for f, i in zip(frames, index)])  # (B, K, D) by indexing
    torch.testing.assert_close(selected.detach(), gathered)

    (selected * torch.randn_like(selected)).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(dim=-1) > 0).all()  # every slot's row gets a gradient


def test_gradients_reach_the_sampler_through_the_selection() -> None:
    seeded()
    sampler = FrameSampler(D, K, max_frames=N, num_layers=2, num_heads=H, text_dim=DT)
    frames, patches, text = torch.randn(B, N, D), torch.randn(B, N, P, D), torch.randn(B, DT)
    _, mask = GumbelTopK().train()(sampler(frames, text))
    select_frames(mask, patches).pow(2).sum().backward()
    for name in ("w_s.weight", "temporal_embed", "blocks.0.gate.w_k.weight"):
        grad = dict(sampler.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_eval_takes_the_argmax_of_each_slot() -> None:
    seeded()
    logits = torch.randn(B, K, N)
    planted = torch.randint(0, N, (B, K))
    logits.scatter_(-1, planted[..., None], 5.0)
    topk = GumbelTopK().eval()
    index, mask = topk(logits)
    assert torch.equal(index, planted)
    assert torch.equal(topk(logits)[0], index)  # deterministic
    torch.testing.assert_close(mask, F.one_hot(planted, N).float())


def test_training_draws_the_planted_frame_nearly_always() -> None:
    g = seeded()
    topk = GumbelTopK(tau=1.0).train()
    logits = torch.zeros(1000, K, N)
    logits[..., 7] = 12.0  # p(other frame) ~ (N - 1) e^-12 ~ 6e-5 per draw
    index, _ = topk(logits, generator=g)
    assert (index == 7).float().mean() > 0.995

    flat, _ = topk(torch.zeros(1000, K, N), generator=g)  # the noise really samples
    counts = torch.bincount(flat.flatten(), minlength=N).float() / flat.numel()
    assert (counts - 1 / N).abs().max() < 0.03


def test_padded_frames_are_never_selected() -> None:
    g = seeded()
    sampler = FrameSampler(D, K, max_frames=N, num_layers=1, num_heads=H, text_dim=DT)
    frame_mask = torch.ones(B, N, dtype=torch.bool)
    frame_mask[0, 6:] = False
    frame_mask[1, :3] = False
    frames, text = torch.randn(B, N, D), torch.randn(B, DT)
    frames[~frame_mask] = 1e3  # padding content must not matter
    logits = sampler(frames, text, frame_mask)
    assert torch.isinf(logits[~frame_mask.unsqueeze(1).expand(-1, K, -1)]).all()
    for _ in range(50):
        index, mask = gumbel_topk(logits, generator=g)
        assert frame_mask.gather(1, index).all() and torch.isfinite(mask).all()


# --- divided space-time attention -------------------------------------------------------


def _changed_tokens(attn: DividedAttention, frame: int, patch: int) -> torch.Tensor:
    """Which output tokens move when one patch token moves: (1 + K*P,) bool."""
    x = torch.randn(1, 1 + K * P, D)
    x2 = x.clone()
    x2[0, 1 + frame * P + patch] += 3.0
    return ((attn(x2, K) - attn(x, K)).abs().amax(dim=(0, 2)) > 1e-6).squeeze(0)


def test_time_attention_mixes_only_the_same_patch_position() -> None:
    seeded()
    changed = _changed_tokens(DividedAttention(D, H, "time"), frame=1, patch=2)
    expected = [True] + [p == 2 for f in range(K) for p in range(P)]  # CLS + column p = 2
    assert changed.tolist() == expected


def test_space_attention_mixes_only_within_a_frame() -> None:
    seeded()
    changed = _changed_tokens(DividedAttention(D, H, "space"), frame=1, patch=2)
    expected = [True] + [f == 1 for f in range(K) for p in range(P)]  # CLS + frame f = 1
    assert changed.tolist() == expected


def test_refinement_block_is_equivariant_to_frame_order() -> None:
    seeded()
    block, text = VisionRefinementBlock(D, H, DT), torch.randn(B, DT)
    cls, patches = torch.randn(B, 1, D), torch.randn(B, K, P, D)
    perm = torch.randperm(K)

    def run(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = block(torch.cat([cls, p.flatten(1, 2)], dim=1), text, K)
        return out[:, 0], out[:, 1:].unflatten(1, (K, P))

    cls_out, patch_out = run(patches)
    cls_perm, patch_perm = run(patches[:, perm])
    torch.testing.assert_close(cls_perm, cls_out)  # the CLS token does not see frame order
    torch.testing.assert_close(patch_perm, patch_out[:, perm])  # patches move with their frame


def test_vision_refinement_depends_on_the_question_and_frame_order() -> None:
    seeded()
    model = VisionRefinement(D, K, P, num_layers=2, num_heads=H, text_dim=DT)
    patches, text = torch.randn(B, K, P, D), torch.randn(B, DT)
    out = model(patches, text)
    other_question = model(patches, torch.randn(B, DT))
    assert (other_question - out).abs().max() > 1e-3  # the gates listen to the question
    reversed_frames = model(patches[:, torch.arange(K).flip(0)], text)
    assert (reversed_frames - out).abs().max() > 1e-3  # the temporal embedding sees frame order


# --- answer heads -----------------------------------------------------------------------


def test_candidate_scorer_ignores_padded_candidates() -> None:
    seeded()
    scorer = CandidateScorer(D, DT, 16)
    video, cands = torch.randn(B, D), torch.randn(B, 5, DT, requires_grad=True)
    cand_mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    logits = scorer(video, cands, cand_mask)
    assert torch.isneginf(logits[0, 3:]).all() and torch.isfinite(logits[1]).all()

    # A padded candidate that would match best still cannot win, and costs nothing.
    tuned = cands.detach().clone()
    target = (scorer.video_proj(video[0]) - scorer.text_proj.bias).detach()  # (16,)
    tuned[0, 4] = torch.linalg.lstsq(scorer.text_proj.weight.detach(), target).solution
    logits2 = scorer(video, tuned, cand_mask)
    torch.testing.assert_close(logits2[0, :3], logits[0, :3])
    assert logits2[0].argmax() < 3

    loss = F.cross_entropy(logits, torch.tensor([1, 4]))
    loss.backward()
    assert torch.isfinite(loss) and cands.grad is not None
    assert cands.grad[0, 3:].abs().sum() == 0 and cands.grad[0, :3].abs().sum() > 0
