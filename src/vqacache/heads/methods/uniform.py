"""``uniform``: K frames uniformly spread over the question's frames -> the same vision
refinement blocks and answer head as VideoDistill, without any frame selection.

The baseline VideoDistill's frame sampler is measured against: same refinement (LA-Gates +
divided space-time attention over the K frames' patches), same answer head, same optimizer
(VideoDistill's Table 4 (b)); ``refinement=false`` is Table 4 (a).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vqacache.heads.methods.common import VIDEODISTILL_OPTIM, AnswerHead, Method, gather_frames, plain_loss, plain_predict, uniform_choice
from vqacache.heads.modules import VisionRefinement
from vqacache.heads.modules.vision_refinement import FusionTransformer

DEFAULTS = {"num_frames": 100, "num_select": 16, "num_layers": 3, "num_heads": 8, "dim": 0, "mlp_ratio": 4.0}
"""``dim`` 0: the patch width W (no projection). Shared with SpARC and SiaSamRea's backbones."""
OWN = {"refinement": True}
"""``refinement=false``: VideoDistill's Table 4 (a), a plain transformer fusing text and the K
frames' patches (:class:`~vqacache.heads.modules.vision_refinement.FusionTransformer`)."""


class UniformModel(nn.Module):
    """patch (B, N', P, W) + patch_mask -> K uniform frames -> refinement -> logits.

    ``patch_mask`` marks the frames it may choose from (SpARC narrows it to causal frames).
    Outputs ``logits`` (B, C), ``index`` (B, K) and ``feature`` (B, D), the pooled
    clip-question vector the answer head reads (SiaSamRea's f).
    """

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        dim = args["dim"] or dims["patch_dim"]
        self.k = args["num_select"]
        self.patch_in = nn.Linear(dims["patch_dim"], dim) if dim != dims["patch_dim"] else nn.Identity()
        block_args = (dim, self.k, dims["num_patches"], args["num_layers"], args["num_heads"], dims["text_dim"],
                      args["mlp_ratio"])
        self.refine = VisionRefinement(*block_args) if args.get("refinement", True) else FusionTransformer(*block_args)
        self.head = AnswerHead(dim, dims["text_dim"], dims["num_answers"])

    def forward(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        index = uniform_choice(inputs["patch_mask"], self.k)  # (B, K)
        patches = self.patch_in(gather_frames(inputs["patch"], index))  # (B, K, P, D)
        video = self.refine(patches, inputs["text"])  # (B, D)
        return {"logits": self.head(video, inputs), "index": index, "feature": video}


def data(args: dict[str, Any]) -> dict[str, Any]:
    return {"num_frames": args["num_frames"], "patch_frames": "uniform", "num_patch_frames": args["num_select"]}


METHOD = Method(
    name="uniform", build=UniformModel, loss=plain_loss, predict=plain_predict, data=data,
    defaults={**DEFAULTS, **OWN}, optim=VIDEODISTILL_OPTIM,
)
