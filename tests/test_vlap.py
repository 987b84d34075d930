"""VLAP (issue 12): each equation tied to code by an independent recomputation, the frozen and
trained parts, the option-letter prediction, ``--method-arg``, and a run end to end.

Everything runs on the CPU with ``--weights random --method-arg size=tiny`` on a small
synthetic store (T = 8 frames of 1 + 4 tokens, width 16).

Mutations tried (each made by hand in the code, the suite run, the change reverted):

1. ``segment_means`` averages over the token axis (``mean(dim=-2)``) instead of the channels:
   fails ``test_segment_means_are_channel_means_of_consecutive_frames`` (shape and values).
2. ``straight_through_gumbel`` returns ``hard`` alone (no ``- soft.detach() + soft``): fails
   ``test_straight_through_gradient_is_the_soft_samples_gradient`` (no gradient).
3. ``prompter_temperature`` as ``0.01 ** (1 - step / total)`` (schedule reversed): fails
   ``test_temperature_schedule``.
4. ``DistillDecoder`` LayerNorm over the channels under ``norm="tokens"``: fails
   ``test_distiller_decoder_and_mse_by_hand``.
5. The teacher pass of ``VlapModel.forward`` outside ``torch.no_grad()`` with the teacher left
   trainable (``requires_grad_(False)`` dropped): fails ``test_teacher_gets_no_gradient``.
6. ``FrozenT5.option_logits`` reads the decoder's first position (``logits[:, 0]``) instead
   of the letter step: fails ``test_prediction_is_the_argmax_over_the_option_letters``.
7. ``L = L_task - w L_distill`` (wrong sign): survived the first version of this module;
   ``test_total_loss_is_the_task_loss_plus_the_weighted_distillation`` now fails on it.

(Mutations 1-5 also fail the model-level tests that run a whole training step.)

Added with ``llm_dtype`` and ``prompter_lr_scale``:

8. ``VlapModel`` builds ``FrozenT5`` on ``parts.llm`` without the cast to ``llm_dtype``: fails
   ``test_bfloat16_llm_keeps_the_trained_parts_float32_and_the_loss_close``.
9. ``VlapModel.lr_scale`` returns 1 for every parameter: fails
   ``test_prompter_lr_scale_gives_the_prompter_its_own_learning_rate``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.heads.data import QADataset, collate, segment_positions
from vqacache.heads.methods import get_method, method_args, parse_method_args
from vqacache.heads.methods.common import TrainStep
from vqacache.heads.methods.vlap import VlapModel, prepare
from vqacache.heads.modules.frame_prompter import (
    FramePrompter,
    prompter_temperature,
    segment_means,
    straight_through_gumbel,
)
from vqacache.heads.modules.frozen_llm import build_prompt
from vqacache.heads.modules.qformer_distiller import QFormerDistiller
from vqacache.heads.stores import StoreSet
from vqacache.heads.synthetic import make_temporal_store

T, K, P, W = 8, 2, 4, 16
TINY = {"weights": "random", "size": "tiny", "num_frames": T, "num_select": K}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vlap") / "synthetic.zarr"
    make_temporal_store(path, splits={"train": 6, "val": 3}, n_frames=16, dim=W, n_patches=P, teacher=False)
    return path


def _setup(store_path: Path, **over: Any) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """(args, dims, a training batch of 4) for a tiny random VLAP on the synthetic store."""
    method = get_method("vlap")
    stores = StoreSet(store_path)
    args = method_args(method, {**TINY, **over})
    args = {**args, **prepare(args, stores)}
    ds = QADataset(stores, "train", training=True, **method.data(args))
    batch = collate([ds[i] for i in range(4)])
    return args, ds.dims(), batch


# -- Frame-Prompter (eq. 2-5) ----------------------------------------------------------------------


def test_segment_means_are_channel_means_of_consecutive_frames() -> None:
    tokens = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)  # (B, T=4, N=3, W=5)
    out = segment_means(tokens, 2)  # K=2, S=2
    assert out.shape == (2, 2, 6)
    for b in range(2):
        for k in range(2):
            expect = []
            for s in range(2):
                frame = 2 * k + s
                expect += [sum(tokens[b, frame, n].tolist()) / 5 for n in range(3)]
            torch.testing.assert_close(out[b, k], torch.tensor(expect))


def test_prompter_scores_follow_eq2_with_one_set_of_weights_per_segment() -> None:
    torch.manual_seed(0)
    fp = FramePrompter(num_frames=6, num_segments=3, num_tokens=2)
    tokens = torch.randn(1, 6, 2, 4)
    logits = fp.scores(tokens)  # (1, 3, 2)
    for k in range(3):
        x = torch.tensor([tokens[0, 2 * k + s, n].mean().item() for s in range(2) for n in range(2)])
        h = fp.w1.weight @ x + fp.w1.bias
        h = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + fp.ln.eps) * fp.ln.weight + fp.ln.bias
        expect = fp.w2.weight @ torch.clamp(h, min=0) + fp.w2.bias
        torch.testing.assert_close(logits[0, k], expect)


def test_exactly_one_frame_per_segment_in_the_forward_pass() -> None:
    torch.manual_seed(1)
    fp = FramePrompter(num_frames=T, num_segments=K, num_tokens=3).train()
    tokens = torch.randn(3, T, 3, 5)
    out = fp(tokens, tau=0.5)
    S = T // K
    assert out.weights.shape == (3, K, S)
    assert torch.equal(out.weights.detach(), F.one_hot(out.weights.detach().argmax(-1), S).float())
    for b in range(3):
        for k in range(K):
            i = int(out.index[b, k])
            assert k * S <= i < (k + 1) * S
            torch.testing.assert_close(out.frames[b, k], tokens[b, i])


def test_straight_through_gradient_is_the_soft_samples_gradient() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 4, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(2, 3, 4)))
    upstream = torch.randn(2, 3, 4)
    hard, _ = straight_through_gumbel(logits, 0.7, noise)
    (hard * upstream).sum().backward()
    st_grad = logits.grad.clone()
    # independent: the soft Gumbel-softmax sample of eq. 5, written out
    ref = logits.detach().clone().requires_grad_(True)
    logp = ref - torch.logsumexp(ref, dim=-1, keepdim=True)
    soft = torch.exp((logp + noise) / 0.7)
    soft = soft / soft.sum(-1, keepdim=True)
    (soft * upstream).sum().backward()
    torch.testing.assert_close(st_grad, ref.grad)
    assert torch.equal(hard.detach(), F.one_hot((logits.detach() + noise).argmax(-1), 4).float())  # eq. 4


def test_evaluation_is_the_noise_free_argmax_and_eval_noise_keeps_the_noise() -> None:
    torch.manual_seed(3)
    fp = FramePrompter(num_frames=T, num_segments=K, num_tokens=3).eval()
    tokens = torch.randn(4, T, 3, 5)
    expect = fp.scores(tokens).argmax(-1) + torch.arange(K) * (T // K)
    for _ in range(3):
        assert torch.equal(fp(tokens, tau=0.01).index, expect)
    fp.eval_noise = True
    draws = {tuple(fp(tokens, tau=0.01).index.flatten().tolist()) for _ in range(20)}
    assert len(draws) > 1  # the released code's noisy evaluation


def test_temperature_schedule() -> None:
    assert prompter_temperature(0, 100) == 1.0
    assert math.isclose(prompter_temperature(50, 100), 0.1)
    assert math.isclose(prompter_temperature(100, 100), 0.01)
    assert math.isclose(prompter_temperature(25, 100), 0.01 ** 0.25)


def test_question_aware_prompter_reads_the_question() -> None:
    torch.manual_seed(4)
    fp = FramePrompter(num_frames=T, num_segments=K, num_tokens=3, question_dim=6)
    tokens = torch.randn(1, T, 3, 5)
    q1, q2 = torch.randn(1, 6), torch.randn(1, 6)
    assert fp.w1.in_features == (T // K) * 3 + 6
    assert not torch.allclose(fp.scores(tokens, q1), fp.scores(tokens, q2))


# -- QFormer-Distiller (eq. 7) ---------------------------------------------------------------------


def test_distiller_decoder_and_mse_by_hand() -> None:
    torch.manual_seed(5)
    dist = QFormerDistiller(student_len=3, teacher_len=6, dim=2)
    with torch.no_grad():
        dist.decoder.ln.weight.uniform_(0.5, 1.5)
        dist.decoder.ln.bias.uniform_(-0.5, 0.5)
    student, teacher = torch.randn(2, 3, 2), torch.randn(2, 6, 2)
    decoded = dist.decoder(student)
    assert decoded.shape == (2, 6, 2)
    fc, ln = dist.decoder.fc, dist.decoder.ln
    total = 0.0
    for b in range(2):
        for c in range(2):
            col = [sum(fc.weight[t, s].item() * student[b, s, c].item() for s in range(3)) + fc.bias[t].item()
                   for t in range(6)]
            mean = sum(col) / 6
            var = sum((v - mean) ** 2 for v in col) / 6
            for t in range(6):
                y = (col[t] - mean) / math.sqrt(var + ln.eps) * ln.weight[t].item() + ln.bias[t].item()
                assert math.isclose(decoded[b, t, c].item(), y, rel_tol=1e-4, abs_tol=1e-5)
                total += (y - teacher[b, t, c].item()) ** 2
    assert math.isclose(dist(student, teacher).item(), total / (2 * 6 * 2), rel_tol=1e-4)


# -- the model: frozen parts, teacher, prediction --------------------------------------------------


def test_teacher_gets_no_gradient(store_path: Path) -> None:
    args, dims, batch = _setup(store_path)
    model = VlapModel(args, dims).train()
    out = model(batch, tau=0.5)
    assert out["teacher"].shape == (4, 32 * T, model.llm.width) and not out["teacher"].requires_grad
    assert out["student"].shape == (4, 32 * K, model.llm.width)
    loss, logs = get_method("vlap").loss(model, {**batch, "train_step": TrainStep(3, 10)}, args)
    loss.backward()
    assert logs["l_distill"] > 0 and math.isclose(logs["tau"], 0.01 ** 0.3)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert model.prompter is not None and model.prompter.w1.weight.grad is not None
    assert model.distiller.decoder.fc.weight.grad is not None


def test_total_loss_is_the_task_loss_plus_the_weighted_distillation(store_path: Path) -> None:
    args, dims, batch = _setup(store_path, w_distill=0.25)
    model = VlapModel(args, dims).eval()  # no dropout, noise-free Prompter: two passes agree
    with torch.no_grad():
        loss, logs = get_method("vlap").loss(model, {**batch, "train_step": TrainStep(5, 10)}, args)
        out = model(batch, tau=0.1)
        l_task = model.llm.loss(out["student"], out["prompts"], batch["answer"].tolist())
        l_distill = ((model.distiller.decoder(out["student"]) - out["teacher"]) ** 2).mean()
    assert math.isclose(logs["l_task"], float(l_task), rel_tol=1e-5)
    assert math.isclose(logs["l_distill"], float(l_distill), rel_tol=1e-5)
    assert math.isclose(float(loss), float(l_task) + 0.25 * float(l_distill), rel_tol=1e-5)
    args_u, dims_u, batch_u = _setup(store_path, recipe="uniform", num_frames=K)
    model_u = VlapModel(args_u, dims_u).eval()
    assert model_u.distiller is None and model_u.teacher is None and model_u.prompter is None
    with torch.no_grad():
        loss_u, logs_u = get_method("vlap").loss(model_u, batch_u, args_u)
    assert logs_u["l_distill"] == 0.0 and math.isclose(float(loss_u), logs_u["l_task"], rel_tol=1e-6)


def test_llm_unchanged_after_a_step_while_the_trained_parts_change(store_path: Path) -> None:
    args, dims, batch = _setup(store_path)
    model = VlapModel(args, dims)
    model.train()
    assert not model.llm.llm.training and not model.teacher.training
    llm_before = {k: v.clone() for k, v in model.llm.llm.state_dict().items()}
    trained = {"student": model.student, "prompter": model.prompter, "distiller": model.distiller,
               "vision_ln": model.vision_ln}
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in trained.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss, _ = get_method("vlap").loss(model, {**batch, "train_step": TrainStep(0, 10)}, args)
    loss.backward()
    assert all(p.grad is None for p in model.llm.parameters())
    opt.step()
    for k, v in model.llm.llm.state_dict().items():
        assert torch.equal(v, llm_before[k]), k
    for name, m in trained.items():
        assert any(not torch.equal(p, q) for p, q in zip(m.parameters(), before[name], strict=True)), name
    assert not any(k.startswith(("llm.", "teacher.")) for k in model.state_dict())  # frozen parts rebuilt, not saved
    VlapModel(args, dims).load_state_dict(model.state_dict())  # strict: every saved key, nothing missing


def test_bfloat16_llm_keeps_the_trained_parts_float32_and_the_loss_close(store_path: Path) -> None:
    """``llm_dtype=bfloat16``: the frozen LLM's weights in bf16, the gradient still reaches the
    float32 Q-Former, and the task loss within bf16 rounding of the float32 model's."""
    args, dims, batch = _setup(store_path, recipe="uniform")
    full = VlapModel(args, dims)
    half = VlapModel({**args, "llm_dtype": "bfloat16"}, dims)
    half.load_state_dict(full.state_dict())  # same trained parts; the LLM rebuilt from the same seed
    assert {p.dtype for p in half.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.student.parameters()} == {torch.float32}
    method = get_method("vlap")
    loss_full, _ = method.loss(full, batch, args)
    loss_half, _ = method.loss(half, batch, {**args, "llm_dtype": "bfloat16"})
    loss_half.backward()
    grads = [p.grad for p in half.student.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)
    assert abs(float(loss_half.detach()) - float(loss_full.detach())) <= 0.05 * abs(float(loss_full.detach())) + 0.05
    with pytest.raises(UnknownName, match="llm_dtype"):
        VlapModel({**args, "llm_dtype": "float16"}, dims)


