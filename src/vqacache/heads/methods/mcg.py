"""``mcg`` (MCG, multi-granularity contrast + cross-modal collaborative generation) from
cached per-frame patch tokens.

Per question: T frames (``num_frames``, 8; one in each of T equal parts of the question's
frames: ``patch_frames="segments"``; ``text="strings"`` carries the question and candidate strings)
-> the :class:`~vqacache.heads.modules.temporal_adapter.TemporalAdapter` -> X (B, 1 + P, D)
and beta; the question through the question encoder (no visual input) -> Y (B, L, H) and its
last-layer CLS attention (alpha's source); then

* ``L_ICL`` (eq. 1-3) on (x_cls, y_cls), ``L_TCL`` (eq. 4-7) on the patches and the words
  (the same projections g_x, g_y, as the released code), ``L_MCL`` = theta_1 L_ICL + theta_2 L_TCL
  (eq. 8; ``lambda_icl``, ``lambda_tcl``);
* the fusor (cross-attending X, [FUS] first): ``text_model=blip`` (default) BLIP's text
  encoder again, its first token replaced by [FUS]; ``text_model=bert`` (the paper's split) the
  upper half of a BERT reading the question encoder's states (:mod:`..modules.bert_family`);
  ``L_VTM`` (eq. 9) on [FUS] of the positive pairs and of in-batch hard negatives
  (``lambda_vtm``);
* ``head=generator``: the answer decoder reads the fusor's states; ``L_LM`` (eq. 10, label
  smoothing 0.1). ``head=classifier`` (MCG-CH, Table V): Linear(H -> A) on [FUS] with a
  cross-entropy, open-ended sets only.

TCL's word and patch responses (eq. 4): ``response=softmax`` (default, the released code's
attention at temperature 0.1) or ``response=tanh`` (the paper's memory read-out);
``learn_tau2=true`` makes TCL's tau_2 a learnable temperature (start 0.1, clamped as tau_1;
the paper calls it learnable, the released code fixes it at 0.1).

``contrast_text=question_answer`` gives ICL and TCL the question followed by its answer (a
caption-like pair, as a pre-stage on QA data would see; the fusor and decoder still read the
question only); the default contrasts the question alone.

``L = L_MCL + lambda_vtm L_VTM + L_answer`` (eq. 11 with weights 1). The paper fine-tunes
with the LM loss alone after a pre-stage with all of them; from the cache there is no
pre-stage, so all losses run together by default, and ``lambda_icl=0``, ``lambda_tcl=0``,
``lambda_vtm=0`` give the ablations (and LM only).

**Answers.** Open-ended: beam search (3 beams, 10 tokens), the string mapped to the
dataset's answer vocabulary (recorded by ``prepare`` from split ``answer_split``, checked
against the run's); a string outside it predicts class 0 (the most frequent answer).
Multiple choice: every "question candidate" text fused with X and scored by the matching
head (``mc_score=match``, trained with a cross-entropy over the candidates beside L_LM on
the correct candidate's text) or by the decoder's log-likelihood of each candidate
(``mc_score=likelihood``).

**Not from the paper**: the video encoder is frozen (the cache), so JUM (Table V's first
rows) cannot be reproduced; the adapter replaces the trainable TimeSformer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import SpecMismatch, UnknownName, UsageError
from vqacache.heads.data import build_answer_vocab, store_texts
from vqacache.heads.methods.common import Method, answer_loss, zero_loss
from vqacache.heads.modules.answer_decoder import MAX_LENGTH, NUM_BEAMS, beam_search, lm_loss
from vqacache.heads.modules.bert_family import DEFAULT_WEIGHTS, TEXT_MODELS, load_text_parts, resolve_bert
from vqacache.heads.modules.blip2_family import resolve_folder
from vqacache.heads.modules.instance_contrast import InstanceContrast
from vqacache.heads.modules.temporal_adapter import TemporalAdapter
from vqacache.heads.modules.token_contrast import (
    RESPONSES,
    TCL_TEMP,
    TokenTemperature,
    pool_words,
    saliency,
    token_contrast,
    word_index,
)
from vqacache.heads.modules.video_text_matching import hard_negatives, matching_loss
from vqacache.heads.modules.word_tokenizer import word_vocab

HEADS = ("generator", "classifier")
MC_SCORES = ("match", "likelihood")
CONTRAST_TEXTS = ("question", "question_answer")
DEFAULTS: dict[str, Any] = {
    "num_frames": 8, "text_model": "blip", "weights": "default", "size": "checkpoint", "weights_seed": 0,
    "head": "generator", "response": "softmax", "learn_tau2": False,
    "lambda_icl": 1.0, "lambda_tcl": 1.0, "lambda_vtm": 1.0, "mc_score": "match", "adapter_layers": 2,
    "adapter_heads": 4, "max_text_len": 40, "num_beams": NUM_BEAMS, "max_answer_len": MAX_LENGTH,
    "answer_split": "train", "contrast_text": "question",
}
OPTIM = {"lr": 1e-4, "weight_decay": 1e-3, "warmup": 0.1}


def _check_args(args: dict[str, Any]) -> None:
    if args["head"] not in HEADS:
        raise UnknownName(f"unknown mcg head {args['head']!r}; valid: {', '.join(HEADS)}")
    if args["mc_score"] not in MC_SCORES:
        raise UnknownName(f"unknown mcg mc_score {args['mc_score']!r}; valid: {', '.join(MC_SCORES)}")
    if args["contrast_text"] not in CONTRAST_TEXTS:
        raise UnknownName(f"unknown mcg contrast_text {args['contrast_text']!r}; valid: {', '.join(CONTRAST_TEXTS)}")
    if args["text_model"] not in TEXT_MODELS:
        raise UnknownName(f"unknown mcg text_model {args['text_model']!r}; valid: {', '.join(TEXT_MODELS)}")
    if args["response"] not in RESPONSES:
        raise UnknownName(f"unknown mcg response {args['response']!r}; valid: {', '.join(RESPONSES)}")


def resolved_weights(args: dict[str, Any]) -> str:
    """``weights`` with ``default`` replaced by the text model's checkpoint."""
    return DEFAULT_WEIGHTS[args["text_model"]] if args["weights"] == "default" else args["weights"]


