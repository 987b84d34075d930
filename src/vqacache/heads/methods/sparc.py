"""``sparc`` (SpARC, "Spatial distillation And Reliable Causal frame localization"): training
around a backbone (``--backbone hga|uniform|videodistill``) with an image-QA teacher's
per-frame answer probabilities ``imageqa`` p (B, N, C) (``../shared/papers/sparc.txt``).

Per batch, with the correct answer a (B,), real frames ``frame_mask`` (B, N), threshold t:

* (Sec. 3.2.1) causal frames ``V_c = {f_k : p_k[a] > t}`` (:func:`causal_set`). The paper does
  not say what a question without any causal frame uses; here all its frames (this project's
  choice: its guided prediction is then the whole-video one).
* (eq. L_g) guided prediction ``M(V_c, Q)``: the backbone with its frame mask narrowed to V_c;
  ``L_g = CE(M(V_c, Q), A)`` (:func:`guided_loss`).
* (eq. L_c) ``L_c = KL(M(V, Q), M(V_c, Q)) = sum_c P_V log(P_V / P_Vc)``, the whole-video
  distribution first as the paper writes it (:func:`consistency_loss`); both predictions keep
  their gradients (the paper stops none). The earlier version of this file used the reverse
  order; the paper's is followed.
* (eq. L_s) single-frame prediction ``M({f_j}, Q)`` for one uniformly drawn real frame j per
  question; ``L_s = CE(M({f_j}, Q), p_j)``, the cross-entropy to the teacher's distribution
  for that frame as the paper writes it (KL plus the teacher's entropy: the same gradient)
  (:func:`spatial_loss`). An open-ended teacher keeps only its top-k answers; p_j is
  renormalised over the classes it covers (this project's choice).
* (eq. L_total) ``L = L_g + w_c L_c + w_s L_s``; w_c = w_s = 1 (A.5).
* Temporal Guided Mixup (A.2, :func:`temporal_guided_mixup`), with probability ``mixup_prob``
  per batch: ``lambda ~ Beta(alpha, beta)`` (Table 6: 0.1, 0.1) and a pairing pi of the batch;
  only the causal frames of each video are mixed with the same frame position of video pi(i)
  (``f_k <- lambda f_k + (1 - lambda) f'_k``), the question (sentence vector and token states)
  and the candidates' text likewise, and the targets become ``lambda y_i + (1 - lambda)
  y_pi(i)``, the teacher's distributions with the same lambda. Non-causal frames stay
  bit-identical. This project's choices where A.2 is silent: a video is paired only with one
  whose candidate slots are the same (so a mixed target never lands on a padded candidate), a
  causal frame is mixed only where the partner has a real frame, and the guided prediction
  keeps video i's causal set.

Only the whole-video prediction is used at inference (``predict`` is the backbone's).

**Frames** (A.3): the model's frames are the teacher's. ``num_frames`` 0 (the default) takes
the teacher spec's frame count, and the dataset's frame rule is the one the teacher's frames
were chosen with (``frame_indices``), so frame k is the teacher's frame k. Another count is
refused unless ``frames_mismatch=true``, which warns (each frame then takes the nearest
teacher frame). With HGA clips of ``clip_len`` > 1 frames, a clip's teacher distribution is
its first frame's (A.3), and the causal set, the single "frame" and the mixed frames are clips.

**Open-ended teachers**: ``outside_topk`` in the logs (open-ended batches only) is the share of a batch's labelled
questions whose answer has no teacher probability on any frame (outside the teacher's top-k:
p_a = 0, so the causal set falls back to all frames); the epoch means land in metrics.jsonl
(``train_outside_topk``). Before training, :func:`count_outside_topk` counts them exactly over the
training split's bundles and the run warns with the count (``N of M open-ended training questions``).

Values the paper does not give, this project's choices: ``threshold`` t = 0.5, ``mixup_prob``
0.5 (the ``sparc-*`` presets: 1.0, mixup on every batch as in Zhang et al.), the fallback and
pairing rules above.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UnknownName, UsageError
from vqacache.heads.data import MissingTeacher
from vqacache.heads.methods import hga, uniform, videodistill
from vqacache.heads.methods.common import Method, plain_predict, zero_loss

BACKBONES = {"hga": hga.METHOD, "uniform": uniform.METHOD, "videodistill": videodistill.METHOD}
DEFAULTS = {
    "backbone": "videodistill", "num_frames": 0, "frames_mismatch": False,
    "threshold": 0.5, "w_c": 1.0, "w_s": 1.0,
    "mixup_alpha": 0.1, "mixup_beta": 0.1, "mixup_prob": 0.5,
}
"""``num_frames`` 0: the teacher's frame count. ``threshold`` and ``mixup_prob``: this project's choices."""

HELP = {
    "backbone": "video QA model trained by SpARC: hga, uniform or videodistill",
    "num_frames": "model frames; 0 = the teacher's frames (A.3)",
    "frames_mismatch": "allow num_frames other than the teacher's (warns)",
    "threshold": "causal-frame threshold t on p_k[a] (0.5: this project's choice; the paper gives none)",
    "w_c": "weight of the consistency loss L_c (1, A.5)",
    "w_s": "weight of the spatial-distillation loss L_s (1, A.5)",
    "mixup_alpha": "alpha of lambda ~ Beta(alpha, beta) (0.1, Table 6)",
    "mixup_beta": "beta of lambda ~ Beta(alpha, beta) (0.1, Table 6)",
    "mixup_prob": "share of batches with Temporal Guided Mixup (0.5: this project's choice; 0 disables)",
}
"""One line per SpARC argument, for ``vqa-train-head --help`` and docs/sparc.md."""


def backbone_of(args: dict[str, Any]) -> Method:
    name = args.get("backbone", DEFAULTS["backbone"])
    if name not in BACKBONES:
        raise UnknownName(f"unknown SpARC backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def clip_len(args: dict[str, Any]) -> int:
    """Frames per SpARC unit: HGA's clip length, 1 for frame-based backbones."""
    return int(args.get("clip_len", 1)) if args.get("backbone") == "hga" else 1


