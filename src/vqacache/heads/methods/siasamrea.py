"""``siasamrea`` (Yu et al., SiaSamRea): siamese sampling and reasoning around a backbone
(``uniform`` or ``videodistill``, ``backbone`` argument); inference uses the anchor clip alone.

Per training batch, for each question with L valid dense frames (the dataset reads
``dense_frames`` of them, patches of all of them: no extra featurizing):

* siamese sampling (:mod:`~vqacache.heads.modules.siamese_sampling`): an anchor clip of B
  frames at interval I, its start drawn in the first third, and ``siamese_clips`` = N - 1 clips
  at the same interval starting +1, -1, +2, ... frames (``offset_unit=interval``: intervals)
  from it; ``siamese=copies`` uses N copies of the anchor instead (the paper's ablation).
  B is the backbone's frame count: ``num_select`` for ``uniform`` (the K frames it refines:
  the clip is exactly what it sees), ``num_frames`` for ``videodistill`` (its sampler's input,
  from which it selects ``num_select``; keep it well below ``dense_frames``). I is
  floor(2L / (3B)) unless ``interval`` > 0;
* the backbone runs on the anchor clip with gradients and on the siamese clips without
  (``torch.no_grad``; with ``gt_all_clips`` they get gradients for their own L_gt); each
  returns logits and its pooled clip-question feature f (``feature``);
* P = softmax of the N clips' logits and the features f, both detached (as in BAKE);
  A_hat from SKG (eq. 1-2; ``reasoning=average``: 1/(N-1), the "w/ SKR" ablation), soft
  label Q from SKR (eq. 3-5; ``w1``/``w2`` false: the ablations without W1/W2), see
  :mod:`~vqacache.heads.modules.siamese_knowledge`;
* L = alpha * CE(Q, p_anchor) + L_gt (eq. 8, alpha = 1), CE(Q, p) = -sum_k Q_k log p_k.
  L_gt: cross-entropy over the answer vocabulary for open-ended sets (eq. 6); for multiple
  choice the summed pairwise hinge loss of eq. 7 (``mc_loss=hinge``, as the paper trains) or
  cross-entropy (``mc_loss=ce``). L_gt is the anchor's, or the mean over the N clips with
  ``gt_all_clips``. ``siamese_clips=0`` (or ``alpha=0``) trains the backbone alone on anchors.

Evaluation: the anchor clip alone (``eval_anchor``: ``rule``, the training interval with the
start in the middle of the first third, or ``uniform`` over the whole video; see
:func:`~vqacache.heads.modules.siamese_sampling.eval_anchor_clip`). Optimiser: the paper's
AdamW 5e-4, linear warm-up over 10% of the steps then linear decay to 0; weight decay 0.01
(the paper gives none: AdamW's default).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UnknownName
from vqacache.heads.methods import uniform, videodistill
from vqacache.heads.methods.common import Method, answer_loss, gather_frames, plain_predict, soft_cross_entropy
from vqacache.heads.modules.siamese_knowledge import SiameseKnowledgeReasoning, average_affinity, siamese_affinity
from vqacache.heads.modules.siamese_sampling import (
    EVAL_ANCHORS,
    OFFSET_UNITS,
    SIAMESE_MODES,
    eval_anchor_clip,
    siamese_clips,
)


class Backbone(NamedTuple):
    method: Method
    clip_key: str
    """The argument holding the backbone's frame count B."""


BACKBONES = {"uniform": Backbone(uniform.METHOD, "num_select"), "videodistill": Backbone(videodistill.METHOD, "num_frames")}
AFFINITIES = {"skg": siamese_affinity, "average": average_affinity}

DEFAULTS = {
    **videodistill.DEFAULTS,
    "num_frames": 32,
    "backbone": "uniform", "dense_frames": 100, "siamese_clips": 8, "interval": 0, "offset_unit": "frame",
    "siamese": "adjacent", "reasoning": "skg", "skg_temperature": 1.0, "w1": True, "w2": True, "omega": 0.5,
    "alpha": 1.0, "mc_loss": "hinge", "gt_all_clips": False, "eval_anchor": "rule",
}
"""``num_frames``: the ``videodistill`` backbone's clip length B (unused by ``uniform``)."""

OPTIM = {"lr": 5e-4, "weight_decay": 0.01, "warmup": 0.1}


