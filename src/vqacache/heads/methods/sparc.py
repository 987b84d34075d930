"""``sparc`` (SpARC): training around a backbone (``uniform`` or ``videodistill``) with an
image-QA teacher's per-frame answer probabilities ``imageqa`` (B, N, C).

Per batch, with the correct answer a and threshold t:

* causal frames ``V_c = {k : p_k[a] > t}`` (a question without any uses all its frames);
* guided prediction ``M(V_c, Q)``: the backbone restricted to the causal frames (its frame
  mask narrowed, so ``uniform`` spreads its K frames over V_c and ``videodistill``'s
  sampler can only pick from V_c); ``L_g`` = cross-entropy to the answer;
* consistency ``L_c = KL(M(V_c, Q) || M(V, Q))`` between the guided and the whole-video
  prediction (both with gradients);
* spatial distillation ``L_s = KL(p_j || M({f_j}, Q))`` with j one random real frame per
  question and p_j the teacher's distribution for that frame;
* ``L = L_g + w_c L_c + w_s L_s`` (w_c = w_s = 1).
* Temporal Guided Mixup (appendix A.2), with probability ``mixup_prob`` per batch:
  ``lambda ~ Beta(alpha, beta)`` and a permutation pi of the batch; only the causal frames
  of each video are mixed, ``f_k <- lambda f_k + (1 - lambda) f'_k`` with f' the same frame
  position of video pi(i), the question (and the candidates' text) are mixed with the same
  lambda, and the targets become ``lambda y_i + (1 - lambda) y_pi(i)`` (the teacher's
  distributions likewise). Non-causal frames stay intact.

Only the whole-video prediction is used at inference (``predict`` is the backbone's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UnknownName
from vqacache.heads.data import MissingTeacher
from vqacache.heads.methods import uniform, videodistill
from vqacache.heads.methods.common import Method, plain_predict, soft_cross_entropy, zero_loss

BACKBONES = {"uniform": uniform.METHOD, "videodistill": videodistill.METHOD}
DEFAULTS = {
    "backbone": "videodistill", "threshold": 0.5, "w_c": 1.0, "w_s": 1.0,
    "mixup_alpha": 0.1, "mixup_beta": 0.1, "mixup_prob": 0.5,
}


def backbone_of(args: dict[str, Any]) -> Method:
    name = args.get("backbone", DEFAULTS["backbone"])
    if name not in BACKBONES:
        raise UnknownName(f"unknown SpARC backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build(args: dict[str, Any], dims: dict[str, int]) -> nn.Module:
    return backbone_of(args).build(args, dims)


def data(args: dict[str, Any]) -> dict[str, Any]:
    return {"num_frames": args["num_frames"], "patch_frames": "all"}


def _restrict(batch: dict[str, Any], mask: Tensor) -> dict[str, Any]:
    """The batch with its frames limited to ``mask`` (B, N) bool (for both backbones)."""
    return {**batch, "frame_mask": mask, "patch_mask": mask}


def _kl(target: Tensor, logits: Tensor) -> Tensor:
    """KL(target || softmax(logits)) per row, mean; target (B, C) probabilities."""
    logp = logits.log_softmax(-1)
    t = target.clamp_min(0)
    return (t * (t.clamp_min(1e-12).log() - logp.masked_fill(t == 0, 0.0))).sum(-1).mean()


def _mixup(batch: dict[str, Any], causal: Tensor, target: Tensor, teacher: Tensor, args: dict[str, Any]):
    """Temporal Guided Mixup of causal frames; returns (batch, target, teacher) mixed."""
    B = causal.shape[0]
    lam = float(torch.distributions.Beta(args["mixup_alpha"], args["mixup_beta"]).sample())
    perm = torch.randperm(B, device=causal.device)
    mixed = dict(batch)
    for name in ("cls", "patch"):
        x = batch[name]  # (B, N, ...)
        m = causal.view(B, -1, *([1] * (x.dim() - 2)))
        mixed[name] = torch.where(m, lam * x + (1 - lam) * x[perm], x)
    mixed["text"] = lam * batch["text"] + (1 - lam) * batch["text"][perm]
    if "cand" in batch:
        mixed["cand"] = lam * batch["cand"] + (1 - lam) * batch["cand"][perm]
        mixed["cand_mask"] = batch["cand_mask"] & batch["cand_mask"][perm]
    return mixed, lam * target + (1 - lam) * target[perm], lam * teacher + (1 - lam) * teacher[perm]


def loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    if "imageqa" not in batch or not bool(batch["has_imageqa"].all()):
        raise MissingTeacher(
            "sparc needs the image-QA teacher's per-frame probabilities (imageqa, imageqa_pts on the "
            "questions); this store has none for some training questions"
        )
    labelled = batch["answer"] >= 0
    if not bool(labelled.any()):  # every term is a mean over labelled rows: over none it is NaN
        zero = zero_loss(model)
        return zero, {"loss": 0.0, "l_g": 0.0, "l_c": 0.0, "l_s": 0.0}
    batch = {k: (v[labelled] if isinstance(v, Tensor) and v.shape[:1] == labelled.shape else v) for k, v in batch.items()}
    frame_mask = batch["frame_mask"]  # (B, N)
    B, N = frame_mask.shape
    teacher = batch["imageqa"]  # (B, N, C)
    C = teacher.shape[-1]
    answer = batch["answer"]
    p_correct = teacher.gather(2, answer.view(B, 1, 1).expand(B, N, 1)).squeeze(2)  # (B, N)
    causal = (p_correct > args["threshold"]) & frame_mask  # (B, N)
    causal = torch.where(causal.any(1, keepdim=True), causal, frame_mask)
    target = F.one_hot(answer, C).float()  # (B, C)
    if args["mixup_prob"] > 0 and torch.rand(()) < args["mixup_prob"]:
        batch, target, teacher = _mixup(batch, causal, target, teacher, args)

    whole = model(batch)["logits"]  # (B, C)
    guided = model(_restrict(batch, causal))["logits"]
    j = torch.multinomial(frame_mask.float(), 1).squeeze(1)  # (B,) one random real frame each
    single_mask = F.one_hot(j, N).bool()
    single = model(_restrict(batch, single_mask))["logits"]
    p_j = teacher[torch.arange(B), j]  # (B, C)
    p_j = p_j / p_j.sum(-1, keepdim=True).clamp_min(1e-12)

    target = target[:, : guided.shape[1]]
    l_g = soft_cross_entropy(guided, target)
    l_c = _kl(guided.softmax(-1), whole)
    l_s = _kl(p_j[:, : single.shape[1]], single)
    total = l_g + args["w_c"] * l_c + args["w_s"] * l_s
    logs = {"loss": float(total.detach()), "l_g": float(l_g.detach()), "l_c": float(l_c.detach()), "l_s": float(l_s.detach())}
    return total, logs


METHOD = Method(
    name="sparc", build=build, loss=loss, predict=plain_predict, data=data,
    defaults={**videodistill.DEFAULTS, **DEFAULTS}, optim={"lr": 3e-5, "weight_decay": 1e-3, "warmup": 0.1},
)