def build(args: dict[str, Any], dims: dict[str, int]) -> nn.Module:
    return backbone_of(args).build(args, dims)


def data(args: dict[str, Any]) -> dict[str, Any]:
    kw = dict(backbone_of(args).data(args))
    if kw.get("patch_frames") == "uniform":  # the guided/single predictions choose among all N frames
        kw["patch_frames"] = "all"
    return kw


def check_args(args: dict[str, Any]) -> None:
    """One-line :class:`UsageError` naming the ``--method-arg`` of an out-of-range value."""
    bad = [("threshold", not 0 <= args["threshold"] < 1, "in [0, 1)"),
           ("w_c", args["w_c"] < 0, ">= 0"), ("w_s", args["w_s"] < 0, ">= 0"),
           ("mixup_prob", not 0 <= args["mixup_prob"] <= 1, "in [0, 1]"),
           ("mixup_alpha", args["mixup_alpha"] <= 0, "> 0"), ("mixup_beta", args["mixup_beta"] <= 0, "> 0"),
           ("num_frames", args["num_frames"] < 0, ">= 0 (0: the teacher's)")]
    for key, wrong, expected in bad:
        if wrong:
            raise UsageError(f"--method-arg {key}={args[key]!r}: expected {expected}")


@dataclass(frozen=True)
class OutsideTopK:
    """Open-ended training questions whose answer the teacher never ranks: ``outside`` of ``total``
    labelled open-ended questions of the split."""

    outside: int
    total: int


def count_outside_topk(store: Any, split: str = "train") -> OutsideTopK:
    """Exact count, before training, over the teacher store's question bundles of ``split``: a
    labelled open-ended question is outside when its answer text is not among the teacher's
    top-k answers (``imageqa_index`` (Q, F, K) into the teacher vocabulary) with a probability
    > 0 on any of its frames (then p_a = 0 on every frame: L_g falls back to all frames)."""
    vocab = store.teacher_vocab()
    root = store.root
    if not vocab or f"questions/{split}" not in root:
        return OutsideTopK(0, 0)
    index_of = {a: i for i, a in enumerate(vocab)}
    outside = total = 0
    for _, group in root[f"questions/{split}"].groups():
        if "imageqa_index" not in group:
            continue
        index = np.asarray(group["imageqa_index"][:], dtype=np.int64)  # (Q, F, K)
        probs = np.asarray(group["imageqa"][:], dtype=np.float32)  # (Q, F, K)
        for row, entry in enumerate(group.attrs.get("entries", [])):
            if entry.get("candidates") or entry.get("answer") in (None, ""):
                continue
            total += 1
            a = index_of.get(str(entry["answer"]), -1)
            outside += not bool(((index[row] == a) & (probs[row] > 0) & (a >= 0)).any())
    return OutsideTopK(outside, total)