def test_prompter_lr_scale_gives_the_prompter_its_own_learning_rate(store_path: Path) -> None:
    """``prompter_lr_scale=s``: the Prompter's parameters in groups at lr * s, every other
    trained parameter at lr, weight decay on matrices only (recomputed here by name)."""
    from vqacache.heads.recipe import parameter_groups

    args, dims, _ = _setup(store_path, recipe="prompter", prompter_lr_scale=30.0)
    model = VlapModel(args, dims)
    groups = parameter_groups(model, {"lr": 1e-3, "weight_decay": 0.05})
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        lr = 1e-3 * (30.0 if name.startswith("prompter.") else 1.0)
        wd = 0.05 if p.ndim >= 2 and "embed" not in name else 0.0
        assert lr_of[id(p)] == pytest.approx((lr, wd)), name
    assert any(n.startswith("prompter.") for n, _ in model.named_parameters())
    plain = parameter_groups(VlapModel({**args, "prompter_lr_scale": 1.0}, dims), {"lr": 1e-3, "weight_decay": 0.05})
    assert [g["lr"] for g in plain] == [1e-3, 1e-3]  # the default: the paper's single learning rate
    with pytest.raises(UsageError, match="prompter_lr_scale"):
        VlapModel({**args, "prompter_lr_scale": 0.0}, dims)


