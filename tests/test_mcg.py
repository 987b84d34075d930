"""MCG (issue 14): its components against independent recomputations, and the method.

Mutations tried (each planted by hand in the source, the named tests run, then reverted; every
one made at least one test fail):

1. ICL logits' axes swapped (``logits.t()`` in both directions of ``info_nce``):
   ``test_icl_is_eq_1_to_3_against_a_loop`` fails.
2. TCL's column direction computed over rows (``logsumexp(sim, dim=2)`` for r2q):
   ``test_tcl_is_eq_4_to_7_against_a_loop`` fails.
3. alpha dropped (uniform word weights in L_tvc): ``test_tcl_is_eq_4_to_7_against_a_loop`` fails.
4. the decoder's targets shifted wrongly (``ids[:, :-1]``, the token it is fed):
   ``test_teacher_forcing_loss_equals_the_decoders_own_loss`` and
   ``test_generator_learns_a_toy_set_and_maps_strings_to_the_vocabulary`` fail.
5. the logits shifted wrongly (``logits[:, 1:]``): the teacher-forcing test fails.
6. quantile clip at 20%/80%: ``test_saliency_weights_by_hand`` fails.
7. the positive allowed as a hard negative (diagonal not masked):
   ``test_hard_negatives_are_never_the_positive_and_follow_the_similarity`` fails.
8. the adapter's patches taken from the last frame instead of the time average:
   ``test_adapter_averages_patches_over_time`` fails.
9. beam search keeping one hypothesis per step (greedy):
   ``test_beam_search_returns_the_argmax_sequence_of_a_planted_decoder`` fails.
10. eq. 11 weighting L_VTM by lambda_tcl: ``test_multiple_choice_losses_follow_eq_11_and_reach_every_part`` fails.

Over the BERT 6/6 side, the tanh response and the learnable tau_2 (each planted in a copy of
``src/``, the bert/tcl/tanh/tau2/multiple tests run against it):

11. the fusor skipping its cross-attention: ``test_bert_fusor_is_the_upper_layers_with_cross_attention_by_hand``,
    ``test_bert_question_encoder_never_sees_the_video`` (no fusor output depends on the video),
    ``test_multiple_choice_losses_follow_eq_11_and_reach_every_part[bert-tanh-tau2]`` and
    ``test_generator_learns_a_toy_set_and_maps_strings_to_the_vocabulary[bert]`` fail.
12. the split off by one (the encoder keeps split + 1 layers): ``test_bert_folder_splits_into_encoder_fusor_and_decoder``,
    ``test_bert_fusor_is_the_upper_layers_with_cross_attention_by_hand`` and
    ``test_bert_random_tiny_is_seeded_and_hub_names_stay_offline`` fail.
13. eq. 4 without tanh on the memory (``tanh(u) . M``): ``test_tanh_response_is_eq_4_on_a_hand_example`` and
    ``test_tcl_is_eq_4_to_7_against_a_loop[*-tanh]`` fail.
14. tau_2 ignored in eq. 5 (0.1 always): ``test_tcl_is_eq_4_to_7_against_a_loop[0.25-*]``,
    ``test_learnable_tau2_starts_at_01_is_clamped_and_learns`` and the bert-tanh-tau2 eq. 11 test fail.
15. the fusor's self-attention ignoring the question's padding: ``test_bert_fusor_is_the_upper_layers_with_cross_attention_by_hand``
    fails.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.heads.modules.answer_decoder import beam_search, lm_loss
from vqacache.heads.modules.bert_family import load_text_parts
from vqacache.heads.modules.instance_contrast import InstanceContrast, info_nce
from vqacache.heads.modules.space_time_attention import DividedAttention
from vqacache.heads.modules.temporal_adapter import TemporalAdapter, cls_attention
from vqacache.heads.modules.token_contrast import (
    TokenTemperature,
    pool_words,
    responses,
    saliency,
    token_contrast,
    word_index,
)
from vqacache.heads.modules.video_text_matching import hard_negatives, matching_loss

# -- ICL (eq. 1-3) ---------------------------------------------------------------------------------


def test_icl_is_eq_1_to_3_against_a_loop() -> None:
    torch.manual_seed(0)
    icl = InstanceContrast(6, 5, proj_dim=4)
    x, y = torch.randn(5, 6), torch.randn(5, 5)
    loss, sim = icl(x, y)
    icl.requires_grad_(False)
    gx = [icl.video_proj(x[i]) / icl.video_proj(x[i]).norm() for i in range(5)]
    gy = [icl.text_proj(y[j]) / icl.text_proj(y[j]).norm() for j in range(5)]
    tau = 0.07
    total = 0.0
    for i in range(5):
        s = lambda a, b: float(gx[a] @ gy[b]) / tau  # noqa: E731  sim(X_a, Y_b) / tau_1
        x2y = -math.log(math.exp(s(i, i)) / sum(math.exp(s(i, j)) for j in range(5)))
        y2x = -math.log(math.exp(s(i, i)) / sum(math.exp(s(j, i)) for j in range(5)))
        total += x2y + y2x
    assert float(loss.detach()) == pytest.approx(total / 10, rel=1e-5)
    assert float(sim[1, 3].detach()) == pytest.approx(float(gx[1] @ gy[3]), rel=1e-5)


def test_icl_temperature_starts_at_007_and_is_clamped() -> None:
    icl = InstanceContrast(4, 4)
    assert float(icl.temperature().detach()) == pytest.approx(0.07)
    with torch.no_grad():
        icl.temp.fill_(3.0)
    assert float(icl.temperature().detach()) == pytest.approx(0.5) and float(icl.temp.detach()) == pytest.approx(0.5)
    with torch.no_grad():
        icl.temp.fill_(1e-6)
    assert float(icl.temperature().detach()) == pytest.approx(0.001)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    loss, _ = icl(x, y)
    loss.backward()
    assert icl.temp.grad is not None and float(icl.temp.grad) != 0.0  # still learnable


# -- TCL (eq. 4-7) and the saliency weights ------------------------------------------------------------


def test_word_pieces_are_summed_into_words() -> None:
    toks = ["[CLS]", "play", "##ing", "a", "gui", "##tar", "[SEP]", "[PAD]"]
    idx = word_index(toks, {"[CLS]", "[SEP]", "[PAD]"})
    assert idx == [-1, 0, 0, 1, 2, 2, -1, -1]
    emb = torch.arange(8, dtype=torch.float32)[None, :, None].expand(1, 8, 2)  # token l has value l
    attn = torch.tensor([[0.3, 0.1, 0.05, 0.2, 0.1, 0.15, 0.1, 0.0]])
    words, wattn, mask = pool_words(emb, attn, torch.tensor([idx]))
    assert words[0, :, 0].tolist() == [1 + 2, 3, 4 + 5]
    assert wattn[0].tolist() == pytest.approx([0.15, 0.2, 0.25])
    assert mask.tolist() == [[True, True, True]]


def test_saliency_weights_by_hand() -> None:
    raw = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0, 9.0], [0.2, 0.6, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, True, False], [True, True, False, False, False, False]])
    w = saliency(raw, mask)
    # row 0: valid 5,1,3,2,4 -> 10% quantile 1 + 0.4 = 1.4, 90% 4 + 0.6 = 4.6 -> 4.6,1.4,3,2,4 / 15
    assert w[0].tolist() == pytest.approx([4.6 / 15, 1.4 / 15, 3 / 15, 2 / 15, 4 / 15, 0.0])
    # row 1: 0.2, 0.6 -> quantiles 0.24, 0.56 -> 0.24, 0.56 / 0.8
    assert w[1].tolist() == pytest.approx([0.3, 0.7, 0, 0, 0, 0])


def _direction_loop(q: torch.Tensor, k: torch.Tensor, qm: torch.Tensor, km: torch.Tensor, w: torch.Tensor,
                    response: str = "softmax", tau: float = 0.1) -> float:
    total = 0.0
    for b in range(q.shape[0]):
        qs = [q[b, n].tolist() for n in range(q.shape[1]) if qm[b, n]]
        ks = [k[b, m].tolist() for m in range(k.shape[1]) if km[b, m]]
        ws = [float(w[b, n]) for n in range(q.shape[1]) if qm[b, n]]
        dot = lambda u, v: sum(a * c for a, c in zip(u, v, strict=True))  # noqa: E731
        resp = []
        for qn in qs:  # eq. 4
            if response == "softmax":  # the released code: attention over the keys at temperature 0.1
                e = [math.exp(dot(qn, km_) / 0.1) for km_ in ks]
            else:  # the paper: M^T softmax(tanh(M) tanh(u))
                e = [math.exp(dot([math.tanh(v) for v in km_], [math.tanh(v) for v in qn])) for km_ in ks]
            r = [sum(e[m] / sum(e) * ks[m][d] for m in range(len(ks))) for d in range(len(qn))]
            norm = math.sqrt(dot(r, r))
            resp.append([v / norm for v in r])
        sim = lambda i, j: dot(qs[i], resp[j]) / tau  # noqa: E731
        for i in range(len(qs)):  # eq. 5: row and column, weighted
            y2r = -math.log(math.exp(sim(i, i)) / sum(math.exp(sim(i, j)) for j in range(len(qs))))
            r2y = -math.log(math.exp(sim(i, i)) / sum(math.exp(sim(j, i)) for j in range(len(qs))))
            total += ws[i] * (y2r + r2y) / 2
    return total / q.shape[0]


def _tcl_example() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    words = F.normalize(torch.randn(2, 4, 6), dim=-1)
    patches = F.normalize(torch.randn(2, 5, 6), dim=-1)
    wmask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    alpha = saliency(torch.rand(2, 4), wmask)
    beta = saliency(torch.rand(2, 5), torch.ones(2, 5, dtype=torch.bool))
    return words, patches, wmask, alpha, beta


@pytest.mark.parametrize("response", ["softmax", "tanh"])
@pytest.mark.parametrize("tau", [0.1, 0.25])
def test_tcl_is_eq_4_to_7_against_a_loop(response: str, tau: float) -> None:
    words, patches, wmask, alpha, beta = _tcl_example()
    got = float(token_contrast(words, patches, wmask, alpha, beta, torch.tensor(tau), response))
    pm = torch.ones(2, 5, dtype=torch.bool)
    expect = (_direction_loop(words, patches, wmask, pm, alpha, response, tau)
              + _direction_loop(patches, words, pm, wmask, beta, response, tau)) / 2
    assert got == pytest.approx(expect, rel=1e-4)


def test_tanh_response_is_eq_4_on_a_hand_example() -> None:
    # one word u = (1, 0), memory M = [(1, 0), (0, 1)]: tanh(M) tanh(u) = (tanh(1)^2, 0)
    t2 = math.tanh(1.0) ** 2
    rho = [math.exp(t2) / (math.exp(t2) + 1), 1 / (math.exp(t2) + 1)]  # 0.641, 0.359
    norm = math.hypot(*rho)
    u, mem, ok = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.ones(1, 2, dtype=bool)
    assert responses(u, mem, ok, "tanh")[0, 0].tolist() == pytest.approx([rho[0] / norm, rho[1] / norm], rel=1e-5)
    # the released rule on the same example: softmax((1, 0) / 0.1) = (1, e^-10) / (1 + e^-10)
    soft = responses(u, mem, ok, "softmax")[0, 0].tolist()
    assert soft == pytest.approx([1 / math.hypot(1, math.exp(-10)), math.exp(-10) / math.hypot(1, math.exp(-10))])
    # a masked memory slot takes no weight
    assert responses(u, mem, torch.tensor([[False, True]]), "tanh")[0, 0].tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="tanh"):
        responses(u, mem, ok, "sigmoid")


def test_learnable_tau2_starts_at_01_is_clamped_and_learns() -> None:
    tau = TokenTemperature()
    assert float(tau().detach()) == pytest.approx(0.1)
    words, patches, wmask, alpha, beta = _tcl_example()
    fixed = token_contrast(words, patches, wmask, alpha, beta)
    learnt = token_contrast(words, patches, wmask, alpha, beta, tau())
    assert float(learnt.detach()) == pytest.approx(float(fixed), rel=1e-6)
    learnt.backward()
    assert tau.temp.grad is not None and float(tau.temp.grad) != 0.0
    with torch.no_grad():
        tau.temp.fill_(2.0)
    assert float(tau().detach()) == pytest.approx(0.5)
    with torch.no_grad():
        tau.temp.fill_(-1.0)
    assert float(tau().detach()) == pytest.approx(0.001)


# -- VTM (eq. 9) -----------------------------------------------------------------------------------------


def test_hard_negatives_are_never_the_positive_and_follow_the_similarity() -> None:
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6) + 20 * torch.eye(6)  # positives by far the most similar
    for _ in range(20):
        nt, nv = hard_negatives(sim, g)
        assert (nt != torch.arange(6)).all() and (nv != torch.arange(6)).all()
    planted = torch.zeros(4, 4)
    planted[0, 2] = planted[1, 3] = planted[2, 0] = planted[3, 1] = 30.0  # the hardest text of each video
    nt, nv = hard_negatives(planted, g)
    assert nt.tolist() == [2, 3, 0, 1] and nv.tolist() == [2, 3, 0, 1]
    assert hard_negatives(torch.zeros(1, 1))[0].numel() == 0
    pos, neg = torch.randn(3, 2), torch.randn(6, 2)
    expect = -(sum(F.log_softmax(pos[i], 0)[1] for i in range(3)) + sum(F.log_softmax(neg[i], 0)[0] for i in range(6))) / 9
    assert float(matching_loss(pos, neg)) == pytest.approx(float(expect), rel=1e-5)


# -- the temporal adapter ------------------------------------------------------------------------------


def test_adapter_averages_patches_over_time() -> None:
    torch.manual_seed(0)
    ad = TemporalAdapter(in_dim=6, dim=8, num_frames=3, num_patches=4, num_layers=1, num_heads=2).eval()
    patch = torch.randn(2, 3, 4, 6)
    out = ad(patch)
    assert out.tokens.shape == (2, 5, 8) and out.beta.shape == (2, 4)
    # recompute the output tokens by hand from the block's pieces
    x = ad.proj(patch) + ad.space_pos[None, None] + ad.time_pos[None, :, None]
    x = torch.cat([ad.cls.expand(2, -1, -1), x.flatten(1, 2)], 1)
    blk = ad.blocks[0]
    x = x + blk.time(blk.norm_t(x), 3)
    x = x + blk.space(blk.norm_s(x), 3)
    x = ad.norm(x + blk.mlp(blk.norm_m(x)))
    assert torch.allclose(out.tokens[:, 0], x[:, 0], atol=1e-5)
    assert torch.allclose(out.tokens[:, 1:], x[:, 1:].view(2, 3, 4, 8).mean(1), atol=1e-5)
    assert float(out.beta.sum(1).max()) <= 1.0 + 1e-6 and float(out.beta.min()) > 0


def test_cls_attention_is_the_weights_the_attention_uses() -> None:
    torch.manual_seed(0)
    attn = DividedAttention(8, 1, "space")
    x = torch.randn(2, 1 + 2 * 3, 8)
    a = cls_attention(attn, x)  # (B, M)
    _, _, v = attn.qkv(x).chunk(3, dim=-1)
    assert torch.allclose(attn(x, 2)[:, 0], attn.proj((a[:, :, None] * v).sum(1)), atol=1e-5)
    assert torch.allclose(a.sum(1), torch.ones(2))


# -- the answer decoder (eq. 10) ---------------------------------------------------------------------------


VOCAB = ["what", "colour", "is", "the", "shape", "red", "blue", "green", "circle", "square", "a"]


def test_teacher_forcing_loss_equals_the_decoders_own_loss() -> None:
    parts = load_text_parts("random", size="tiny", vocab=VOCAB)
    ids = parts.tokenizer(["red circle", "blue", "green square a"], padding="longest", return_tensors="pt")
    tok, mask = ids["input_ids"].clone(), ids["attention_mask"]
    tok[:, 0] = parts.gen_id
    states = torch.randn(3, 5, 32)
    smask = torch.ones(3, 5, dtype=torch.long)
    out = parts.decoder(input_ids=tok, attention_mask=mask, encoder_hidden_states=states,
                        encoder_attention_mask=smask, labels=tok.masked_fill(mask == 0, -100), reduction="none")
    ours = lm_loss(out.logits, tok, mask)
    assert float(ours.detach()) == pytest.approx(float(out.loss.mean().detach()), rel=1e-5)
    assert parts.decoder.config.label_smoothing == 0.1


def test_beam_search_returns_the_argmax_sequence_of_a_planted_decoder() -> None:
    # tokens: 0 bos, 1 eos, 2 a, 3 b, 4 c. Greedy takes "a" (0.5) then flat; the best sequence is "b c".
    table = {(0,): [0, 0.05, 0.5, 0.45, 0.0], (0, 2): [0, 0.3, 0.35, 0.35, 0.0], (0, 3): [0, 0.0, 0.0, 0.0, 1.0],
             (0, 3, 4): [0, 1.0, 0, 0, 0]}

    def probs(prefix: tuple[int, ...]) -> list[float]:
        return table.get(prefix, [0, 0.6, 0.2, 0.2, 0.0])

    def step(ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([probs(tuple(r)) for r in ids.tolist()]).clamp_min(1e-12).log()

    def score(seq: list[int]) -> float:  # plain log-probability of seq + eos
        s, prefix = 0.0, (0,)
        for t in [*seq, 1]:
            s += math.log(max(probs(prefix)[t], 1e-12))
            prefix = (*prefix, t)
        return s

    import itertools

    every = [list(s) for n in range(1, 4) for s in itertools.product([2, 3, 4], repeat=n)]
    best = max(every, key=score)
    assert best == [3, 4]
    assert beam_search(step, 0, 1, num_beams=3, max_length=10, length_penalty=0.0) == best
    assert beam_search(step, 0, 1, num_beams=3, max_length=10) == [3, 4]
    assert beam_search(step, 0, 1, num_beams=1, max_length=10, length_penalty=0.0) != best  # greedy misses it
    assert len(beam_search(lambda ids: torch.tensor([[0, 0.0, 1, 0, 0]] * len(ids)).clamp_min(1e-12).log(),
                           0, 1, max_length=10)) == 9  # never ends: 10 tokens with bos


# -- the BERT 6/6 text side (text_model=bert) -------------------------------------------------------------

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "man", "play", "##ing", "gui", "##tar",
              "red", "circle", "a"]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_pretrained folder of a tiny BertForPreTraining (4 layers, width 32) and its WordPiece tokenizer."""
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    model = BertForPreTraining(cfg)
    with torch.no_grad():  # non-trivial LayerNorms and biases, so that skipped or misplaced pieces show
        for name, prm in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                prm.add_(0.1 * torch.randn_like(prm))
    model.save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(BERT_VOCAB)}).save_pretrained(folder)
    return folder


