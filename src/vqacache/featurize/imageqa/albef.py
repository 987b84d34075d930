"""ALBEF as SpARC's image-QA teacher: per-frame answer probabilities ranked as ALBEF ranks them.

The model is ALBEF's VQA model (:mod:`vqacache.featurize.encoders.albef_model`) loaded from
ALBEF's VQA checkpoint through the documented key map (or ``random[:SEED]``); frames go
through ALBEF's test transform (squash to 384 px, bicubic, CLIP mean/std); the question is
cleaned with ALBEF's ``pre_question`` and tokenized ``[CLS] question``; answers are
``[CLS] answer [SEP]``. Ranking is ``rank_answer`` of ALBEF's ``models/model_vqa.py``
(:mod:`.albef_rank`): multiple choice scores every candidate in full; open-ended scores the
top ``k`` of the vocabulary by first-token probability (``k_test``, 128 in ALBEF's
``configs/VQA.yaml``) and gives the rest probability 0.

A video's frames are encoded once (:meth:`AlbefTeacher.encode_images`: the ViT tokens,
on the device) and reused for every question about it; ``images.select(idx)`` picks the
frames of one question. :meth:`AlbefTeacher.rank_many` ranks all the questions about the same
frames in batched calls (the same numbers as one call per question, up to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.featurize.device import resolve_compute_dtype, resolve_device
from vqacache.featurize.encoders.albef import (
    DEFAULT_ARCHITECTURE,
    albef_transform,
    architecture_config,
    build_albef_model,
    default_tokenizer,
    transform_spec,
)
from vqacache.featurize.encoders.albef_checkpoint import AlbefWeights, checkpoint_architecture, resolve_albef_weights
from vqacache.featurize.encoders.albef_model import AlbefConfig, AlbefModel
from vqacache.featurize.encoders.albef_tokenizer import (
    QUESTION_MAX_WORDS,
    load_bert_tokenizer,
    pre_question,
    tokenize,
    tokenizer_spec,
)
from vqacache.featurize.encoders.precision import autocast, check_compute_dtype
from vqacache.featurize.encoders.weights import RANDOM_INIT
from vqacache.featurize.imageqa.albef_rank import (
    SCORES,
    AnswerTokens,
    question_states,
    questions_states,
    rank_answers,
    score_pairs,
)
from vqacache.featurize.imageqa.dataset_tokenizer import DatasetTokenizer
from vqacache.featurize.imageqa.teacher import Ranking, TeacherQuestion, VocabScores, no_frames

RANKING = "albef-rank_answer-v1"
"""Identity of :mod:`.albef_rank` (the equations): recorded in the teacher spec."""
K_TEST = 128


@dataclass(frozen=True)
class AlbefImages:
    """The ViT tokens of F frames, ``tokens`` (F, T, W) on the teacher's device."""

    tokens: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_frames(self) -> int:
        return len(self)

    def select(self, index: Any) -> AlbefImages:
        """The frames at ``index`` (a list/array of positions), in that order."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.tokens.device)
        return AlbefImages(self.tokens.index_select(0, idx))


class AlbefTeacher:
    """ALBEF's VQA model, frozen, as an :class:`~vqacache.featurize.imageqa.teacher.ImageQATeacher`.
    Build with :func:`build_albef_teacher`."""

    name = "albef"

    def __init__(
        self,
        *,
        model: AlbefModel,
        model_name: str,
        tokenizer: Any,
        weights: AlbefWeights,
        device: torch.device,
        compute_dtype: str,
        k_test: int,
        chunk_size: int,
        score: str,
        tokenizer_origin: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer_origin = tokenizer_origin
        """Set for a tokenizer built from the dataset's text (``DatasetTokenizer.spec()``)."""
        self.cfg: AlbefConfig = model.cfg
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.weights = weights
        self.transform = albef_transform(self.cfg.image_size)
        self.device = device
        self.compute_dtype = compute_dtype
        self.k_test = k_test
        self.chunk_size = chunk_size
        self.score = score
        self.image_batch = 8 if device.type == "cpu" else 128

    def teacher_spec(self) -> dict[str, Any]:
        """Everything that changes the probabilities (JSON values)."""
        spec: dict[str, Any] = {
            "teacher": self.name,
            "architecture": f"albef:{self.model_name}",
            "config": self.cfg.to_dict(),
            "weights": {"source": self.weights.spec.source, "identity": self.weights.spec.identity},
            "preprocess": transform_spec(self.transform),
            "compute_dtype": self.compute_dtype,
            "tokenizer": tokenizer_spec(self.tokenizer) | (self.tokenizer_origin or {}),
            "question": {"clean": "albef-pre_question", "max_words": QUESTION_MAX_WORDS},
            "ranking": {
                "method": RANKING,
                "score": self.score,
                "k_test": self.k_test,
                "answer_tokens": "[CLS] answer [SEP]",
                "start_token": "[CLS]",
            },
        }
        if self.weights.spec.source == "random":
            spec["random_init"] = RANDOM_INIT
        return spec

    # -- frames and answers -----------------------------------------------------------------

    def encode_images(self, frames: np.ndarray | torch.Tensor) -> AlbefImages:
        """uint8 RGB (F, H, W, 3) -> the frames' ViT tokens (F, T, W) on the device."""
        out = []
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            for start in range(0, len(frames), self.image_batch):
                x = self.transform(frames[start : start + self.image_batch], self.device)  # (b, 3, S, S)
                out.append(self.model.encode_image(x))  # (b, T, W)
        if not out:
            t = self.cfg.grid**2 + 1
            return AlbefImages(torch.empty(0, t, self.cfg.vision_width, device=self.device))
        return AlbefImages(torch.cat(out))

    def prepare_vocab(self, vocab: list[str]) -> AnswerTokens:
        """The answers tokenized once, ``[CLS] answer [SEP]``, on the device."""
        if isinstance(vocab, str):
            raise TypeError("answers must be a list of strings, not one string")
        ids, mask = tokenize(
            self.tokenizer, list(vocab), answer=True, max_length=self.cfg.max_position_embeddings, device=self.device
        )
        return AnswerTokens(ids, mask)

    # -- ranking ----------------------------------------------------------------------------

    def _question(self, images: AlbefImages, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One question over F frames -> fused states (F, Lq, D) and mask (F, Lq)."""
        ids, mask = tokenize(
            self.tokenizer,
            [pre_question(question)],
            answer=False,
            max_length=self.cfg.max_position_embeddings,
            device=self.device,
        )  # (1, Lq)
        states = question_states(self.model, images.tokens, ids, mask)  # (F, Lq, D)
        return states, mask.expand(states.shape[0], -1)

    def _rank(self, images: AlbefImages, question: str, answers: AnswerTokens, k: int) -> tuple[np.ndarray, np.ndarray]:
        """probs (F, k') float32 and index (F, k') int64; k' = min(k, A)."""
        n, count = len(images), len(answers)
        if n == 0 or count == 0:
            k = min(k, count)
            return np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            states, mask = self._question(images, question)
            probs, index = rank_answers(
                self.model,
                states,
                mask,
                answers,
                k,
                start_id=self.tokenizer.cls_token_id,
                chunk=self.chunk_size,
                score=self.score,
            )
        return probs.float().cpu().numpy(), index.cpu().numpy().astype(np.int64)

    def rank_candidates(self, images: AlbefImages, question: str, candidates: list[str]) -> np.ndarray:
        """(F, C) float32: each frame's softmax over the C candidates (all scored in full)."""
        answers = self.prepare_vocab(candidates)
        probs, _ = self._rank(images, question, answers, len(answers))
        return probs

    def rank_vocab(
        self, images: AlbefImages, question: str, vocab: AnswerTokens | list[str], k: int | None = None
    ) -> VocabScores:
        """Top ``k_test`` of the vocabulary per frame by first-token probability, rescored in
        full: probs (F, k') best first, index (F, k') into the vocabulary, k' = min(k_test, V).
        ``k``, when given, must be ``k_test`` (the k the spec records)."""
        if k is not None and int(k) != self.k_test:
            raise ValueError(f"k={k} but this teacher was built (and its spec written) with k_test={self.k_test}")
        answers = vocab if isinstance(vocab, AnswerTokens) else self.prepare_vocab(list(vocab))
        probs, index = self._rank(images, question, answers, self.k_test)
        order = np.argsort(-probs, axis=1, kind="stable")  # best first
        return VocabScores(
            probs=np.take_along_axis(probs, order, axis=1).astype(np.float32),
            index=np.take_along_axis(index, order, axis=1),
        )

    def rank_many(
        self, images: AlbefImages, questions: list[TeacherQuestion], vocab: AnswerTokens | None, k: int | None = None
    ) -> list[Ranking]:
        """Rank Q questions about the same F frames in batched calls; per question, in order,
        (F, C) probabilities (multiple choice) or :class:`VocabScores` (open-ended, over
        ``vocab``, top ``k_test``), equal to :meth:`rank_candidates` / :meth:`rank_vocab`.

        The Q x F (question, frame) rows are fused together (questions right-padded and
        masked, as ALBEF's own evaluation batches them); then every multiple-choice (row,
        candidate) pair goes through one chunked decoder pass and the open-ended rows through
        one :func:`rank_answers`."""
        questions = list(questions)
        if vocab is not None and not isinstance(vocab, AnswerTokens):
            vocab = self.prepare_vocab(list(vocab))
        if any(not q.candidates for q in questions):
            if vocab is None:
                raise ValueError("open-ended questions need the answer vocabulary")
            if k is not None and int(k) != self.k_test:
                raise ValueError(f"k={k} but this teacher was built (and its spec written) with k_test={self.k_test}")
        n = len(images)
        if n == 0 or not questions:
            open_ended = any(not q.candidates for q in questions)
            return no_frames(questions, min(self.k_test, len(vocab)) if open_ended else 0)
        out: list[Ranking | None] = [None] * len(questions)
        ids, mask = tokenize(self.tokenizer, [pre_question(q.question) for q in questions], answer=False,
                             max_length=self.cfg.max_position_embeddings, device=self.device)  # (Q, Lq)
        with torch.no_grad(), autocast(self.device, self.compute_dtype):
            states = questions_states(self.model, images.tokens, ids, mask, self.chunk_size)  # (Q * F, Lq, D)
            m = mask.repeat_interleave(n, dim=0)  # (Q * F, Lq): BERT's cross-attention masks the padding
            mc = [i for i, q in enumerate(questions) if q.candidates]
            oe = [i for i, q in enumerate(questions) if not q.candidates]
            if mc:
                for i, probs in zip(mc, self._rank_choices(states, m, [questions[i] for i in mc], mc, n)):
                    out[i] = probs
            if oe:
                rows = torch.cat([torch.arange(i * n, (i + 1) * n, device=self.device) for i in oe])
                probs, index = rank_answers(self.model, states[rows], m[rows], vocab, self.k_test,
                                            start_id=self.tokenizer.cls_token_id, chunk=self.chunk_size,
                                            score=self.score)  # (R, k'), (R, k')
                probs, index = probs.float().cpu().numpy(), index.cpu().numpy().astype(np.int64)
                order = np.argsort(-probs, axis=1, kind="stable")  # best first
                probs, index = np.take_along_axis(probs, order, 1), np.take_along_axis(index, order, 1)
                for j, i in enumerate(oe):
                    out[i] = VocabScores(probs[j * n : (j + 1) * n].astype(np.float32), index[j * n : (j + 1) * n])
        return out  # type: ignore[return-value]

    def _rank_choices(self, states: torch.Tensor, mask: torch.Tensor, questions: list[TeacherQuestion],
                      positions: list[int], n: int) -> list[np.ndarray]:
        """Every (row, candidate) pair of these multiple-choice questions in one chunked pass
        -> per question (F, C_q) float32, eq. (4) over its own candidates."""
        counts = [len(q.candidates) for q in questions]
        answers = self.prepare_vocab([c for q in questions for c in q.candidates])
        rows, picks, offset = [], [], 0
        for pos, count in zip(positions, counts):
            rows.append(torch.arange(pos * n, (pos + 1) * n, device=self.device).repeat_interleave(count))
            picks.append(torch.arange(offset, offset + count, device=self.device).repeat(n))
            offset += count
        s = score_pairs(self.model, states, mask, torch.cat(rows), answers, torch.cat(picks),
                        chunk=self.chunk_size, score=self.score)  # (sum F * C_q,)
        out, start = [], 0
        for count in counts:
            block = s[start : start + n * count].view(n, count)
            out.append(torch.softmax(block.float(), dim=1).cpu().numpy().astype(np.float32))
            start += n * count
        return out


def build_albef_teacher(
    weights: str | None,
    *,
    device: str = "cpu",
    compute_dtype: str = "float32",
    k_test: int = K_TEST,
    chunk_size: int | None = None,
    score: str = "albef",
    model_name: str | None = None,
    config: AlbefConfig | None = None,
    tokenizer: Any = None,
) -> AlbefTeacher:
    """ALBEF's VQA model with ``weights`` (ALBEF's VQA checkpoint file, or ``random[:SEED]``).

    ``k_test``: answers of the vocabulary scored in full by default; ``chunk_size``: (frame,
    answer) rows per decoder pass (default 64 on the CPU, 1024 on a GPU; results do not
    depend on it); ``score``: ``albef`` (ALBEF's, first token counted twice) or ``loglik``;
    ``model_name``: an :data:`ARCHITECTURES` name (default: the one a ``vqa-train-teacher``
    checkpoint records, else ``albef-vqa``); ``config``: another architecture (tests);
    ``tokenizer``: a BERT tokenizer or directory, or a :class:`DatasetTokenizer` built from the
    dataset's text (default: the architecture's own, else bert-base-uncased from the Hugging Face
    cache)."""
    device = resolve_device(device)
    compute_dtype = check_compute_dtype(resolve_compute_dtype(compute_dtype, device))
    if score not in SCORES:
        raise UsageError(f"ALBEF teacher score must be one of {', '.join(SCORES)}, got {score!r}")
    if isinstance(k_test, bool) or not isinstance(k_test, int) or k_test < 1:
        raise UsageError(f"k_test must be an integer >= 1, got {k_test!r}")
    resolved = resolve_albef_weights(weights)
    if model_name is None and config is None and resolved.path is not None:
        model_name = checkpoint_architecture(resolved.path)  # a vqa-train-teacher checkpoint says its own
    model_name = model_name or DEFAULT_ARCHITECTURE
    if config is None:
        config = architecture_config(model_name)
    tokenizer = default_tokenizer(model_name, tokenizer)
    if not config.decoder_layers:
        raise UsageError("the ALBEF image-QA teacher needs an architecture with the answer decoder")
    torch_device = torch.device(device)
    if chunk_size is None:
        chunk_size = 64 if torch_device.type == "cpu" else 1024
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UsageError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    origin = tokenizer.spec() if isinstance(tokenizer, DatasetTokenizer) else None
    tok = tokenizer.load() if isinstance(tokenizer, DatasetTokenizer) else load_bert_tokenizer(tokenizer)
    model = build_albef_model(config.with_(embed_dim=None), resolved, keep_projections=False)
    return AlbefTeacher(
        model=model.to(torch_device),
        model_name=model_name,
        tokenizer=tok,
        weights=resolved,
        device=torch_device,
        compute_dtype=compute_dtype,
        k_test=k_test,
        chunk_size=chunk_size,
        score=score,
        tokenizer_origin=origin,
    )


def check_weights(weights: str | None) -> AlbefWeights:
    """``weights`` resolved without building the model (stage one checks its flags before any
    video is decoded); a one-line :class:`UsageError` if they cannot be used."""
    return resolve_albef_weights(weights)


def check_tokenizer(tokenizer: str | None, weights: AlbefWeights) -> None:
    """Load ``tokenizer`` (None: bert-base-uncased from the Hugging Face cache) as the teacher
    will; a one-line :class:`UsageError` if it cannot be."""
    load_bert_tokenizer(tokenizer)