def prepare(args: dict[str, Any], stores: Any) -> dict[str, Any]:
    """The teacher's frame count as the model's (A.3), checked; the backbone's own facts."""
    check_args(args)
    backbone = backbone_of(args)
    out = dict(backbone.prepare(args, stores)) if backbone.prepare is not None else {}
    spec = stores.store("imageqa").teacher_spec() if "imageqa" in stores.paths else None
    if spec is None:
        raise MissingTeacher("sparc needs the image-QA teacher's per-frame probabilities; the imageqa store has none")
    if spec.k is not None:  # open-ended teacher: its top-k only
        count = count_outside_topk(stores.store("imageqa"))
        if count.outside:
            warnings.warn(
                f"teacher: {count.outside} of {count.total} open-ended training questions have their answer outside "
                f"the teacher's top-{spec.k} on every frame (p_a = 0: their causal set is every frame); "
                "raise vqa-featurize --imageqa-k to keep more", stacklevel=2)
    if args["num_frames"] == 0:
        out["num_frames"] = spec.frames
    elif args["num_frames"] != spec.frames:
        if not args["frames_mismatch"]:
            raise UsageError(
                f"--method-arg num_frames={args['num_frames']}: the teacher scored {spec.frames} frames per question; "
                "SpARC's model frames are the teacher's (A.3): leave num_frames at 0, or pass "
                "--method-arg frames_mismatch=true to use the nearest teacher frame for each")
        warnings.warn(
            f"sparc: the model reads {args['num_frames']} frames, the teacher scored {spec.frames}; each frame takes "
            "the teacher's nearest frame (frames_mismatch=true)", UserWarning, stacklevel=2)
    return out


# -- the equations ------------------------------------------------------------------------


def causal_set(teacher: Tensor, answer: Tensor, valid: Tensor, threshold: float) -> Tensor:
    """V_c = {f_k : p_k[a] > t} (Sec. 3.2.1); a row without any causal frame keeps all of ``valid``.

    teacher (B, N, C) probabilities, answer (B,) in [0, C), valid (B, N) bool -> (B, N) bool."""
    B, N, _ = teacher.shape
    p_a = teacher.gather(2, answer.view(B, 1, 1).expand(B, N, 1)).squeeze(2)  # (B, N)
    causal = (p_a > threshold) & valid
    return torch.where(causal.any(1, keepdim=True), causal, valid)


def guided_loss(guided: Tensor, target: Tensor) -> Tensor:
    """(eq. L_g) CE(M(V_c, Q), A): guided logits (B, C), target (B, C) probabilities (one-hot, or
    mixed) -> mean over rows of -sum_c y_c log softmax(guided)_c (padded -inf logits with y 0 skipped)."""
    logp = guided.log_softmax(-1)
    return -(target * logp.masked_fill(target == 0, 0.0)).sum(-1).mean()


def consistency_loss(whole: Tensor, guided: Tensor) -> Tensor:
    """(eq. L_c) KL(M(V, Q), M(V_c, Q)) = sum_c P_V,c (log P_V,c - log P_Vc,c), mean over rows.

    whole, guided (B, C) logits (-inf on padded candidates, which have P_V = 0 and are skipped)."""
    logp_whole, logp_guided = whole.log_softmax(-1), guided.log_softmax(-1)
    real = torch.isfinite(logp_whole)
    term = logp_whole.exp() * (logp_whole - logp_guided)
    return term.masked_fill(~real, 0.0).sum(-1).mean()


def spatial_loss(single: Tensor, teacher_j: Tensor) -> Tensor:
    """(eq. L_s) CE(M({f_j}, Q), p_j) = -sum_c p_j,c log softmax(single)_c, mean over rows.

    single (B, C) logits, teacher_j (B, C) the teacher's distribution for frame j (renormalised
    to sum 1 over the classes it covers; a row with no mass contributes 0)."""
    p = teacher_j / teacher_j.sum(-1, keepdim=True).clamp_min(1e-12)
    logp = single.log_softmax(-1)
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1).mean()