def _reference_bert(folder: Path) -> Any:
    from transformers import BertModel

    return BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                     attn_implementation="eager").eval()


def _hand_cross_attention(ca: Any, h: torch.Tensor, x: torch.Tensor, heads: int) -> torch.Tensor:
    """BERT's cross-attention block written out: softmax(q k^T / sqrt(d)) v per head, dense, residual, LayerNorm."""
    B, L, H = h.shape
    d = H // heads
    q = (h @ ca.self.query.weight.T + ca.self.query.bias).view(B, L, heads, d).transpose(1, 2)
    k = (x @ ca.self.key.weight.T + ca.self.key.bias).view(B, -1, heads, d).transpose(1, 2)
    v = (x @ ca.self.value.weight.T + ca.self.value.bias).view(B, -1, heads, d).transpose(1, 2)
    ctx = ((q @ k.transpose(-1, -2)) / math.sqrt(d)).softmax(-1) @ v  # (B, heads, L, d)
    out = ctx.transpose(1, 2).reshape(B, L, H) @ ca.output.dense.weight.T + ca.output.dense.bias
    return F.layer_norm(out + h, (H,), ca.output.LayerNorm.weight, ca.output.LayerNorm.bias, ca.output.LayerNorm.eps)


def test_bert_folder_splits_into_encoder_fusor_and_decoder(bert_folder: Path) -> None:
    from vqacache.heads.modules.blip2_family import resolve_folder

    side = load_text_parts(str(bert_folder), text_model="bert").eval()
    ref = _reference_bert(bert_folder)
    assert side.identity == resolve_folder(str(bert_folder))[1] and side.identity.startswith("sha256:")
    assert (len(side.encoder.encoder.layer), len(side.fusor.layer), len(side.decoder.bert.encoder.layer)) == (2, 2, 4)
    tok = side.tokenizer
    assert (side.fus_id, side.gen_id) == (len(BERT_VOCAB), len(BERT_VOCAB) + 1) and {"[FUS]", "[GEN]"} <= side.specials
    enc = tok(["what is the man playing", "a red guitar"], padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert tok.convert_ids_to_tokens(ids[0].tolist())[5:7] == ["play", "##ing"] and int(mask[1].sum()) < ids.shape[1]
    # the question encoder: BERT's first half, its output the full BERT's hidden state after layer 2
    ref_out = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    y, cls_attn = side.encode(ids, mask)
    assert torch.allclose(y, ref_out.hidden_states[2], atol=1e-5)
    assert torch.allclose(cls_attn, ref_out.attentions[1][:, :, 0].mean(1), atol=1e-6)
    assert not any("crossattention" in n for n, _ in side.encoder.named_parameters())  # it has no way to the video
    # the fusor: BERT's layers 3-4 (their self-attention and FFN weights), each with a new cross-attention
    for i, fl in enumerate(side.fusor.layer):
        upper = ref.encoder.layer[2 + i]
        assert torch.equal(fl.attention.self.query.weight, upper.attention.self.query.weight)
        assert torch.equal(fl.output.dense.weight, upper.output.dense.weight)
    # the decoder: every BERT layer, the checkpoint's MLM head as the LM head, causal, reading the states
    dec = side.decoder
    for i in range(4):
        assert torch.equal(dec.bert.encoder.layer[i].attention.self.key.weight, ref.encoder.layer[i].attention.self.key.weight)
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(bert_folder / "model.safetensors"))
    assert torch.equal(dec.cls.predictions.transform.dense.weight, saved["cls.predictions.transform.dense.weight"])
    states, smask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.long)
    logits = side.decode(ids, mask, states, smask)
    changed = ids.clone()
    changed[:, 3] = 13
    later = side.decode(changed, mask, states, smask)
    assert torch.allclose(logits[:, :3], later[:, :3], atol=1e-5) and not torch.allclose(logits[:, 3:], later[:, 3:])
    assert not torch.allclose(side.decode(ids, mask, states + 1, smask), logits)
    # teacher forcing: lm_loss (no smoothing) is the decoder's own causal LM loss on equal-length answers
    labels = ids[:, :4]
    own = dec(input_ids=labels, encoder_hidden_states=states, encoder_attention_mask=smask, labels=labels).loss
    ours = lm_loss(side.decode(labels, torch.ones_like(labels), states, smask), labels, torch.ones_like(labels), 0.0)
    assert float(ours.detach()) == pytest.approx(3 * float(own.detach()), rel=1e-5)  # summed over 3 targets


