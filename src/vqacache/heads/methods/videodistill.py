"""``videodistill`` (Zou et al.): N dense frames' CLS -> L frame sampling blocks -> Gumbel
top-K -> the K frames' patches -> L vision refinement blocks -> answer head.

As in the paper, the question enters only through the LA-Gates (in the sampler and in the
refinement blocks); the answer comes from the question-distilled video vector ``v_cls^*``.
For multiple choice the candidates' text vectors meet the video vector in the
:class:`~vqacache.heads.modules.CandidateScorer` (cosine over a learnable temperature),
never the question. Defaults: N=100, K=16, L=3, 8 heads; AdamW 3e-5, weight decay 1e-3,
linear warm-up (10% of steps) then linear decay to 0.

The straight-through mask multiplies the patch tokens of all N frames
(``select_frames(mask, patch)``), so the sampler's logits get a gradient from every frame;
the dataset therefore reads all N frames' patches (see :mod:`vqacache.heads.data`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vqacache.heads.methods.common import VIDEODISTILL_OPTIM, AnswerHead, Method, plain_loss, plain_predict
from vqacache.heads.modules import FrameSampler, GumbelTopK, VisionRefinement, select_frames

DEFAULTS = {
    "num_frames": 100, "num_select": 16, "num_layers": 3, "num_heads": 8, "dim": 0, "mlp_ratio": 4.0, "tau": 1.0,
}
"""``dim`` 0: the patch width W (CLS vectors are projected to it)."""


class VideoDistillModel(nn.Module):
    """cls (B, N, E), patch (B, N, P, W), text (B, Et) -> logits, selected indices (B, K) and
    ``feature`` (B, D), the question-distilled video vector the answer head reads (SiaSamRea's f)."""

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        dim = args["dim"] or dims["patch_dim"]
        L, H, K = args["num_layers"], args["num_heads"], args["num_select"]
        self.cls_in = nn.Linear(dims["cls_dim"], dim)
        self.patch_in = nn.Linear(dims["patch_dim"], dim) if dim != dims["patch_dim"] else nn.Identity()
        self.sampler = FrameSampler(dim, K, args["num_frames"], L, H, dims["text_dim"], args["mlp_ratio"])
        self.topk = GumbelTopK(args["tau"])
        self.refine = VisionRefinement(dim, K, dims["num_patches"], L, H, dims["text_dim"], args["mlp_ratio"])
        self.head = AnswerHead(dim, dims["text_dim"], dims["num_answers"])

    def forward(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        text, mask = inputs["text"], inputs["frame_mask"]  # (B, Et), (B, N)
        logits = self.sampler(self.cls_in(inputs["cls"]), text, mask)  # (B, K, N)
        index, st_mask = self.topk(logits)  # (B, K), (B, K, N)
        patches = self.patch_in(select_frames(st_mask, inputs["patch"]))  # (B, K, P, D)
        video = self.refine(patches, text)  # (B, D)
        return {"logits": self.head(video, inputs), "index": index, "feature": video}


def data(args: dict[str, Any]) -> dict[str, Any]:
    return {"num_frames": args["num_frames"], "patch_frames": "all"}


METHOD = Method(
    name="videodistill", build=VideoDistillModel, loss=plain_loss, predict=plain_predict, data=data,
    defaults=DEFAULTS, optim=VIDEODISTILL_OPTIM,
)
