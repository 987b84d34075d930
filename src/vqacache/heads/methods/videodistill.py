"""``videodistill`` (Zou et al.): N dense frames' CLS -> L frame sampling blocks -> Gumbel
top-K -> the K frames' patches -> L vision refinement blocks -> answer head.

As in the paper, the question enters only through the LA-Gates (in the sampler and in the
refinement blocks); the answer comes from the question-distilled video vector ``v_cls^*``.
Defaults follow the paper: N=100, K=16, L=3, 8 heads, D=1024 (``dim``; 0 takes the patch width
W); AdamW 3e-5, weight decay 1e-3, linear warm-up (10% of steps) then linear decay to 0.

**Multiple choice** (``mc_head``): ``vtm`` (default, the paper's): each candidate is a
"question + answer" sentence (:class:`~vqacache.heads.modules.answer_heads.QuestionAnswerPair`
of the cached question and candidate vectors: the paper encodes the joined sentence, the
store caches them apart), the whole model runs once per candidate (batched as B x C
sequences: sampler, top-K and refinement all read that candidate's sentence) and the VTM
head's matching log-odds is the candidate's logit; trained with cross-entropy over the
candidates. C times the compute of one pass. ``cosine``: one pass with the question, the
candidates' vectors meet the video vector by cosine
(:class:`~vqacache.heads.modules.CandidateScorer`). Open-ended: the two-layer MLP classifier.

**Table 4 ablations** (method arguments): ``sampling=soft`` (c): the weighted sum of the N
frames by eq. (4)'s softmax (Gumbel noise in training, none in evaluation) instead of the
top-K; ``refinement=false`` (d): a plain L-layer transformer fuses the text vector and the K
frames' patches (:class:`~vqacache.heads.modules.vision_refinement.FusionTransformer`);
``fusion=cross_attention`` (e): cross-attention replaces every LA-Gate
(:class:`~vqacache.heads.modules.la_gate.CrossAttentionFusion`); (a)/(b) are the ``uniform``
method. ``benchmarks/videodistill_ablations.py`` runs the rows on the synthetic set.

**Text** (``text_tower``): ``cached`` (default, fast): the store's sentence vectors of the
question and candidates, frozen. ``trainable`` (the paper: "parameters in the text encoder
are updated ... during finetuning"): the open_clip text tower the store was made with is
rebuilt from the text store's spec (:mod:`vqacache.heads.modules.text_tower`; ``--weights
PATH`` names its checkpoint when it is not random and not in the local cache), encodes the
question and candidate strings of each batch (each distinct string once) and is fine-tuned
at ``lr * text_lr_scale`` (default 1: the paper gives one learning rate). Its vectors replace
the cached ones everywhere the model reads text (sampler, refinement, both heads); at step 0
they equal them. Costs a text-tower pass over the batch's strings per step and the tower's
weights in every checkpoint (63M parameters for ViT-B/16's).

The straight-through mask reads the patch tokens of all N frames (``select_frames``: a
gather forward, the gradient of ``mask @ patches`` backward), so the sampler's logits get a
gradient from every frame; the dataset therefore reads all N frames' patches (see
:mod:`vqacache.heads.data`). SpARC and SiaSamRea build this model with their own arguments;
an argument they do not set keeps the behaviour it had before it existed (cosine head, hard
sampling, refinement, LA-Gates).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.methods.common import VIDEODISTILL_OPTIM, AnswerHead, Method, plain_loss, plain_predict
from vqacache.heads.modules import FrameSampler, GumbelTopK, VisionRefinement, select_frames
from vqacache.heads.modules.answer_heads import QuestionAnswerPair, VideoTextMatching
from vqacache.heads.modules.la_gate import FUSIONS
from vqacache.heads.modules.text_tower import ClipTextTower, text_tower_identity
from vqacache.heads.modules.vision_refinement import FusionTransformer

DEFAULTS = {
    "num_frames": 100, "num_select": 16, "num_layers": 3, "num_heads": 8, "dim": 0, "mlp_ratio": 4.0, "tau": 1.0,
}
"""The model arguments SpARC and SiaSamRea share (``dim`` 0: the patch width W)."""
PAPER = {"dim": 1024, "mc_head": "vtm", "sampling": "hard", "refinement": True, "fusion": "la_gate",
         "text_tower": "cached", "text_lr_scale": 1.0, "weights": ""}
"""``videodistill``'s own defaults on top of :data:`DEFAULTS`: the paper's width and head, the ablation
switches, and the text (``weights``: the trainable text tower's checkpoint when it is not random or cached)."""
MC_HEADS = ("cosine", "vtm")
SAMPLINGS = ("hard", "soft")
TEXT_TOWERS = ("cached", "trainable")


def check_args(args: dict[str, Any]) -> None:
    """One line naming the argument and its valid values."""
    for key, valid in (("mc_head", MC_HEADS), ("sampling", SAMPLINGS), ("fusion", tuple(sorted(FUSIONS))),
                       ("text_tower", TEXT_TOWERS)):
        if args.get(key, valid[0]) not in valid:
            raise UsageError(f"--method-arg {key}={args[key]!r}: valid: {', '.join(valid)}")
    if args.get("weights") and args.get("text_tower", "cached") != "trainable":
        raise UsageError("--weights is for videodistill's --method-arg text_tower=trainable (the text tower's checkpoint)")
    if not float(args.get("text_lr_scale", 1.0)) > 0:
        raise UsageError(f"--method-arg text_lr_scale={args['text_lr_scale']}: must be positive")


def prepare(args: dict[str, Any], stores: Any) -> dict[str, Any]:
    """The trainable text tower's identity, from the text store's spec (refused here, before training,
    when it cannot be rebuilt offline)."""
    if args.get("text_tower", "cached") != "trainable":
        return {}
    return {"text_tower_identity": text_tower_identity(stores.store("text").spec, args.get("weights", ""))}


class VideoDistillModel(nn.Module):
    """cls (B, N, E), patch (B, N, P, W), text (B, Et) [, cand (B, C, Et)] -> ``logits`` (B, C
    or A), ``index`` (B, K) the selected frames (with VTM: those of the best-scoring candidate's
    pass; all in ``index_per_candidate`` (B, C, K)), ``feature``: the video vector the head
    reads, (B, D) (with VTM one per candidate, (B, C, D))."""

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        check_args(args)
        dim = args["dim"] or dims["patch_dim"]
        L, H, K, Et, P = args["num_layers"], args["num_heads"], args["num_select"], dims["text_dim"], dims["num_patches"]
        fusion = args.get("fusion", "la_gate")
        self.soft = args.get("sampling", "hard") == "soft"
        self.cls_in = nn.Linear(dims["cls_dim"], dim)
        self.patch_in = nn.Linear(dims["patch_dim"], dim) if dim != dims["patch_dim"] else nn.Identity()
        self.sampler = FrameSampler(dim, K, args["num_frames"], L, H, Et, args["mlp_ratio"], fusion)
        self.topk = GumbelTopK(args["tau"])
        if args.get("refinement", True):
            self.refine: nn.Module = VisionRefinement(dim, K, P, L, H, Et, args["mlp_ratio"], fusion)
        else:
            self.refine = FusionTransformer(dim, K, P, L, H, Et, args["mlp_ratio"])
        self.vtm = dims["num_answers"] == 0 and args.get("mc_head", "cosine") == "vtm"
        trainable = args.get("text_tower", "cached") == "trainable"
        self.text_tower = ClipTextTower(args["text_tower_identity"]) if trainable else None
        self.text_lr_scale = float(args.get("text_lr_scale", 1.0))
        if self.vtm:
            self.pair = QuestionAnswerPair(Et)
            self.head: nn.Module = VideoTextMatching(dim)
        else:
            self.head = AnswerHead(dim, Et, dims["num_answers"])

    def select(self, logits: Tensor, patch: Tensor, copies: int = 1) -> tuple[Tensor, Tensor]:
        """logits (B*copies, K, N), patch (B, N, P, W) -> (patches (B*copies, K, P, W), index (B*copies, K)).

        ``copies`` > 1 (VTM): row b*copies + c selects from video b's patches, never copied."""
        BC, K, N = logits.shape
        if self.soft:  # Table 4 (c): eq. (4)'s weights, no top-K
            weights = self.topk.soft(logits)  # (BC, K, N)
            index = weights.argmax(-1)
            w = weights.reshape(-1, copies * K, N)  # (B, copies*K, N)
            picked = (w @ patch.flatten(2)).reshape(BC, K, *patch.shape[2:])
            return picked, index
        index, st_mask = self.topk(logits)  # (BC, K), (BC, K, N)
        picked = select_frames(st_mask.reshape(-1, copies * K, N), patch, index.reshape(-1, copies * K))
        return picked.reshape(BC, K, *patch.shape[2:]), index

    def lr_scale(self, name: str) -> float:
        """Learning-rate multiplier of parameter ``name``: ``text_lr_scale`` for the text tower's."""
        return self.text_lr_scale if name.startswith("text_tower.") else 1.0

    def encode_text(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` with ``text`` (B, Et) and ``cand`` (B, C, Et) from the trainable tower
        (``question`` and ``candidates`` strings; padded candidates zero), each distinct string
        encoded once; unchanged with the cached text."""
        if self.text_tower is None:
            return inputs
        questions, candidates = inputs["question"], inputs["candidates"]
        strings = list(dict.fromkeys([*questions, *(c for cs in candidates for c in cs)]))
        row = {t: i for i, t in enumerate(strings)}
        emb = self.text_tower(strings)  # (S, Et)
        out = {**inputs, "text": emb[[row[q] for q in questions]]}  # (B, Et)
        if "cand" in inputs:
            B, C = inputs["cand"].shape[:2]
            index = torch.tensor([[row[c] for c in cs] + [-1] * (C - len(cs)) for cs in candidates],
                                 device=emb.device)  # (B, C), -1: padding
            cand = emb[index.clamp(min=0)] * (index >= 0).unsqueeze(-1)  # (B, C, Et)
            out["cand"] = cand
        return out

    def forward(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        inputs = self.encode_text(inputs)
        text, mask, patch = inputs["text"], inputs["frame_mask"], inputs["patch"]  # (B, Et), (B, N), (B, N, P, W)
        frames = self.cls_in(inputs["cls"])  # (B, N, D)
        if not self.vtm:
            picked, index = self.select(self.sampler(frames, text, mask), patch)  # sampler logits (B, K, N)
            video = self.refine(self.patch_in(picked), text)  # (B, D)
            return {"logits": self.head(video, inputs), "index": index, "feature": video}
        B, C = inputs["cand"].shape[:2]
        sentences = self.pair(text, inputs["cand"]).flatten(0, 1)  # (B*C, Et): one pass per candidate
        logits = self.sampler(frames.repeat_interleave(C, 0), sentences, mask.repeat_interleave(C, 0))  # (B*C, K, N)
        picked, index = self.select(logits, patch, copies=C)  # (B*C, K, P, W), (B*C, K)
        video = self.refine(self.patch_in(picked), sentences).view(B, C, -1)  # (B, C, D)
        scores = self.head(video, inputs["cand_mask"])  # (B, C)
        per_candidate = index.view(B, C, -1)  # (B, C, K)
        chosen = per_candidate[torch.arange(B, device=scores.device), scores.argmax(-1)]  # (B, K)
        return {"logits": scores, "index": chosen, "index_per_candidate": per_candidate, "feature": video}


def data(args: dict[str, Any]) -> dict[str, Any]:
    strings = {"text": "strings"} if args.get("text_tower", "cached") == "trainable" else {}
    return {"num_frames": args["num_frames"], "patch_frames": "all", **strings}


METHOD = Method(
    name="videodistill", build=VideoDistillModel, loss=plain_loss, predict=plain_predict, data=data,
    defaults={**DEFAULTS, **PAPER}, optim=VIDEODISTILL_OPTIM, check=check_args, prepare=prepare,
)