def prepare(args: dict[str, Any], stores: Any) -> dict[str, Any]:
    """The weights' identity, the open-ended answer vocabulary of ``answer_split`` and (random
    weights) the word vocabulary of the run's text."""
    from vqacache.heads.questions import resolve_questions

    _check_args(args)
    try:
        refs, _ = resolve_questions(stores, args["answer_split"], ("cls", "patch"))
    except Exception:  # noqa: BLE001 - no such split: the vocabulary check in build says so
        refs = []
    open_ended = bool(refs) and refs[0].n_candidates == 0
    answers = build_answer_vocab(refs) if open_ended else []
    weights = resolved_weights(args)
    extra: dict[str, Any] = {"answer_vocab": answers, "weights": weights}
    if weights == "random":
        extra["weights_identity"] = f"random:{args['weights_seed']}"
        extra["vocab"] = word_vocab([*store_texts(stores), *answers])
    else:
        resolve = resolve_bert if args["text_model"] == "bert" else resolve_folder
        extra["weights_identity"] = resolve(weights)[1]
        extra["vocab"] = None
    return extra


class McgModel(nn.Module):
    """Batch (``patch`` (B, T, P, W), ``question``, ``candidates``, ``answer``) -> the losses'
    inputs (:meth:`losses`) and predictions (:meth:`predict_logits`)."""

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        _check_args(args)
        self.args = args
        self.open_ended = dims["num_answers"] > 0
        self.answer_vocab: list[str] = list(args.get("answer_vocab") or [])
        if self.open_ended and len(self.answer_vocab) != dims["num_answers"]:
            raise UsageError(f"mcg recorded {len(self.answer_vocab)} answers of split {args['answer_split']!r}, the "
                             f"run has {dims['num_answers']}: pass --method-arg answer_split=<the training split>")
        if args["head"] == "classifier" and not self.open_ended:
            raise UsageError("mcg head=classifier (MCG-CH) is for open-ended sets; multiple choice uses the matching head")
        text = load_text_parts(resolved_weights(args), text_model=args["text_model"], size=args["size"],
                               vocab=args.get("vocab"), seed=args["weights_seed"])
        if text.identity != args["weights_identity"]:
            raise SpecMismatch(f"weights {args['weights']} are now {text.identity}, the run recorded "
                               f"{args['weights_identity']}")
        self.text = text  # question encoder, fusor, answer decoder (bert_family)
        self.tokenizer = text.tokenizer
        H, D = text.width, text.video_width
        self.adapter = TemporalAdapter(dims["patch_dim"], D, args["num_frames"], dims["num_patches"],
                                       args["adapter_layers"], args["adapter_heads"])
        self.icl = InstanceContrast(D, H)
        self.tau2 = TokenTemperature() if args["learn_tau2"] else None
        self.vtm_head = nn.Linear(H, 2)
        self.classifier = nn.Linear(H, dims["num_answers"]) if args["head"] == "classifier" else None

    # -- text ------------------------------------------------------------------------------

    def tokenize(self, texts: list[str], first: int | None = None, max_len: int | None = None) -> tuple[Tensor, Tensor]:
        tok = self.tokenizer(texts, padding="longest", truncation=True, max_length=max_len or self.args["max_text_len"],
                             return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        if first is not None:
            ids = ids.clone()
            ids[:, 0] = first
        return ids, mask

    @property
    def device(self) -> torch.device:
        return self.icl.temp.device

    def encode_question(self, texts: list[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> Y (B, L, H), mask (B, L), ids (B, L), CLS attention of the last layer (B, L)."""
        ids, mask = self.tokenize(texts)
        y, cls_attn = self.text.encode(ids, mask)
        return y, mask, ids, cls_attn

    def fuse(self, texts: list[str], x: Tensor) -> tuple[Tensor, Tensor]:
        """texts (B,), X (B, 1 + P, D) -> fusor states (B, L, H) ([FUS] first), mask (B, L)."""
        ids, mask = self.tokenize(texts)
        return self.text.fuse(ids, mask, x)

    def decode_logits(self, answers: list[str], states: Tensor, smask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> decoder logits (B, L, V), ids (B, L) ([GEN] answer [SEP]), mask (B, L)."""
        ids, mask = self.tokenize(answers, first=self.text.gen_id, max_len=self.args["max_answer_len"])
        return self.text.decode(ids, mask, states, smask), ids, mask

    def word_index(self, ids: Tensor) -> Tensor:
        rows = [word_index(self.tokenizer.convert_ids_to_tokens(r.tolist()), self.text.specials) for r in ids]
        return torch.tensor(rows, device=ids.device)

    # -- losses ----------------------------------------------------------------------------

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        a = self.args
        x, beta_raw = self.adapter(batch["patch"])
        questions = list(batch["question"])
        texts = questions
        if a["contrast_text"] == "question_answer":  # caption-like pairs, as in a pre-stage on QA data
            texts = [f"{q} {self.answer_text(batch, b)}" if int(batch["answer"][b]) >= 0 else q
                     for b, q in enumerate(questions)]
        y, ymask, yids, cls_attn = self.encode_question(texts)
        out: dict[str, Tensor] = {}
        l_icl, sim = self.icl(x[:, 0], y[:, 0])
        out["l_icl"] = l_icl
        if a["lambda_tcl"]:
            words, word_attn, wmask = pool_words(y, cls_attn, self.word_index(yids))
            wemb = nn.functional.normalize(self.icl.text_proj(words), dim=-1)
            pemb = nn.functional.normalize(self.icl.video_proj(x[:, 1:]), dim=-1)
            alpha = saliency(word_attn, wmask)
            beta = saliency(beta_raw, torch.ones_like(beta_raw, dtype=torch.bool))
            tau2 = self.tau2() if self.tau2 is not None else TCL_TEMP
            out["l_tcl"] = token_contrast(wemb, pemb, wmask, alpha, beta, tau2, a["response"])
        if a["lambda_vtm"] and len(questions) > 1:
            neg_t, neg_v = hard_negatives(sim)
            pos, _ = self.fuse(questions, x)
            neg1, _ = self.fuse([questions[int(j)] for j in neg_t], x)
            neg2, _ = self.fuse(questions, x[neg_v])  # the question only: the fusor's text at prediction
            out["l_vtm"] = matching_loss(self.vtm_head(pos[:, 0]), self.vtm_head(torch.cat([neg1[:, 0], neg2[:, 0]])))
        answer = batch["answer"]
        if self.classifier is not None:
            fused, _ = self.fuse(questions, x)
            out["l_answer"] = answer_loss(self.classifier(fused[:, 0]), answer)
            return out
        keep = (answer >= 0).nonzero().squeeze(1).tolist()
        if not keep:
            return out
        texts = [self.answer_text(batch, b) for b in keep]
        fused, fmask = self.fuse([questions[b] for b in keep], x[keep])
        logits, ids, mask = self.decode_logits(texts, fused, fmask)
        out["l_answer"] = lm_loss(logits, ids, mask)  # eq. 10
        if not self.open_ended and a["mc_score"] == "match":
            scores = self.match_scores(batch, x)
            out["l_answer"] = out["l_answer"] + answer_loss(scores, answer)
        return out

    def answer_text(self, batch: dict[str, Any], b: int) -> str:
        k = int(batch["answer"][b])
        return self.answer_vocab[k] if self.open_ended else batch["candidates"][b][k]

    def match_scores(self, batch: dict[str, Any], x: Tensor) -> Tensor:
        """(B, C) matching logit (match minus no match) of every "question candidate" text; -inf on padding."""
        cands = batch["candidates"]
        C = max(len(c) for c in cands)
        scores = torch.full((len(cands), C), float("-inf"), device=x.device)
        rows = [(b, c) for b, cs in enumerate(cands) for c in range(len(cs))]
        fused, _ = self.fuse([f"{batch['question'][b]} {cands[b][c]}" for b, c in rows], x[[b for b, _ in rows]])
        logit = self.vtm_head(fused[:, 0])  # (n, 2)
        scores[[b for b, _ in rows], [c for _, c in rows]] = (logit[:, 1] - logit[:, 0]).float()
        return scores

    # -- prediction ------------------------------------------------------------------------

    @torch.no_grad()
    def predict_logits(self, batch: dict[str, Any]) -> Tensor:
        x, _ = self.adapter(batch["patch"])
        questions = list(batch["question"])
        if self.classifier is not None:
            return self.classifier(self.fuse(questions, x)[0][:, 0])
        if not self.open_ended:
            if self.args["mc_score"] == "match":
                return self.match_scores(batch, x)
            return self.candidate_likelihood(batch, x)
        fused, fmask = self.fuse(questions, x)
        logits = torch.zeros(len(questions), len(self.answer_vocab), device=x.device)
        index = {_norm(v): i for i, v in enumerate(self.answer_vocab)}
        for b, text in enumerate(self.generate(fused, fmask)):
            k = index.get(_norm(text))
            if k is not None:
                logits[b, k] = 1.0
        return logits

    def generate(self, fused: Tensor, fmask: Tensor) -> list[str]:
        """Beam search per question -> answer strings."""
        out = []
        for b in range(fused.shape[0]):
            def step(ids: Tensor, b: int = b) -> Tensor:
                n = ids.shape[0]
                ids = ids.to(fused.device)
                logits = self.text.decode(ids, torch.ones_like(ids), fused[b:b + 1].expand(n, -1, -1),
                                          fmask[b:b + 1].expand(n, -1))
                return logits[:, -1].float().log_softmax(-1).cpu()

            ids = beam_search(step, self.text.gen_id, self.text.eos_id, self.args["num_beams"],
                              self.args["max_answer_len"])
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        return out

    def candidate_likelihood(self, batch: dict[str, Any], x: Tensor) -> Tensor:
        """(B, C) summed log-probability of each candidate under the decoder; -inf on padding."""
        cands = batch["candidates"]
        fused, fmask = self.fuse(list(batch["question"]), x)
        scores = torch.full((len(cands), max(len(c) for c in cands)), float("-inf"), device=x.device)
        for c in range(scores.shape[1]):
            rows = [b for b in range(len(cands)) if c < len(cands[b])]
            logits, ids, mask = self.decode_logits([cands[b][c] for b in rows], fused[rows], fmask[rows])
            logp = logits[:, :-1].float().log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(2)
            scores[rows, c] = (logp * mask[:, 1:]).sum(1)
        return scores


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(" ##", "").split())


def loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """eq. 11: lambda_icl L_ICL + lambda_tcl L_TCL + lambda_vtm L_VTM + L_answer."""
    if not bool((batch["answer"] >= 0).any()):
        return zero_loss(model), {"loss": 0.0}
    parts = model.losses(batch)
    weights = {"l_icl": args["lambda_icl"], "l_tcl": args["lambda_tcl"], "l_vtm": args["lambda_vtm"], "l_answer": 1.0}
    total = sum(weights[k] * v for k, v in parts.items() if weights[k])
    stats = {k: float(v.detach()) for k, v in parts.items()}
    stats["loss"] = float(total.detach())
    return total, stats


def predict(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    return model.predict_logits(batch)


def data(args: dict[str, Any]) -> dict[str, Any]:
    _check_args(args)
    return {"num_frames": args["num_frames"], "patch_frames": "segments", "text": "strings"}  # it tokenizes the strings


METHOD = Method(name="mcg", build=McgModel, loss=loss, predict=predict, data=data, defaults=DEFAULTS, optim=OPTIM,
                prepare=prepare)