def total_loss(l_g: Tensor, l_c: Tensor, l_s: Tensor, w_c: float, w_s: float) -> Tensor:
    """(eq. L_total) L_g + w_c L_c + w_s L_s."""
    return l_g + w_c * l_c + w_s * l_s


# -- Temporal Guided Mixup ----------------------------------------------------------------


@dataclass(frozen=True)
class MixupDraw:
    """One draw of Temporal Guided Mixup: ``lam`` in [0, 1] and the partner ``perm`` (B,) of each row."""

    lam: float
    perm: Tensor


def pair_within_groups(cand_mask: Tensor | None, B: int, generator: torch.Generator | None = None) -> Tensor:
    """A random partner per row among the rows with the same candidate slots (B,) long (a row
    alone in its group is its own partner); cand_mask (B, C) bool or None (open-ended: one group)."""
    perm = torch.arange(B)
    keys = [tuple(r) for r in cand_mask.cpu().tolist()] if cand_mask is not None else [()] * B
    for key in dict.fromkeys(keys):
        rows = torch.tensor([i for i, k in enumerate(keys) if k == key])
        perm[rows] = rows[torch.randperm(len(rows), generator=generator)]
    return perm


def draw_mixup(batch: dict[str, Any], args: dict[str, Any]) -> MixupDraw | None:
    """With probability ``mixup_prob``: lambda ~ Beta(alpha, beta) and a pairing; else None."""
    if args["mixup_prob"] <= 0 or float(torch.rand(())) >= args["mixup_prob"]:
        return None
    lam = float(torch.distributions.Beta(args["mixup_alpha"], args["mixup_beta"]).sample())
    B = batch["answer"].shape[0]
    perm = pair_within_groups(batch.get("cand_mask"), B).to(batch["answer"].device)
    return MixupDraw(lam, perm)


def _mix(x: Tensor, lam: float, perm: Tensor) -> Tensor:
    return lam * x + (1 - lam) * x[perm]


def temporal_guided_mixup(
    batch: dict[str, Any], causal: Tensor, target: Tensor, teacher: Tensor, draw: MixupDraw, unit: int = 1,
) -> tuple[dict[str, Any], Tensor, Tensor]:
    """(A.2) Mix the causal frames, the text, the targets and the teacher with one lambda.

    causal (B, N) bool; target (B, C); teacher (B, N, C); frames of ``cls`` (B, N, E) and
    ``patch`` (B, N, P, W) at positions where ``causal`` and the partner's ``frame_mask`` hold
    are mixed, every other frame is returned bit-identical. ``text`` (B, E), ``text_tokens``
    (B, L, W) (mask: the union) and ``cand`` (B, C, E) are mixed (partners share their
    candidate slots, :func:`pair_within_groups`). Returns (batch, target, teacher)."""
    lam, perm = draw.lam, draw.perm
    B = causal.shape[0]
    where = causal & batch["frame_mask"][perm]  # (B, N)
    mixed = dict(batch)
    for name in ("cls", "patch"):
        if name in batch:
            x = batch[name]  # (B, N, ...)
            m = where.view(B, -1, *([1] * (x.dim() - 2)))
            mixed[name] = torch.where(m, _mix(x, lam, perm), x)
    mixed["text"] = _mix(batch["text"], lam, perm)
    if "text_tokens" in batch:
        mixed["text_tokens"] = _mix(batch["text_tokens"], lam, perm)
        mixed["text_token_mask"] = batch["text_token_mask"] | batch["text_token_mask"][perm]
    if "cand" in batch:
        mixed["cand"] = _mix(batch["cand"], lam, perm)
    return mixed, _mix(target, lam, perm), _mix(teacher, lam, perm)


# -- the training step --------------------------------------------------------------------


@dataclass(frozen=True)
class SparcTerms:
    """One batch's SpARC terms: the losses (scalars), the causal set (B, N) bool, the frame
    drawn for each row j (B,), the mixup draw (or None) and the share of rows whose answer the
    teacher never gives (outside its top-k)."""

    total: Tensor
    l_g: Tensor
    l_c: Tensor
    l_s: Tensor
    causal: Tensor
    j: Tensor
    mixup: MixupDraw | None
    outside_topk: float


def _restrict(batch: dict[str, Any], mask: Tensor) -> dict[str, Any]:
    """The batch with its frames limited to ``mask`` (B, N) bool (for every backbone)."""
    return {**batch, "frame_mask": mask, "patch_mask": mask}


