"""BLIP's VQA model (transformers ``BlipForQuestionAnswering``) as an :class:`ImageQATeacher`.

transformers only generates with BLIP; ranking answers is composed here from the model's three
parts, as BLIP's ``rank_answer`` (``models/blip_vqa.py``) and ALBEF's do:

1. the vision model: a frame -> ``last_hidden_state`` (F, T, W), once per video
   (:meth:`BlipTeacher.encode_images`);
2. the text encoder with the frame as cross-attention context: the question, tokenized as
   transformers' ``BlipProcessor`` does (``[CLS] question [SEP]``, truncated to 35 tokens as
   BLIP's VQA code does) -> question states (F, Lq, H);
3. the text decoder, cross-attending to the question states, over each answer written
   ``[start] wordpieces [SEP]``, where ``[start]`` is the decoder start token
   (``BlipForQuestionAnswering.decoder_start_token_id`` = ``text_config.bos_token_id``, BLIP's
   ``[DEC]``, as in ``generate`` and BLIP's own ``answer.input_ids[:, 0] = bos_token_id``) and
   ``[SEP]`` the end token ``generate`` stops at. An answer's score is the sum of the
   log-probabilities of its tokens after ``[start]`` (``[SEP]`` included, padding excluded),
   from an exact log-softmax over the decoder's logits; the probabilities are a softmax of the
   scores over the answers. ``score="loglik"`` (the default) is that log-likelihood.
   ``score="blip"`` reproduces BLIP's own ``rank_answer`` instead: it ranks with the decoder's
   training loss, ``CrossEntropyLoss(reduction="none", label_smoothing=0.1)`` summed over the
   answer tokens (``models/med.py``, ``BertLMHeadModel.forward``, checked in salesforce/BLIP),
   so each token contributes ``0.9 log p(token) + 0.1 mean_v log p(v)``
   (:meth:`BlipTeacher._log_likelihood`). The spec records which.

Open-ended questions (:meth:`BlipTeacher.rank_vocab`), as ``rank_answer`` with ``k_test``: one
decoder step from ``[start]`` for all F frames gives every answer's first-token probability
(answers sharing a first wordpiece share it); the top ``k`` answers per frame by that
probability are scored in full, and the softmax runs over those k (the others get probability
0: the approximation the spec records).

Batching (:meth:`BlipTeacher.rank_many`): the questions that share a video's frames are
ranked together, Q questions x F frames rows through the text encoder (questions right-padded,
masked) and every (row, answer) pair through the decoder in the same chunks, instead of three
or four small calls per question; the numbers equal the per-question calls up to float
rounding.

Memory: the decoder's logits are (rows, L, vocabulary) for rows = frames x answers; rows are
processed in chunks of at most ``chunk_rows`` (by default as many as keep one chunk's logits
under :data:`LOGITS_BUDGET` numbers), each chunk trimmed to its longest answer. Chunking does
not change the numbers beyond float rounding.

Weights as for the encoders (:mod:`vqacache.featurize.encoders.hf_weights`): a hub name
(default ``Salesforce/blip-vqa-base``), a ``save_pretrained`` directory, or ``random[:SEED]``
(the default checkpoint's architecture, ``BlipConfig()``). The tokenizer is the one saved with
the weights; with random weights (or to override) pass ``tokenizer=`` a tokenizer directory, a
WordPiece ``vocab.txt`` or a :class:`~vqacache.featurize.imageqa.dataset_tokenizer.DatasetTokenizer`
(built from the dataset's text: what stage one gives random weights); without it the default
checkpoint's tokenizer is taken from the Hugging Face cache.

Shapes: F frames, T = 1 + P visual tokens, W vision width, Lq question tokens, H text width,
C candidates, V vocabulary answers, La answer tokens, k answers rescored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.encoders.hf_vision import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from vqacache.featurize.encoders.hf_weights import (
    HfWeights,
    directory_sha256,
    hub_snapshot,
    processor_settings,
    resolve_hf_weights,
    spec_config,
)
from vqacache.featurize.encoders.precision import autocast, check_compute_dtype
from vqacache.featurize.encoders.preprocess import PREPROCESS_IMPL, ImageTransform
from vqacache.featurize.encoders.weights import RANDOM_INIT, init_random_, sha256_file
from vqacache.featurize.imageqa.dataset_tokenizer import DatasetTokenizer
from vqacache.featurize.imageqa.teacher import Ranking, TeacherQuestion, VocabScores, no_frames

DEFAULT_WEIGHTS = "Salesforce/blip-vqa-base"
RANKING = "blip-answer-loglik-v1"
"""Identity of the ranking implemented here (recorded in the spec; change the maths, bump it)."""
LOGITS_BUDGET = 1 << 26
"""Decoder logits held at once by default (numbers: 256 MB in float32)."""
QUESTION_MAX_TOKENS = 35
IMAGE_BATCH = 32
QUESTION_ROWS = 128
"""(question, frame) rows per text-encoder call in :meth:`BlipTeacher.rank_many` (each row
gathers its frame's T x W tokens)."""
SCORES = {
    "loglik": (0.0, RANKING, "sum of answer-token log-probabilities after the start token, end token included, "
               "padding excluded; exact log-softmax, no label smoothing"),
    "blip": (0.1, "blip-rank-answer-v1", "BLIP's rank_answer: minus the decoder's label-smoothed (0.1) "
             "cross-entropy summed over the answer tokens after the start token, end token included, "
             "padding excluded"),
}
"""``score`` -> (label smoothing, ranking method id, the spec's description of the score)."""


@dataclass(frozen=True)
class BlipImages:
    """Frames encoded once: ``embeds`` (F, T, W), the vision model's ``last_hidden_state``, on
    the teacher's device."""

    embeds: torch.Tensor

    @property
    def n_frames(self) -> int:
        return int(self.embeds.shape[0])


@dataclass(frozen=True)
class BlipVocab:
    """An answer vocabulary tokenized once: ``ids``/``mask`` (V, La) as the decoder reads them
    (``[start] wordpieces [SEP]``, right-padded), ``first`` (V,) each answer's first wordpiece."""

    answers: tuple[str, ...]
    ids: torch.Tensor
    mask: torch.Tensor
    first: torch.Tensor

    def __len__(self) -> int:
        return len(self.answers)


class BlipTeacher:
    """BLIP VQA, frozen, ranking answers per frame. Build with :func:`build_blip_teacher`."""

    name = "blip"

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        tokenizer_identity: str | dict[str, Any],
        weights: HfWeights,
        transform: ImageTransform,
        device: torch.device,
        compute_dtype: str,
        k_test: int,
        chunk_rows: int | None,
        question_max_tokens: int,
        score: str = "loglik",
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.score = score
        self.smoothing = SCORES[score][0]
        self.tokenizer = tokenizer
        self.tokenizer_identity = tokenizer_identity
        self.weights = weights
        self.transform = transform
        self.device = device
        self.compute_dtype = compute_dtype
        self.k_test = k_test
        self.chunk_rows = chunk_rows
        self.question_max_tokens = question_max_tokens
        text_cfg = model.config.text_config
        self.start_id = int(model.decoder_start_token_id)  # [DEC]
        self.end_id = int(text_cfg.sep_token_id)  # [SEP]
        self.pad_id = int(text_cfg.pad_token_id)
        self.vocab_size = int(text_cfg.vocab_size)

    # -- description ------------------------------------------------------------------------

    def teacher_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "teacher": self.name,
            "architecture": "transformers:BlipForQuestionAnswering",
            "config": spec_config(self.model.config),
            "weights": {"source": self.weights.spec.source, "identity": self.weights.spec.identity},
            "attn_implementation": str(getattr(self.model.config, "_attn_implementation", None)),
            "preprocess": {
                "size": self.transform.size,
                "resize": self.transform.resize,
                "interpolation": self.transform.interpolation,
                "mean": list(self.transform.mean),
                "std": list(self.transform.std),
                "antialias": True,
                "impl": PREPROCESS_IMPL,
            },
            "compute_dtype": self.compute_dtype,
            "tokenizer": {
                **(self.tokenizer_identity if isinstance(self.tokenizer_identity, dict)
                   else {"identity": self.tokenizer_identity}),
                "class": type(self.tokenizer).__name__,
                "question": f"[CLS] question [SEP], at most {self.question_max_tokens} tokens",
            },
            "ranking": {
                "method": SCORES[self.score][1],
                "answer_tokens": f"[{self.start_id}] wordpieces [{self.end_id}]",
                "score": SCORES[self.score][2],
                "probabilities": "softmax of the scores over the answers",
                "open_ended": "first-token probability at the start token; top-k answers scored in full, "
                "softmax over those k, the others probability 0",
                "k": self.k_test,
            },
        }
        if self.weights.spec.source == "random":
            spec["random_init"] = RANDOM_INIT
        return spec

    # -- frames -----------------------------------------------------------------------------

    def encode_images(self, frames: np.ndarray | torch.Tensor) -> BlipImages:
        """uint8 RGB (F, H, W, 3) -> the frames' ``last_hidden_state`` (F, T, W), on the device."""
        chunks = []
        for start in range(0, max(len(frames), 1), IMAGE_BATCH):
            x = self.transform(frames[start : start + IMAGE_BATCH], self.device)  # (f, 3, S, S)
            if x.shape[0] == 0:
                break
            with torch.no_grad(), self._autocast():
                chunks.append(self.model.vision_model(pixel_values=x).last_hidden_state)  # (f, T, W)
        if not chunks:
            cfg = self.model.config.vision_config
            tokens = 1 + (cfg.image_size // cfg.patch_size) ** 2
            return BlipImages(torch.empty(0, tokens, cfg.hidden_size, device=self.device))
        return BlipImages(torch.cat(chunks))

    # -- ranking ----------------------------------------------------------------------------

    def rank_candidates(self, images: BlipImages, question: str, candidates: list[str]) -> np.ndarray:
        """(F, C) float32: softmax over the candidates of their scores."""
        return self.rank_many(images, [TeacherQuestion(question, tuple(candidates))], None, self.k_test)[0]

    def answer_log_likelihoods(self, images: BlipImages, question: str, answers: list[str]) -> np.ndarray:
        """(F, C) float32: each answer's score given each frame (the summed token
        log-probability with the default ``score="loglik"``)."""
        if isinstance(answers, str) or len(answers) == 0:
            raise ValueError("answers must be a non-empty list of strings")
        n_frames, n_answers = images.n_frames, len(answers)
        if n_frames == 0:
            return np.zeros((0, n_answers), np.float32)
        states, qmask = self._question_states(images, [question])  # (F, Lq, H), (F, Lq)
        ids, mask = self._answer_tokens(answers)  # (C, La)
        row = torch.arange(n_frames, device=self.device).repeat_interleave(n_answers)  # (F * C,)
        answer = torch.arange(n_answers, device=self.device).repeat(n_frames)  # (F * C,)
        scores = self._log_likelihood(states, qmask, row, ids[answer], mask[answer])  # (F * C,)
        return scores.view(n_frames, n_answers).cpu().numpy().astype(np.float32)

    def prepare_vocab(self, vocab: list[str]) -> BlipVocab:
        """Tokenize the answer vocabulary once (on the device)."""
        if isinstance(vocab, str) or len(vocab) == 0:
            raise ValueError("the answer vocabulary must be a non-empty list of strings")
        ids, mask = self._answer_tokens(vocab)
        return BlipVocab(tuple(vocab), ids, mask, ids[:, 1].clone())

    def rank_vocab(self, images: BlipImages, question: str, vocab: BlipVocab, k: int) -> VocabScores:
        """Top-k of the vocabulary per frame by first-token probability, rescored in full:
        ``probs`` (F, k') and ``index`` (F, k'), best first, k' = min(k, V)."""
        return self.rank_many(images, [TeacherQuestion(question)], vocab, k)[0]

    def rank_many(self, images: BlipImages, questions: list[TeacherQuestion], vocab: BlipVocab | None,
                  k: int) -> list[Ranking]:
        """Rank Q questions about the same F frames in batched calls; per question, in order,
        (F, C) probabilities (multiple choice) or :class:`VocabScores` (open-ended, over
        ``vocab``, top ``k`` = the teacher's ``k_test``).

        Rows r = q * F + f pair question q with frame f: the text encoder runs on all Q x F
        rows, the decoder on every (row, answer) pair of the multiple-choice questions in one
        chunked pass, and the open-ended ones share one first-token step and one rescoring pass.
        """
        questions = list(questions)
        n_frames = images.n_frames
        mc = [i for i, q in enumerate(questions) if q.candidates]
        oe = [i for i, q in enumerate(questions) if not q.candidates]
        if oe:
            if vocab is None:
                raise ValueError("open-ended questions need the answer vocabulary")
            if k != self.k_test:
                raise ValueError(f"k={k} but this teacher was built (and its spec written) with k_test={self.k_test}")
        if n_frames == 0:
            return no_frames(questions, min(k, len(vocab)) if oe else 0)
        out: list[Ranking | None] = [None] * len(questions)
        states, qmask = self._question_states(images, [q.question for q in questions])  # (Q * F, Lq, H)
        if mc:
            for i, probs in zip(mc, self._rank_choices(states, qmask, [questions[i] for i in mc], mc, n_frames)):
                out[i] = probs
        if oe:
            rows = torch.cat([torch.arange(i * n_frames, (i + 1) * n_frames, device=self.device) for i in oe])
            for i, scores in zip(oe, self._rank_vocab_rows(states, qmask, rows, vocab, n_frames)):
                out[i] = scores
        return out  # type: ignore[return-value]

    def _rank_choices(self, states: torch.Tensor, qmask: torch.Tensor, questions: list[TeacherQuestion],
                      positions: list[int], n_frames: int) -> list[np.ndarray]:
        """Multiple choice: the (row, candidate) pairs of every question in one chunked decoder
        pass -> per question (F, C_q) float32 softmax over its candidates."""
        counts = [len(q.candidates) for q in questions]
        ids, mask = self._answer_tokens([c for q in questions for c in q.candidates])  # (sum C, La)
        row_idx, answer_idx, offset = [], [], 0
        for pos, count in zip(positions, counts):
            rows = torch.arange(pos * n_frames, (pos + 1) * n_frames, device=self.device)  # (F,)
            row_idx.append(rows.repeat_interleave(count))  # (F * C,)
            answer_idx.append(torch.arange(offset, offset + count, device=self.device).repeat(n_frames))
            offset += count
        answer = torch.cat(answer_idx)
        scores = self._log_likelihood(states, qmask, torch.cat(row_idx), ids[answer], mask[answer])
        out, start = [], 0
        for count in counts:
            block = scores[start : start + n_frames * count].view(n_frames, count)  # (F, C)
            out.append(block.softmax(dim=-1).cpu().numpy().astype(np.float32))
            start += n_frames * count
        return out

    def _rank_vocab_rows(self, states: torch.Tensor, qmask: torch.Tensor, rows: torch.Tensor, vocab: BlipVocab,
                         n_frames: int) -> list[VocabScores]:
        """Open-ended: the R = Q' x F ``rows`` share one first-token step and one rescoring pass
        of their top-k answers -> per question :class:`VocabScores` (F, k'), best first."""
        k = min(self.k_test, len(vocab))
        first = self.first_token_probs(states[rows], qmask[rows], vocab)  # (R, V)
        top = first.topk(k, dim=1).indices  # (R, k) by first-token probability
        pair_row = rows.repeat_interleave(k)  # (R * k,)
        answer = top.flatten()  # (R * k,)
        scores = self._log_likelihood(states, qmask, pair_row, vocab.ids[answer], vocab.mask[answer])
        probs = scores.view(-1, k).softmax(dim=-1)  # (R, k)
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        index = top.gather(1, order)
        probs_np = probs.cpu().numpy().astype(np.float32)
        index_np = index.cpu().numpy().astype(np.int64)
        return [VocabScores(probs_np[s : s + n_frames], index_np[s : s + n_frames])
                for s in range(0, len(rows), n_frames)]

    def first_token_probs(self, states: torch.Tensor, qmask: torch.Tensor, vocab: BlipVocab) -> torch.Tensor:
        """(R, V) float32: each answer's first-wordpiece probability after ``[start]``, one
        decoder step per row (rows grouped by question length, see :func:`_by_question_length`,
        in chunks that keep the logits under the budget)."""
        out = torch.empty(states.shape[0], len(vocab), dtype=torch.float32, device=self.device)
        chunk = max(1, LOGITS_BUDGET // self.vocab_size)
        for length, rows in _by_question_length(qmask, torch.arange(states.shape[0], device=self.device)):
            for s in range(0, len(rows), chunk):
                r = rows[s : s + chunk]
                start = torch.full((len(r), 1), self.start_id, dtype=torch.long, device=self.device)  # (r, 1)
                with torch.no_grad(), self._autocast():
                    logits = self.model.text_decoder(
                        input_ids=start, attention_mask=torch.ones_like(start),
                        encoder_hidden_states=states[r, :length], encoder_attention_mask=qmask[r, :length],
                        use_cache=False,
                    ).logits[:, 0]  # (r, vocabulary)
                out[r] = logits.float().softmax(dim=-1)[:, vocab.first]  # (r, V)
        return out

    # -- the three parts ---------------------------------------------------------------------

    def question_states(self, images: BlipImages, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The question encoded against every frame: states (F, Lq, H), mask (F, Lq)."""
        return self._question_states(images, [question])

    def _question_states(self, images: BlipImages, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Q questions against every frame: states (Q * F, Lq, H) and mask (Q * F, Lq), row
        q * F + f = question q on frame f; questions right-padded to the longest, masked."""
        if not questions or not all(isinstance(q, str) for q in questions):
            raise TypeError("questions must be strings")
        enc = self.tokenizer(
            list(questions), truncation=True, max_length=self.question_max_tokens, padding=True, return_tensors="pt"
        )
        n_frames = images.n_frames
        ids = enc["input_ids"].to(self.device).repeat_interleave(n_frames, dim=0)  # (Q * F, Lq)
        mask = enc["attention_mask"].to(self.device).repeat_interleave(n_frames, dim=0)  # (Q * F, Lq)
        frame = torch.arange(n_frames, device=self.device).repeat(len(questions))  # (Q * F,)
        image_mask = torch.ones(images.embeds.shape[:2], dtype=torch.long, device=self.device)  # (F, T)
        states = []
        for s in range(0, ids.shape[0], QUESTION_ROWS):
            f = frame[s : s + QUESTION_ROWS]
            with torch.no_grad(), self._autocast():
                states.append(self.model.text_encoder(
                    input_ids=ids[s : s + QUESTION_ROWS], attention_mask=mask[s : s + QUESTION_ROWS],
                    encoder_hidden_states=images.embeds[f], encoder_attention_mask=image_mask[f],
                ).last_hidden_state)  # (r, Lq, H)
        return torch.cat(states), mask

    def _answer_tokens(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """n answers -> ids (n, La) ``[start] wordpieces [SEP] [PAD]...`` and mask (n, La)."""
        limit = int(self.model.config.text_config.max_position_embeddings) - 2
        pieces = self.tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        rows = [[self.start_id, *p[:limit], self.end_id] for p in pieces]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        if int(ids.max()) >= self.vocab_size:
            raise UsageError(f"the tokenizer produced id {int(ids.max())}, beyond the model's {self.vocab_size} tokens")
        return ids.to(self.device), mask.to(self.device)

    def _log_likelihood(self, states: torch.Tensor, qmask: torch.Tensor, row: torch.Tensor,
                        ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pairs of a question-state row and an answer: ``row`` (R,) into ``states`` (N, Lq, H),
        ``ids``/``mask`` (R, La) -> (R,) float32 scores: the summed log-probabilities of each
        answer's tokens after the start token, or with ``score="blip"`` BLIP's label-smoothed
        version. Pairs are grouped by question length (:func:`_by_question_length`) and run in
        chunks of at most ``chunk_rows``."""
        longest = ids.shape[1]
        chunk = self.chunk_rows or max(1, LOGITS_BUDGET // (longest * self.vocab_size))
        eps = self.smoothing
        out = torch.empty(ids.shape[0], dtype=torch.float32, device=self.device)
        for q_len, pairs in _by_question_length(qmask[row], torch.arange(ids.shape[0], device=self.device)):
            for start in range(0, len(pairs), chunk):
                p = pairs[start : start + chunk]
                f, m = row[p], mask[p]
                length = int(m.sum(dim=1).max())  # trim this chunk's padding
                ids_c, m = ids[p, :length], m[:, :length]  # (r, l)
                with torch.no_grad(), self._autocast():
                    logits = self.model.text_decoder(
                        input_ids=ids_c, attention_mask=m, encoder_hidden_states=states[f, :q_len],
                        encoder_attention_mask=qmask[f, :q_len], use_cache=False,
                    ).logits[:, :-1]  # (r, l - 1, vocabulary): position t predicts token t + 1
                logp = logits.float().log_softmax(dim=-1)
                token = logp.gather(-1, ids_c[:, 1:].unsqueeze(-1)).squeeze(-1)  # (r, l - 1)
                if eps:  # minus the label-smoothed cross-entropy, as BLIP's rank_answer
                    token = (1 - eps) * token + eps * logp.mean(dim=-1)
                out[p] = (token * m[:, 1:]).sum(dim=1)
        return out

    def _autocast(self) -> Any:
        return autocast(self.device, self.compute_dtype)


def _by_question_length(qmask: torch.Tensor, items: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Group ``items`` (R,) by their question's length (``qmask`` (R, Lq), right-padded):
    [(length, items of that length)], shortest first.

    The decoder then cross-attends to unpadded question states only. transformers 5.x's BLIP
    text model drops ``encoder_attention_mask`` on its way to the cross-attention (the layer
    passes it as ``attention_mask``, which the attention replaces with its own, unset,
    ``encoder_attention_mask``), so padded question tokens would be attended to; the text
    encoder's self-attention masks correctly, so the questions are encoded padded, together.
    """
    lengths = qmask.sum(dim=1)
    return [(int(n), items[lengths == n]) for n in torch.unique(lengths).tolist()]


# -- construction ---------------------------------------------------------------------------


def build_blip_teacher(
    weights: str | None,
    *,
    device: str = "cpu",
    compute_dtype: str = "float32",
    tokenizer: str | DatasetTokenizer | None = None,
    k_test: int = 128,
    chunk_rows: int | None = None,
    question_max_tokens: int = QUESTION_MAX_TOKENS,
    score: str = "loglik",
) -> BlipTeacher:
    """BLIP VQA with ``weights`` (None: ``Salesforce/blip-vqa-base``; a hub name, a directory or
    ``random[:SEED]``) on ``device``. ``tokenizer``: a tokenizer directory, ``vocab.txt`` or
    :class:`DatasetTokenizer` (default: the one beside the weights). ``k_test``: answers rescored per frame for
    open-ended questions. ``chunk_rows``: frame x answer rows per decoder call (None: by
    memory budget). ``score``: ``loglik`` (summed answer log-likelihood) or ``blip`` (BLIP's
    own label-smoothed ranking score)."""
    check_compute_dtype(compute_dtype)
    if score not in SCORES:
        raise UsageError(f"BLIP teacher score must be one of {', '.join(SCORES)}, got {score!r}")
    if isinstance(k_test, bool) or not isinstance(k_test, int) or k_test < 1:
        raise UsageError(f"k_test must be an integer >= 1, got {k_test!r}")
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise UsageError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    what = "BLIP VQA (BlipForQuestionAnswering)"
    resolved = resolve_hf_weights(weights, DEFAULT_WEIGHTS, what=what, allow_file=False)
    model = _build_model(resolved, what)
    tok, tok_identity = _tokenizer(tokenizer, resolved, what)
    vision = model.config.vision_config
    settings = processor_settings(
        resolved.folder, size=int(vision.image_size), mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
        interpolation="bicubic", what=what,
    )
    torch_device = torch.device(device)
    return BlipTeacher(
        model=model.to(torch_device),
        tokenizer=tok,
        tokenizer_identity=tok_identity,
        weights=resolved,
        transform=ImageTransform(resize="squash", **settings),
        device=torch_device,
        compute_dtype=compute_dtype,
        k_test=k_test,
        chunk_rows=chunk_rows,
        question_max_tokens=question_max_tokens,
        score=score,
    )


def _build_model(weights: HfWeights, what: str) -> Any:
    """BlipForQuestionAnswering in float32 on the CPU; the global RNG is left untouched."""
    from transformers import BlipForQuestionAnswering

    with torch.random.fork_rng(devices=[]):
        if weights.seed is not None:
            model = BlipForQuestionAnswering(default_config())
            init_random_(model, weights.seed)
            return model.float().eval()
        folder = weights.folder
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type != "blip":
            raise UsageError(f"--weights {folder} holds a {model_type!r} model; {what} reads 'blip' checkpoints")
        try:
            model, info = BlipForQuestionAnswering.from_pretrained(
                folder, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--weights {folder}: cannot load {what} ({first})") from exc
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:  # never run with randomly initialised parts
        kind, keys = next(iter(bad.items()))
        raise UsageError(f"--weights {folder} is not a complete {what} checkpoint: {len(keys)} {kind} such as {sorted(keys)[0]!r}")
    return model.float().eval()


def default_config() -> Any:
    """The architecture random weights use: the default checkpoint's (``BlipConfig()``)."""
    from transformers import BlipConfig

    return BlipConfig()


def _tokenizer(option: str | DatasetTokenizer | None, weights: HfWeights,
               what: str) -> tuple[Any, str | dict[str, Any]]:
    """(tokenizer, identity for the spec): ``option``, else the weights' own, else the default
    checkpoint's from the Hugging Face cache."""
    from transformers import AutoTokenizer, BertTokenizer

    if isinstance(option, DatasetTokenizer):
        return option.load(), option.spec()
    if option is not None:
        path = Path(option).expanduser()
        if path.is_dir():
            return AutoTokenizer.from_pretrained(path), f"sha256:{directory_sha256(path)}"
        if path.is_file():
            words = path.read_text(encoding="utf-8").splitlines()
            return BertTokenizer(vocab={w: i for i, w in enumerate(words)}), f"sha256:{sha256_file(path)}"
        raise UsageError(f"tokenizer {option}: no such directory or vocab.txt file")
    if weights.folder is not None and _has_tokenizer(weights.folder):
        return AutoTokenizer.from_pretrained(weights.folder), "weights"
    if weights.folder is not None:
        raise UsageError(f"--weights {weights.folder} has no tokenizer files; pass tokenizer=DIR or a vocab.txt")
    folder = hub_snapshot(DEFAULT_WEIGHTS, what=f"{what} tokenizer (pass tokenizer=PATH with random weights)",
                          weights=False)
    try:
        return AutoTokenizer.from_pretrained(folder), f"{DEFAULT_WEIGHTS}@{folder.name}"
    except (OSError, ValueError) as exc:
        raise UsageError(f"no usable tokenizer of {DEFAULT_WEIGHTS} in {folder}; pass tokenizer=PATH") from exc


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))


def check_weights(weights: str | None) -> HfWeights:
    """``weights`` resolved without building the model (stage one checks its flags before any
    video is decoded); a one-line :class:`UsageError` if they cannot be used."""
    return resolve_hf_weights(weights, DEFAULT_WEIGHTS, what="BLIP VQA (BlipForQuestionAnswering)", allow_file=False)


def check_tokenizer(tokenizer: str | None, weights: HfWeights) -> None:
    """Load the tokenizer the teacher would use with ``weights`` (``tokenizer``, else the
    weights' own, else the default checkpoint's); a one-line :class:`UsageError` if it cannot be."""
    _tokenizer(tokenizer, weights, "BLIP VQA (BlipForQuestionAnswering)")