def _lookup(registry: dict, name: str, what: str) -> Any:
    if name not in registry:
        raise UnknownName(f"unknown SiaSamRea {what} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]


def clip_frames(args: dict[str, Any]) -> int:
    """B, the backbone's frame count."""
    return int(args[_lookup(BACKBONES, args["backbone"], "backbone").clip_key])


def pairwise_hinge(scores: Tensor, answer: Tensor, margin: float = 1.0) -> Tensor:
    """scores (Q, C) (``-inf`` on padded candidates), answer (Q,) -> mean over labelled rows of
    the summed hinge over the real negatives; 0 (attached) when no row is labelled."""
    labelled = answer >= 0
    if not labelled.any():
        return scores[labelled].sum()  # () zero
    s, a = scores[labelled], answer[labelled]
    pos = s.gather(1, a[:, None])  # (Q', 1)
    negative = torch.isfinite(s) & ~F.one_hot(a, s.shape[1]).bool()  # (Q', C)
    s = torch.where(negative, s, pos)  # no infinities reach the arithmetic
    terms = (margin - (pos - s)).clamp_min(0)  # eq. 7: max(0, 1 - (s+ - s-)), (Q', C)
    return torch.where(negative, terms, torch.zeros_like(terms)).sum(1).mean()


MC_LOSSES = {"hinge": pairwise_hinge, "ce": answer_loss}


class SiaSamReaModel(nn.Module):
    """The backbone and SKR's weights; ``forward`` is the evaluation anchor's prediction.

    ``forward(batch)`` -> ``logits`` (Q, C), ``feature`` (Q, D), ``index`` (Q, B) (the anchor's
    positions among the dense frames); :meth:`clips` runs the backbone on given clips.
    """

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        self.backbone = _lookup(BACKBONES, args["backbone"], "backbone").method.build(args, dims)
        self.clip_frames = clip_frames(args)
        self.interval, self.eval_anchor = args["interval"], args["eval_anchor"]
        self.open_ended = dims["num_answers"] > 0
        self.skr = SiameseKnowledgeReasoning(1 + args["siamese_clips"], args["omega"], args["w1"], args["w2"])

    def clips(self, batch: dict[str, Any], index: Tensor) -> dict[str, Tensor]:
        """index (Q, M, B) positions among each question's dense frames -> the backbone's outputs
        on the Q*M clips, each reshaped to (Q, M, ...)."""
        Q, M, B = index.shape
        flat = index.reshape(Q, M * B)
        inputs: dict[str, Any] = {
            "cls": gather_frames(batch["cls"], flat).reshape(Q * M, B, -1),  # (QM, B, E)
            "patch": gather_frames(batch["patch"], flat).reshape(Q * M, B, *batch["patch"].shape[2:]),  # (QM, B, P, W)
            "text": batch["text"].repeat_interleave(M, 0),  # (QM, Et)
        }
        inputs["frame_mask"] = inputs["patch_mask"] = torch.ones(Q * M, B, dtype=torch.bool, device=index.device)
        for name in ("cand", "cand_mask"):
            if name in batch:
                inputs[name] = batch[name].repeat_interleave(M, 0)
        out = self.backbone(inputs)
        return {"logits": out["logits"].reshape(Q, M, -1), "feature": out["feature"].reshape(Q, M, -1)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        lengths = batch["frame_mask"].sum(1)  # (Q,)
        index = eval_anchor_clip(lengths, self.clip_frames, self.interval, self.eval_anchor)  # (Q, B)
        out = self.clips(batch, index[:, None])
        return {"logits": out["logits"][:, 0], "feature": out["feature"][:, 0], "index": index}


CHOICES = (
    (AFFINITIES, "reasoning"), (MC_LOSSES, "mc_loss"), (SIAMESE_MODES, "siamese"), (OFFSET_UNITS, "offset_unit"),
    (EVAL_ANCHORS, "eval_anchor"),
)
"""(registry, argument): every named choice, checked when the model is built (before training)."""


def build(args: dict[str, Any], dims: dict[str, int]) -> nn.Module:
    for registry, key in CHOICES:
        _lookup(registry, args[key], key)
    return SiaSamReaModel(args, dims)


def data(args: dict[str, Any]) -> dict[str, Any]:
    return {"num_frames": args["dense_frames"], "patch_frames": "all"}


def _gt_loss(model: SiaSamReaModel, logits: Tensor, answer: Tensor, args: dict[str, Any]) -> Tensor:
    return answer_loss(logits, answer) if model.open_ended else MC_LOSSES[args["mc_loss"]](logits, answer)


def loss(model: nn.Module, batch: dict[str, Any], args: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
    lengths = batch["frame_mask"].sum(1)  # (Q,)
    index = siamese_clips(lengths, model.clip_frames, args["siamese_clips"], args["interval"], args["offset_unit"],
                          args["siamese"])  # (Q, N, B), clip 0 the anchor
    anchor = model.clips(batch, index[:, :1])
    logits, feats = anchor["logits"], anchor["feature"]  # (Q, 1, C), (Q, 1, D)
    if index.shape[1] > 1:
        with torch.set_grad_enabled(torch.is_grad_enabled() and args["gt_all_clips"]):
            siamese = model.clips(batch, index[:, 1:])
        logits, feats = torch.cat([logits, siamese["logits"]], 1), torch.cat([feats, siamese["feature"]], 1)
    Q, N, C = logits.shape
    answer = batch["answer"]
    if args["gt_all_clips"]:
        l_gt = _gt_loss(model, logits.reshape(Q * N, C), answer.repeat_interleave(N), args)
    else:
        l_gt = _gt_loss(model, logits[:, 0], answer, args)
    logs = {"l_gt": float(l_gt.detach())}
    total = l_gt
    if N > 1 and args["alpha"] > 0:
        probs = logits.detach().float().softmax(-1)  # (Q, N, C) P, detached
        affinity = AFFINITIES[args["reasoning"]](feats.detach().float(), args["skg_temperature"])  # (Q, N, N)
        target = model.skr(affinity, probs)  # (Q, C)
        l_siamese = soft_cross_entropy(logits[:, 0], target)
        total = args["alpha"] * l_siamese + l_gt  # eq. 8
        logs["l_siamese"] = float(l_siamese.detach())
    logs["loss"] = float(total.detach())
    return total, logs


METHOD = Method(
    name="siasamrea", build=build, loss=loss, predict=plain_predict, data=data, defaults=DEFAULTS, optim=OPTIM,
)