def _units(mask: Tensor, unit: int) -> Tensor:
    """(B, N) frame mask -> (B, U) unit mask (a unit of ``unit`` consecutive frames is real when
    its first frame is)."""
    return mask[:, ::unit]


def _frames(unit_mask: Tensor, unit: int, N: int) -> Tensor:
    """(B, U) unit mask -> (B, N) frame mask (each unit's frames)."""
    return unit_mask.repeat_interleave(unit, 1)[:, :N]


def sparc_terms(
    model: nn.Module, batch: dict[str, Any], args: dict[str, Any], j: Tensor | None = None,
    mixup: MixupDraw | None | bool = True,
) -> SparcTerms:
    """The SpARC losses of a batch whose rows are all labelled.

    ``j`` (B,) the single-frame unit per row (None: drawn uniformly among the real ones);
    ``mixup`` True: drawn by :func:`draw_mixup`, False/None: none, or a given :class:`MixupDraw`."""
    frame_mask = batch["frame_mask"] & batch["patch_mask"] if "patch_mask" in batch else batch["frame_mask"]
    B, N = frame_mask.shape
    unit = clip_len(args)
    valid_u = _units(frame_mask, unit)  # (B, U)
    teacher_u = batch["imageqa"][:, ::unit]  # (B, U, C) each clip's first frame (A.3)
    answer = batch["answer"]
    C = teacher_u.shape[-1]
    outside = float((teacher_u.gather(2, answer.view(B, 1, 1).expand(B, teacher_u.shape[1], 1)).squeeze(2)
                     .masked_fill(~valid_u, 0).amax(1) <= 0).float().mean())
    causal_u = causal_set(teacher_u, answer, valid_u, args["threshold"])  # (B, U)
    causal = _frames(causal_u, unit, N) & frame_mask
    target = F.one_hot(answer, C).to(teacher_u.dtype)  # (B, C)
    draw = draw_mixup(batch, args) if mixup is True else (mixup or None)
    teacher = teacher_u
    if draw is not None:
        batch, target, teacher = temporal_guided_mixup(batch, causal, target, teacher_u, draw)
    whole = model(_restrict(batch, frame_mask))["logits"]  # (B, C)
    guided = model(_restrict(batch, causal))["logits"]
    if j is None:
        j = torch.multinomial(valid_u.float(), 1).squeeze(1)  # (B,) one random real unit each
    single_mask = _frames(F.one_hot(j, valid_u.shape[1]).bool(), unit, N) & frame_mask
    single = model(_restrict(batch, single_mask))["logits"]
    width = guided.shape[1]
    l_g = guided_loss(guided, target[:, :width])
    l_c = consistency_loss(whole, guided)
    l_s = spatial_loss(single, teacher[torch.arange(B), j][:, :width])
    total = total_loss(l_g, l_c, l_s, args["w_c"], args["w_s"])
    return SparcTerms(total, l_g, l_c, l_s, causal, j, draw, outside)


def loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    if "imageqa" not in batch or not bool(batch["has_imageqa"].all()):
        raise MissingTeacher(
            "sparc needs the image-QA teacher's per-frame probabilities (imageqa, imageqa_pts on the "
            "questions); this store has none for some training questions"
        )
    labelled = batch["answer"] >= 0
    if not bool(labelled.any()):  # every term is a mean over labelled rows: over none it is NaN
        return zero_loss(model), {"loss": 0.0, "l_g": 0.0, "l_c": 0.0, "l_s": 0.0}
    batch = {k: (v[labelled] if isinstance(v, Tensor) and v.shape[:1] == labelled.shape else v) for k, v in batch.items()}
    t = sparc_terms(model, batch, args)
    logs = {"loss": float(t.total.detach()), "l_g": float(t.l_g.detach()), "l_c": float(t.l_c.detach()),
            "l_s": float(t.l_s.detach())}
    if "cand" not in batch:  # open-ended: the teacher keeps its top-k answers only
        logs["outside_topk"] = t.outside_topk
    return t.total, logs


METHOD = Method(
    name="sparc", build=build, loss=loss, predict=plain_predict, data=data, prepare=prepare,
    defaults={**videodistill.DEFAULTS, **hga.DEFAULTS, **DEFAULTS},
    optim={"optimizer": "adamw", "lr": 3e-5, "weight_decay": 1e-3, "warmup": 0.1},
)