def test_prediction_is_the_argmax_over_the_option_letters(store_path: Path) -> None:
    args, dims, batch = _setup(store_path, recipe="uniform", num_frames=K)
    model = VlapModel(args, dims).eval()
    with torch.no_grad():
        logits = get_method("vlap").predict(model, batch)
        visual = model(batch, with_teacher=False)["student"]
        tok = model.llm.tokenizer
        option = tok("Option", add_special_tokens=False)["input_ids"]
        letters = [tok(f"Option {x}", add_special_tokens=False)["input_ids"][-1] for x in "ABCD"]
        for b in range(4):
            prompt = build_prompt(batch["question"][b], batch["candidates"][b])
            ids = tok([prompt], return_tensors="pt")["input_ids"]
            embeds = torch.cat([visual[b : b + 1], model.llm.llm.get_input_embeddings()(ids)], dim=1)
            dec = torch.tensor([[0, *option]])
            full = model.llm.llm(inputs_embeds=embeds, decoder_input_ids=dec).logits[0, -1]  # (V,)
            n = len(batch["candidates"][b])
            torch.testing.assert_close(logits[b, :n], full[letters[:n]], rtol=1e-4, atol=1e-4)
            assert int(logits[b].argmax()) == int(full[letters[:n]].argmax())


@pytest.fixture(scope="module")
def instructblip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny InstructBLIP (Flan-T5) save_pretrained folder with its two tokenizers."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipVisionConfig

    from vqacache.heads.modules.blip2_family import tiny_configs
    from vqacache.heads.modules.word_tokenizer import word_tokenizer, word_vocab

    folder = tmp_path_factory.mktemp("instructblip")
    words = word_vocab([build_prompt("what is shown with marker 0?", ["concept 1"]), *(f"Option {chr(65 + i)}" for i in range(26))])
    qtok, ttok = word_tokenizer(words, "bert"), word_tokenizer(words, "t5")
    qcfg, tcfg = tiny_configs(W, len(qtok), len(ttok))
    vcfg = InstructBlipVisionConfig(hidden_size=W, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=32, patch_size=16)
    cfg = InstructBlipConfig(vision_config=vcfg.to_dict(), qformer_config=qcfg.to_dict(), text_config=tcfg.to_dict(),
                             num_query_tokens=32)
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(cfg)
    with torch.no_grad():
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    ttok.save_pretrained(folder)
    qtok.save_pretrained(folder / "qformer_tokenizer")
    return folder


