"""Fine-tune ALBEF's cross-modal layers and answer decoder on a dataset's questions from cached
ALBEF vision tokens (SpARC A.1 and A.4), without decoding a video again.

SpARC fine-tunes "the visual-text interaction module" of ALBEF on the target dataset before
using it as the teacher, with the encoders frozen: here the fusion layers (``fusion``, BERT
layers 6-11 with cross-attention) and the answer decoder (``decoder``) train; the ViT is not
run at all (its tokens come from the store) and the text layers 0-5 stay frozen. A.4's
settings: 5 epochs, Adam, lr 2e-5, weight decay 0.01, 16 uniformly sampled frames per
question (8 on AGQA). Each (frame, question) pair is one training example whose target is the
answer's text (multiple choice: the correct candidate; open-ended: the answer string), with
ALBEF's VQA objective: the answer decoder's negative log-likelihood of ``[CLS] answer [SEP]``
summed over its tokens, averaged over the batch (ALBEF's ``model_vqa.py`` in training mode,
without its momentum distillation and answer weights: one answer per question here).

This project's choices where A.4 is silent: batch 32 (frame, question) pairs, examples shuffled
per epoch with a seeded generator, no learning-rate schedule; Adam as SpARC writes it (ALBEF's
own VQA config uses AdamW with weight decay 0.02).

**The token store.** An ``albef`` store featurized with patch tokens unpooled
(``--encoder albef --patch-pool 1``) holds, per frame, the ViT's CLS after the final norm
(``cls_hidden``) and the 576 patch tokens after it (``patch``): together exactly what
``AlbefModel.encode_image`` returns (577 tokens), stored as float16. Frames are chosen per
question by the shared rule (``frame_indices``), as the teacher pass chooses them.

**The checkpoint** is written in ALBEF's own key layout (:func:`albef_state_dict`, the inverse
of :func:`~vqacache.featurize.encoders.albef_checkpoint.albef_key`) as ``{"model": state,
"vqacache_finetune": JSON}``, through a temporary file and a rename, and read back strictly
before the rename; ``--imageqa albef --imageqa-weights PATH`` loads it (recorded by sha256).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqacache.cache_spec import FeatureStore, open_store
from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.frame_selection import frame_indices
from vqacache.featurize.encoders.albef_checkpoint import albef_key, load_albef_weights, read_albef_checkpoint
from vqacache.featurize.encoders.albef_model import AlbefModel
from vqacache.featurize.encoders.albef_tokenizer import pre_question, tokenize
from vqacache.featurize.imageqa.albef import AlbefImages, AlbefTeacher

FINETUNE_FORMAT = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """A.4's settings (epochs, lr, weight decay, frames) and this project's (batch, seed)."""

    epochs: int = 5
    lr: float = 2e-5
    weight_decay: float = 0.01
    frames: int = 16
    batch_size: int = 32
    seed: int = 0
    split: str = "train"

    def check(self) -> None:
        for name, ok, want in (("epochs", self.epochs >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                               ("weight-decay", self.weight_decay >= 0, ">= 0"), ("frames", self.frames >= 1, ">= 1"),
                               ("batch-size", self.batch_size >= 1, ">= 1")):
            if not ok:
                raise UsageError(f"--{name} {getattr(self, name.replace('-', '_'))!r}: expected {want}")


@dataclass(frozen=True)
class Example:
    """One training question: its video, the stored frame rows it is asked about, its text and answer text."""

    video_id: str
    rows: np.ndarray
    question: str
    answer: str


def check_token_store(store: FeatureStore) -> None:
    """Refuse a store whose frames are not ALBEF's full ViT token sequence (one line, the flag named)."""
    spec, out = store.spec, store.spec.outputs
    if not spec.encoder.startswith("albef") or out.cls_hidden != "post-ln-cls" or out.patch_layer != "post-ln" \
            or out.patch_pool != 1:
        raise UsageError(
            f"--tokens {store.path}: the teacher reads ALBEF's unpooled ViT tokens; this store is {spec.encoder!r} with "
            f"cls_hidden={out.cls_hidden!r}, patch_layer={out.patch_layer!r}, patch_pool={out.patch_pool} (featurize "
            "with --encoder albef --patch-pool 1)")


