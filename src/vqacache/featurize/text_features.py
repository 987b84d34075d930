"""Question and candidate text features, written as one bundle per (split, video)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from vqacache.cache_spec import FeatureStore
from vqacache.featurize.datasets import QuestionRecord
from vqacache.featurize.encoders import Encoder


def write_question_bundles(store: FeatureStore, encoder: Encoder, split: str, questions: list[QuestionRecord]) -> int:
    """Encode and store the text features of every question, one bundle per (split, video)
    (only the questions themselves for an encoder without a text tower).

    Texts repeat a lot (candidates such as "yes", "two", "red"), so each group of videos
    encodes its distinct strings once.
    """
    by_video: dict[str, list[QuestionRecord]] = defaultdict(list)
    for q in questions:
        by_video[q.video_id].append(q)
    todo = [v for v in sorted(by_video) if not store.has_question_bundle(split, v)]
    has_text = getattr(encoder, "has_text", True)
    for start in range(0, len(todo), TEXT_GROUP_VIDEOS):
        group = todo[start : start + TEXT_GROUP_VIDEOS]
        texts = (TextFeatures(encoder, [t for v in group for q in by_video[v] for t in (q.question, *q.candidates)])
                 if has_text else None)
        for video_id in group:
            records = by_video[video_id]
            # a vision-only encoder (vitg, blip): the bundle holds the questions, no text arrays
            arrays = texts.bundle(records) if texts is not None else {}
            store.write_questions(split, video_id, [_entry(q) for q in records], arrays)
    return len(questions)


TEXT_GROUP_VIDEOS = 64
"""Videos whose distinct texts are encoded together (bounds memory: ~40 KiB per text)."""
TEXT_BATCH = 64
"""Texts per text-tower forward."""


class TextFeatures:
    """Text features of a set of distinct strings, encoded once each, sorted by length so a
    batch pads little; assembled into question bundles by :meth:`bundle`."""

    def __init__(self, encoder: Encoder, texts: list[str]) -> None:
        distinct = sorted(set(texts), key=lambda t: (len(t), t))
        self.emb: dict[str, torch.Tensor] = {}  # text -> (E,)
        self.tokens: dict[str, torch.Tensor] = {}  # text -> (L_text, W)
        for start in range(0, len(distinct), TEXT_BATCH):
            batch = distinct[start : start + TEXT_BATCH]
            out = encoder.encode_text(batch)
            for i, text in enumerate(batch):
                self.emb[text] = out["emb"][i]
                self.tokens[text] = out["tokens"][i, : int(out["length"][i])]
        self.width = encoder.dims["text_tokens"][0]

    def _stack(self, texts: list[str], longest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n,) texts -> emb (n, E), tokens (n, longest, W) zero-padded, lengths (n,)."""
        emb = torch.stack([self.emb[t] for t in texts])
        tokens = torch.zeros(len(texts), longest, self.width)
        lengths = np.array([len(self.tokens[t]) for t in texts], dtype=np.int64)
        for i, t in enumerate(texts):
            tokens[i, : lengths[i]] = self.tokens[t]
        return emb.numpy(), tokens.numpy(), lengths

    def bundle(self, records: list[QuestionRecord]) -> dict[str, np.ndarray]:
        """The arrays of FeatureStore.write_questions for one video's questions."""
        questions = [q.question for q in records]
        longest = max(len(self.tokens[t]) for t in questions)
        text, text_tokens, text_len = self._stack(questions, longest)
        arrays = {"text": text, "text_tokens": text_tokens, "text_len": text_len}
        n_cand = max(len(q.candidates) for q in records)
        if n_cand == 0:
            return arrays
        cands = [c for q in records for c in q.candidates]
        longest = max(len(self.tokens[c]) for c in cands)
        emb, tokens, lengths = self._stack(cands, longest)
        cand = np.zeros((len(records), n_cand, emb.shape[1]), emb.dtype)
        cand_tokens = np.zeros((len(records), n_cand, longest, self.width), tokens.dtype)
        cand_len = np.zeros((len(records), n_cand), np.int64)  # 0 marks a padding slot
        row = 0
        for i, q in enumerate(records):
            c = len(q.candidates)
            cand[i, :c], cand_tokens[i, :c], cand_len[i, :c] = emb[row : row + c], tokens[row : row + c], lengths[row : row + c]
            row += c
        arrays.update(cand=cand, cand_tokens=cand_tokens, cand_len=cand_len)
        return arrays


def _entry(q: QuestionRecord) -> dict[str, Any]:
    return {
        "qid": q.qid,
        "question": q.question,
        "candidates": list(q.candidates),
        "answer": q.answer,
        "qtype": q.qtype,
        "start": q.start,
        "end": q.end,
    }