def test_a_checkpoint_with_another_vision_trunk_is_refused(store_path: Path, instructblip_dir: Path) -> None:
    from transformers import InstructBlipForConditionalGeneration

    from vqacache.cache_spec.errors import SpecMismatch
    from vqacache.cache_spec.token_norm import trunk_digest
    from vqacache.heads.modules.blip2_family import directory_sha256

    ib = InstructBlipForConditionalGeneration.from_pretrained(instructblip_dir)
    digest = trunk_digest({k: v.numpy() for k, v in ib.vision_model.state_dict().items()})
    args, dims, batch = _setup(store_path)
    args = {**args, "weights": str(instructblip_dir), "size": "checkpoint", "vocab": None,
            "weights_identity": f"sha256:{directory_sha256(instructblip_dir)}"}
    norm = {"kind": "affine-free", "gamma": None, "beta": None, "eps": 1e-6}
    with pytest.raises(SpecMismatch) as err:
        VlapModel({**args, "store_token_norm": {**norm, "trunk_sha256": "0" * 64}}, dims)
    assert "vision trunk" in str(err.value) and "\n" not in str(err.value)
    model = VlapModel({**args, "store_token_norm": {**norm, "trunk_sha256": digest}}, dims)
    torch.testing.assert_close(model.vision_ln.gamma.detach(), ib.vision_model.post_layernorm.weight.detach())
    assert model.vision_ln.gamma.requires_grad
    with pytest.raises(SpecMismatch):  # the folder changed since the run recorded it
        VlapModel({**args, "weights_identity": "sha256:" + "1" * 64,
                   "store_token_norm": {**norm, "trunk_sha256": digest}}, dims)