def cached_images(store: FeatureStore, video_id: str, rows: np.ndarray, device: torch.device) -> AlbefImages:
    """Stored frames ``rows`` (F,) of a video -> their ViT tokens (F, 1 + P, W): CLS then patches."""
    arrays = store.video_arrays(video_id)
    cls = np.asarray(arrays["cls_hidden"].get_orthogonal_selection((rows, slice(None))), dtype=np.float32)
    patch = np.asarray(arrays["patch"].get_orthogonal_selection((rows, slice(None), slice(None))), dtype=np.float32)
    tokens = np.concatenate([cls[:, None], patch], axis=1)  # (F, 1 + P, W)
    return AlbefImages(torch.from_numpy(tokens).to(device))


def answer_text(entry: dict[str, Any]) -> str | None:
    """The answer's text: the correct candidate (multiple choice) or the answer string; None when unlabelled."""
    answer, candidates = entry.get("answer"), entry.get("candidates") or []
    if answer is None or answer == "":
        return None
    if candidates:
        return str(candidates[int(answer)]) if 0 <= int(answer) < len(candidates) else None
    return str(answer)


def examples(store: FeatureStore, split: str, frames: int) -> list[Example]:
    """Every labelled question of ``split`` with a complete video in the token store, with its frames."""
    out = []
    videos = sorted({store.read_question(q).video_id for q in store.questions(split)})
    for video_id in videos:
        if not store.is_complete(video_id) or not store.has_question_bundle(split, video_id):
            continue
        pts = np.asarray(store.video_arrays(video_id)["pts"][:], dtype=np.float64)
        for entry in store.question_entries(split, video_id):
            text = answer_text(entry)
            if text is None:
                continue
            rows = frame_indices(pts, frames, entry.get("start"), entry.get("end"))
            out.append(Example(video_id, np.asarray(rows, dtype=np.int64), str(entry["question"]), text))
    return out


def answer_nll(model: AlbefModel, states: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor,
               amask: torch.Tensor) -> torch.Tensor:
    """ALBEF's VQA loss: fused states (B, Lq, D) + mask, answers ``[CLS] a [SEP]`` ids/mask (B, La)
    -> mean over B of -sum_t log p(a_t | a_<t, question, image) over the answer's real tokens."""
    logits = model.decode(ids, amask, states, mask)  # (B, La, V)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts tokens 1..La-1
    token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, La - 1)
    return -(token * amask[:, 1:].to(token.dtype)).sum(1).mean()


def trainable_parameters(model: AlbefModel) -> list[torch.nn.Parameter]:
    """The fusion layers and the answer decoder train; everything else is frozen."""
    model.requires_grad_(False)
    params = []
    for part in (model.fusion, model.decoder):
        if part is None:
            raise UsageError("the ALBEF teacher to fine-tune has no answer decoder")
        part.requires_grad_(True)
        params += list(part.parameters())
    return params


def _batches(store: FeatureStore, items: list[Example], order: list[int], size: int,
             device: torch.device) -> Iterator[tuple[torch.Tensor, list[str], list[str]]]:
    """(frame, question) pairs in ``order`` of questions, ``size`` pairs at a time: tokens (b, T, W), texts."""
    tokens: list[torch.Tensor] = []
    questions: list[str] = []
    answers: list[str] = []
    for i in order:
        ex = items[i]
        images = cached_images(store, ex.video_id, ex.rows, device)
        for f in range(len(images)):
            tokens.append(images.tokens[f])
            questions.append(pre_question(ex.question))
            answers.append(ex.answer)
            if len(tokens) == size:
                yield torch.stack(tokens), questions, answers
                tokens, questions, answers = [], [], []
    if tokens:
        yield torch.stack(tokens), questions, answers