class _PassThrough(torch.nn.Module):
    def forward(self, h: torch.Tensor, **_: Any) -> tuple[torch.Tensor, None]:
        return h, None


def test_bert_fusor_is_the_upper_layers_with_cross_attention_by_hand(bert_folder: Path) -> None:
    from vqacache.heads.modules.bert_family import additive_mask

    side = load_text_parts(str(bert_folder), text_model="bert").eval()
    ref = _reference_bert(bert_folder)
    enc = side.tokenizer(["what is the man playing", "a red guitar"], padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        got, fmask = side.fuse(ids, mask, x)
        # by hand: the full BERT's state after layer 2, [FUS] first; then per upper layer its own
        # self-attention (transformers' module), cross-attention written out, its own FFN
        y = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        h = torch.cat([side.encoder.embeddings(input_ids=torch.full((2, 1), side.fus_id)), y], 1)
        assert fmask.tolist() == torch.cat([torch.ones(2, 1, dtype=torch.long), mask], 1).tolist()
        am = additive_mask(fmask, h.dtype)
        for i in range(2):
            upper = ref.encoder.layer[2 + i]
            h = upper.attention(h, am)[0]
            h = _hand_cross_attention(side.fusor.layer[i].crossattention, h, x, heads=4)
            h = upper.output(upper.intermediate(h), h)
        assert torch.allclose(got, h, atol=1e-5)
        # without its cross-attention blocks the fusor is BERT's layers 3-4 as transformers runs them
        for fl in side.fusor.layer:
            fl.crossattention = _PassThrough()
        h0 = torch.cat([side.fus_embedding(2, ids.device), y], 1)
        plain = h0
        for upper in ref.encoder.layer[2:]:
            plain = upper(plain, am)
        assert torch.allclose(side.fusor(h0, fmask, x), plain, atol=1e-4)
        assert torch.allclose(side.fusor(h0, fmask, x + 5.0), plain, atol=1e-4)  # no video path left


def test_bert_random_tiny_is_seeded_and_hub_names_stay_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    a = load_text_parts("random", text_model="bert", size="tiny", vocab=VOCAB, seed=4)
    b = load_text_parts("random", text_model="bert", size="tiny", vocab=VOCAB, seed=4)
    assert a.identity == "random:4" and a.tokenizer.convert_ids_to_tokens([4]) == ["what"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert (len(a.encoder.encoder.layer), len(a.fusor.layer), len(a.decoder.bert.encoder.layer)) == (2, 2, 4)
    assert torch.equal(a.decoder.bert.encoder.layer[3].attention.self.query.weight,
                       a.fusor.layer[1].attention.self.query.weight)  # the decoder starts from the same BERT
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    for name in ("default", "bert-base-uncased", "Nobody/not-a-cached-bert"):
        with pytest.raises(UsageError) as err:
            load_text_parts(name, text_model="bert")
        assert "--weights" in str(err.value) and "\n" not in str(err.value), name
    assert "google-bert/bert-base-uncased" in str(pytest.raises(UsageError, load_text_parts, "default",
                                                                text_model="bert").value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UsageError) as err:
        load_text_parts(str(tmp_path / "empty"), text_model="bert")
    assert "--weights" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="text_model"):
        load_text_parts("random", text_model="gpt", size="tiny")


# -- the method ------------------------------------------------------------------------------------------

from vqacache.heads.data import QADataset, collate  # noqa: E402
from vqacache.heads.methods import mcg  # noqa: E402
from vqacache.heads.stores import StoreSet  # noqa: E402
from vqacache.heads.synthetic import make_temporal_store  # noqa: E402

TINY = {"weights": "random", "size": "tiny", "num_frames": 4}
W, P = 16, 4


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcg") / "synthetic.zarr"
    make_temporal_store(path, splits={"train": 6, "val": 3}, n_frames=8, dim=W, n_patches=P, teacher=False)
    return path


def _setup(store_path: Path, **over: Any) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    stores = StoreSet(store_path)
    args = {**mcg.DEFAULTS, **TINY, **over}
    args = {**args, **mcg.prepare(args, stores)}
    ds = QADataset(stores, "train", training=True, **mcg.data(args))
    return args, ds.dims(), collate([ds[i] for i in range(4)])


BLIP_PARTS = ("text.encoder.encoder.layer.0.crossattention.self.query.weight", "text.decoder.cls.predictions.bias")
BERT_PARTS = ("text.encoder.encoder.layer.0.attention.self.query.weight",
              "text.fusor.layer.0.crossattention.self.query.weight", "text.decoder.cls.predictions.bias", "tau2.temp")


@pytest.mark.parametrize(("over", "parts"), [
    ({}, BLIP_PARTS),
    ({"text_model": "bert", "response": "tanh", "learn_tau2": True}, BERT_PARTS),
], ids=["blip", "bert-tanh-tau2"])
def test_multiple_choice_losses_follow_eq_11_and_reach_every_part(store_path: Path, over: dict[str, Any],
                                                                  parts: tuple[str, ...]) -> None:
    args, dims, batch = _setup(store_path, lambda_icl=0.5, lambda_tcl=2.0, lambda_vtm=3.0, **over)
    torch.manual_seed(0)
    model = mcg.McgModel(args, dims).train()
    total, stats = mcg.loss(model, batch, args)
    assert set(stats) == {"l_icl", "l_tcl", "l_vtm", "l_answer", "loss"}
    expect = 0.5 * stats["l_icl"] + 2.0 * stats["l_tcl"] + 3.0 * stats["l_vtm"] + stats["l_answer"]
    assert float(total.detach()) == pytest.approx(expect, rel=1e-5)
    total.backward()
    for name in ("adapter.proj.weight", "icl.video_proj.weight", "vtm_head.weight", *parts):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    model.eval()
    logits = mcg.predict(model, batch)
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()
    model.args["mc_score"] = "likelihood"
    lik = mcg.predict(model, batch)
    assert lik.shape == (4, 4) and (lik <= 0).all()


def test_bert_question_encoder_never_sees_the_video(store_path: Path) -> None:
    args, dims, batch = _setup(store_path, text_model="bert")
    torch.manual_seed(0)
    model = mcg.McgModel(args, dims).train()
    patch = batch["patch"].clone().requires_grad_(True)
    seen: dict[str, list[torch.Tensor]] = {"encoder": [], "fusor": []}
    hooks = [model.text.encoder.register_forward_hook(lambda m, i, o: seen["encoder"].append(o.last_hidden_state)),
             model.text.fusor.register_forward_hook(lambda m, i, o: seen["fusor"].append(o))]
    mcg.loss(model, {**batch, "patch": patch}, args)  # ICL, TCL, VTM (fusing negatives too) and the LM loss
    for h in hooks:
        h.remove()
    assert len(seen["encoder"]) >= 4 and len(seen["fusor"]) >= 3
    for y in seen["encoder"]:  # the question encoder's states do not depend on the video
        assert torch.autograd.grad(y.sum(), patch, retain_graph=True, allow_unused=True)[0] is None
    for f in seen["fusor"]:  # the fusor's do
        grad = torch.autograd.grad(f.sum(), patch, retain_graph=True, allow_unused=True)[0]
        assert grad is not None and float(grad.abs().sum()) > 0


def test_contrast_text_question_answer_feeds_the_answer_to_the_question_encoder(store_path: Path) -> None:
    args, dims, batch = _setup(store_path, contrast_text="question_answer", lambda_vtm=0.0)
    model = mcg.McgModel(args, dims)
    seen: list[list[str]] = []
    encode = model.encode_question
    model.encode_question = lambda texts: (seen.append(texts), encode(texts))[1]  # type: ignore[method-assign]
    mcg.loss(model, batch, args)
    answers = [batch["candidates"][b][int(batch["answer"][b])] for b in range(4)]
    assert seen == [[f"{q} {a}" for q, a in zip(batch["question"], answers, strict=True)]]


def test_ablations_drop_their_losses(store_path: Path) -> None:
    args, dims, batch = _setup(store_path, lambda_tcl=0.0, lambda_icl=0.0, lambda_vtm=0.0)
    model = mcg.McgModel(args, dims)
    total, stats = mcg.loss(model, batch, args)
    assert "l_tcl" not in stats and "l_vtm" not in stats
    assert float(total.detach()) == pytest.approx(stats["l_answer"], rel=1e-6)


def test_names_and_weights_are_checked(store_path: Path) -> None:
    args, dims, _ = _setup(store_path)
    with pytest.raises(UnknownName) as err:
        mcg.McgModel({**args, "head": "mlp"}, dims)
    assert "generator" in str(err.value) and "classifier" in str(err.value)
    with pytest.raises(UnknownName, match="question_answer"):
        mcg.McgModel({**args, "contrast_text": "caption"}, dims)
    with pytest.raises(UnknownName, match="blip, bert"):
        mcg.McgModel({**args, "text_model": "gpt"}, dims)
    with pytest.raises(UnknownName, match="softmax, tanh"):
        mcg.McgModel({**args, "response": "sigmoid"}, dims)
    with pytest.raises(UsageError, match="open-ended"):
        mcg.McgModel({**args, "head": "classifier"}, dims)
    with pytest.raises(UsageError, match="size=tiny"):
        load_text_parts("random")
    with pytest.raises(UsageError) as err:
        load_text_parts("Nobody/not-a-cached-model")
    assert "Nobody/not-a-cached-model" in str(err.value) and "\n" not in str(err.value)


def _toy_open_ended(head: str, text_model: str = "blip") -> tuple[mcg.McgModel, dict[str, Any], dict[str, Any]]:
    answers = ["red circle", "blue square", "green circle", "red square"]
    args = {**mcg.DEFAULTS, **TINY, "head": head, "text_model": text_model, "weights_identity": "random:0",
            "answer_vocab": answers,
            "vocab": sorted({w for a in answers for w in a.split()} | {"what", "is", "it"}), "lambda_tcl": 0.0,
            "lambda_icl": 0.0, "lambda_vtm": 0.0}
    dims = {"patch_dim": 8, "num_patches": 2, "num_answers": 4, "cls_dim": 8, "text_dim": 0}
    torch.manual_seed(0)
    model = mcg.McgModel(args, dims)
    protos = torch.randn(4, 8) * 2
    patch = protos[:, None, None, :].expand(4, 4, 2, 8) + 0.05 * torch.randn(4, 4, 2, 8)
    batch = {"patch": patch, "question": ["what is it"] * 4, "answer": torch.arange(4)}
    return model, args, batch


def _fit(model: mcg.McgModel, args: dict[str, Any], batch: dict[str, Any], steps: int, lr: float) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is several times faster on a shared CPU
    try:
        _steps(model, args, batch, steps, lr)
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _steps(model: mcg.McgModel, args: dict[str, Any], batch: dict[str, Any], steps: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        mcg.loss(model, batch, args)[0].backward()
        opt.step()


def test_classifier_head_is_exact_on_a_toy_set() -> None:
    model, args, batch = _toy_open_ended("classifier")
    _fit(model, args, batch, 25, 1e-2)
    assert mcg.predict(model, batch).argmax(1).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("text_model", ["blip", "bert"])
def test_generator_learns_a_toy_set_and_maps_strings_to_the_vocabulary(text_model: str) -> None:
    model, args, batch = _toy_open_ended("generator", text_model)
    _fit(model, args, batch, 120, 3e-3)
    fused, fmask = model.fuse(batch["question"], model.adapter(batch["patch"]).tokens)
    assert model.generate(fused, fmask) == ["red circle", "blue square", "green circle", "red square"]
    assert mcg.predict(model, batch).argmax(1).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("extra", [[], ["text_model=bert", "response=tanh", "learn_tau2=true"]], ids=["blip", "bert"])
def test_cli_trains_mcg_end_to_end(store_path: Path, tmp_path: Path, extra: list[str]) -> None:
    import json

    from typer.testing import CliRunner

    from vqacache.cli.train_head import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "--method", "mcg", "--store", str(store_path), "--out", str(out), "--weights", "random",
        "--method-arg", "size=tiny", "--num-frames", "4", "--epochs", "1", "--batch-size", "4",
        *[a for kv in extra for a in ("--method-arg", kv)],
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["weights_identity"] == "random:0" and config["args"]["num_frames"] == 4
    assert config["args"]["text_model"] == ("bert" if extra else "blip")
    preds = json.loads((out / "predictions" / "val.json").read_text())
    assert len(preds) == 6 and all(set(p) == {"prediction", "answer"} for p in preds.values())
    assert (out / "curves.png").stat().st_size > 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train_l_icl", "train_l_tcl", "train_l_vtm", "train_l_answer"} <= set(metrics[-1])
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    rebuilt = mcg.McgModel(ckpt["model_args"], ckpt["dims"])  # the recorded vocabulary gives the same ids
    rebuilt.load_state_dict(ckpt["model"])


def test_diagnostic_mean_and_standard_error_by_hand() -> None:
    import importlib.util

    import sys

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(benchmarks) not in sys.path:  # mcg_diagnostic imports mean_se from diagnostic.py beside it
        sys.path.insert(0, str(benchmarks))
    path = benchmarks / "mcg_diagnostic.py"
    spec = importlib.util.spec_from_file_location("mcg_diagnostic_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    # 28.33, 85, 58.33: mean 57.22; sample variance ((-28.89)^2 + 27.78^2 + 1.11^2) / 2 = 803.8, se sqrt(803.8 / 3)
    mean, se = module.mean_se([28.33, 85.0, 58.33])
    assert mean == pytest.approx(57.2200, abs=1e-3) and se == pytest.approx(16.375, abs=1e-2)
    assert module.mean_se([5.0]) == (5.0, 0.0)