# -- data --------------------------------------------------------------------------------------------


def test_segment_positions_midpoints_and_random_draws() -> None:
    assert segment_positions(16, 4).tolist() == [2, 6, 10, 14]
    assert segment_positions(16, 4, [0.0, 0.0, 0.99, 0.99]).tolist() == [0, 4, 11, 15]
    assert segment_positions(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # fewer frames than parts: repeats


# -- --method-arg, --weights ------------------------------------------------------------------------


def test_method_arg_parsing_is_typed_and_lists_valid_keys() -> None:
    m = get_method("vlap")
    parsed = parse_method_args(m, ["num_select=8", "w_distill=0.5", "question_aware=true", "recipe=uniform"])
    assert parsed == {"num_select": 8, "w_distill": 0.5, "question_aware": True, "recipe": "uniform"}
    assert isinstance(parsed["w_distill"], float) and parsed["question_aware"] is True
    with pytest.raises(UnknownName) as err:
        parse_method_args(m, ["nope=1"])
    assert "nope" in str(err.value) and "w_distill" in str(err.value) and "\n" not in str(err.value)
    for bad in (["num_select=four"], ["question_aware=maybe"], ["w_distill"]):
        with pytest.raises(UsageError):
            parse_method_args(m, bad)


def test_cli_hub_weights_offline_fail_in_one_line(store_path: Path, tmp_path: Path) -> None:
    from vqacache.cli.train_head import app

    result = CliRunner().invoke(app, ["--method", "vlap", "--store", str(store_path), "--out", str(tmp_path / "r"),
                                      "--weights", "Nobody/not-a-cached-model"])
    assert result.exit_code == 2
    assert "Nobody/not-a-cached-model" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


# -- end to end ------------------------------------------------------------------------------------


def test_cli_trains_vlap_end_to_end(store_path: Path, tmp_path: Path) -> None:
    from vqacache.cli.train_head import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "--method", "vlap", "--store", str(store_path), "--out", str(out), "--weights", "random",
        "--method-arg", "size=tiny", "--num-frames", str(T), "--method-arg", f"num_select={K}", "--epochs", "1",
        "--batch-size", "4",
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["weights_identity"] == "random:0" and config["args"]["num_select"] == K
    assert config["optim"]["schedule"] == "cosine" and config["optim"]["lr"] == 1e-5
    preds = json.loads((out / "predictions" / "val.json").read_text())
    assert len(preds) == 6 and all(set(p) == {"prediction", "answer"} for p in preds.values())
    assert (out / "curves.png").stat().st_size > 0
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model_args"]["weights_identity"] == "random:0"
    assert not any(k.startswith("llm.") for k in ckpt["model"])


def test_resumed_run_reproduces_the_uninterrupted_losses(store_path: Path, tmp_path: Path) -> None:
    from vqacache.heads.train import TrainConfig, train

    def config(out: Path, **kw: Any) -> TrainConfig:
        return TrainConfig(method="vlap", store=str(store_path), out=str(out), epochs=2, batch_size=4, lr=1e-3,
                           args=dict(TINY), **kw)

    whole = train(config(tmp_path / "whole"))
    train(config(tmp_path / "cut", stop_after=1))
    resumed = train(config(tmp_path / "cut", resume=True))
    assert resumed["epoch"] == 1
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5)