def finetune(
    teacher: AlbefTeacher, store: FeatureStore, config: FinetuneConfig,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Fine-tune ``teacher.model`` in place on ``config.split`` of ``store``; returns per-epoch mean losses."""
    config.check()
    check_token_store(store)
    items = examples(store, config.split, config.frames)
    if not items:
        raise UsageError(f"--split {config.split}: no labelled question with features in {store.path}")
    model, device, tok = teacher.model, teacher.device, teacher.tokenizer
    params = trainable_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(config.seed)
    losses, t0 = [], time.perf_counter()
    max_len = teacher.cfg.max_position_embeddings
    for epoch in range(config.epochs):
        model.train()
        model.visual.eval()
        model.text.eval()  # frozen layers: no dropout
        order = torch.randperm(len(items), generator=g).tolist()
        total, steps = 0.0, 0
        for tokens, questions, answers in _batches(store, items, order, config.batch_size, device):
            ids, mask = tokenize(tok, questions, answer=False, max_length=max_len, device=device)
            aids, amask = tokenize(tok, answers, answer=True, max_length=max_len, device=device)
            with torch.no_grad():
                text = model.encode_text(ids, mask)  # (b, Lq, D) frozen
            states = model.fuse(text, mask, tokens)
            loss = answer_nll(model, states, mask, aids, amask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(1, steps))
        log(f"teacher epoch {epoch}: answer NLL {losses[-1]:.4f} over {steps} steps")
    model.eval().requires_grad_(False)
    return {"losses": losses, "questions": len(items), "pairs_per_epoch": sum(len(e.rows) for e in items),
            "seconds": time.perf_counter() - t0, "config": asdict(config)}


def albef_state_dict(model: AlbefModel) -> dict[str, torch.Tensor]:
    """The model's weights under ALBEF's checkpoint keys (the inverse of ``albef_key``; checked key by key)."""
    text_layers = model.cfg.text_layers
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("visual."):
            name = "visual_encoder." + key[len("visual."):]
        elif key.startswith("text.embeddings."):
            name = "text_encoder.embeddings." + key[len("text.embeddings."):]
        elif key.startswith("text.encoder.layer."):
            name = "text_encoder.encoder.layer." + key[len("text.encoder.layer."):]
        elif key.startswith("fusion.layer."):
            i, rest = key[len("fusion.layer."):].split(".", 1)
            name = f"text_encoder.encoder.layer.{int(i) + text_layers}.{rest}"
        elif key.startswith("decoder."):
            name = "text_decoder." + key[len("decoder."):]
        elif key.startswith(("vision_proj.", "text_proj.")):
            name = key
        else:
            raise ValueError(f"no ALBEF checkpoint key for {key!r}")
        back = albef_key(name, text_layers=text_layers, with_decoder=model.decoder is not None)
        if back is None:
            continue  # a buffer ALBEF's loader ignores (position ids)
        if back != key:
            raise ValueError(f"{key!r} -> {name!r} maps back to {back!r}")
        out[name] = value.detach().to("cpu", torch.float32).clone()
    return out


def save_teacher_checkpoint(model: AlbefModel, path: Path, meta: dict[str, Any]) -> Path:
    """Write the model as an ALBEF checkpoint at ``path`` (temporary file, strict read-back, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"model": albef_state_dict(model), "vqacache_finetune": json.dumps(
            {"format": FINETUNE_FORMAT, **meta}, sort_keys=True)}, tmp)
        check = AlbefModel(model.cfg)
        load_albef_weights(check, read_albef_checkpoint(tmp))  # strict both ways: every key accounted for
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def open_token_store(path: str | Path) -> FeatureStore:
    store = open_store(path)
    check_token_store(store)
    return store