def test_a_vision_only_store_without_sentence_vectors_trains(tmp_path: Path) -> None:
    """vitg stores' question bundles hold the strings only: vlap needs nothing else (question_aware does)."""
    import numpy as np

    from vqacache.cache_spec import open_store
    from vqacache.heads.synthetic import synthetic_spec
    from vqacache.heads.train import TrainConfig, train

    path = tmp_path / "vision-only.zarr"
    store = open_store(path, "a", spec=synthetic_spec(seed=1, vision_only=True), dataset="synthetic-vision-only")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in range(n):
            vid = f"{split}{c}"
            with store.write_video(vid, {}) as w:
                w.append(cls=rng.standard_normal((12, W)), patch=rng.standard_normal((12, P, W)),
                         pts=np.arange(12) / 7.5, src_index=np.arange(12), is_repeat=np.zeros(12, bool))
            store.write_questions(split, vid, [{"qid": f"{vid}_q", "question": "what colour?", "candidates":
                                                ["red", "blue", "green"], "answer": c % 3, "qtype": "colour"}], {})
    m = train(TrainConfig(method="vlap", store=str(path), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                          args=dict(TINY)))
    assert m["epoch"] == 0
    with pytest.raises(UsageError, match="sentence vectors"):
        train(TrainConfig(method="vlap", store=str(path), out=str(tmp_path / "qa"), epochs=1,
                          args={**TINY, "question_aware": True}))


def test_the_separate_teacher_loads_a_teacher_runs_checkpoint(store_path: Path, tmp_path: Path) -> None:
    from vqacache.heads.train import TrainConfig, train

    train(TrainConfig(method="vlap", store=str(store_path), out=str(tmp_path / "t"), epochs=1, batch_size=4, lr=1e-2,
                      args={**TINY, "recipe": "teacher"}))
    teacher_ckpt = tmp_path / "t" / "checkpoints" / "last.pt"
    args, dims, _ = _setup(store_path, teacher_checkpoint=str(teacher_ckpt))
    assert args["teacher_identity"].startswith("sha256:")
    model = VlapModel(args, dims)
    saved = torch.load(teacher_ckpt, weights_only=True)["model"]
    for name, value in model.teacher.qformer.state_dict().items():
        torch.testing.assert_close(value, saved[f"student.{name}"])
    assert not torch.equal(model.teacher.qformer.query_tokens, model.student.query_tokens)  # trained, not the init
    with pytest.raises(UsageError, match="recipe=teacher"):  # a vlap run's checkpoint is not a teacher
        train(TrainConfig(method="vlap", store=str(store_path), out=str(tmp_path / "s"), epochs=1, batch_size=4,
                          args=dict(TINY)))
        VlapModel({**args, "teacher_checkpoint": str(tmp_path / "s" / "checkpoints" / "last.pt"),
                   "teacher_identity": None}, dims)
