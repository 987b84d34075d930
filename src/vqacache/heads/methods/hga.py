"""``hga`` (Jiang and Han, AAAI 2020, as released with NExT-QA): per-clip appearance vectors and
the question's tokens -> two bidirectional GRUs -> co-attention -> a heterogeneous graph over
question and clip nodes (learned adjacency, graph convolutions, attention pooling) -> a local
vector; a global vector from the two GRUs' last states; a bilinear fusion of both scores each
candidate (multiple choice) or feeds a classifier over the answer vocabulary (open-ended).

**Inputs from a vqacache store.** The clips are the store's per-frame CLIP CLS vectors: the
question's ``num_frames`` frames (the shared selection rule) grouped, ``clip_len`` consecutive
frames each, into ``num_frames / clip_len`` clips by a masked mean (clip_len 1: one frame per
clip, as SpARC's A.3 asks for frame-based features; Table 6: 16 frames on NExT-QA). The
released NExT-QA ``app_mot`` features (what SpARC's Table 1 used) come in through ``vqa-cache
import FILE --layout nextqa`` (docs/hdf5.md): the store's ``cls`` is then the file's ``feat``, 16
clips of ResNet-101 appearance (``[:2048]``) followed by ResNeXt-101 motion (``[2048:]``). The
release's HGA reads the two halves concatenated as one 4096-d clip vector (``EncoderVidHGA`` with
``vid_dim = 2048 + 2048``), and so does this model; ``motion_split`` (found by :func:`prepare`)
only makes ``input_norm`` standardise the appearance and the motion half each on its own, so
neither drowns the other. Use ``clip_len`` 1 and ``num_frames`` 16 there (one slot per clip).

**The question.** The release encodes each candidate as the BERT tokens of "question [SEP]
answer" (one pass per candidate). Here the sequence is the question's sentence vector, its
token states (``text_tokens`` of the store; ``question_tokens=false`` leaves them out) and the
candidate's sentence vector, each projected to the hidden width (their widths differ), read
by one GRU; open-ended questions have no candidate and the fused vector feeds a classifier.

Frames restricted by ``frame_mask`` (SpARC's guided and single-frame predictions) drop their
clips: a clip is real when any of its frames is, and only real clips enter the GRU (in order).

``appearance=cls+patch`` adds each frame's mean patch token to its CLS vector (the diagnostic's
synthetic store keeps a frame's content in its patches only).

**Input scale.** The release feeds ResNet/ResNeXt clip features and BERT token states, whose
entries are of order 1; a store's vectors come at any scale (the diagnostic's synthetic vectors
are unit-norm, 0.18 an entry in 32 dimensions). At that scale every projection, GRU state and
bilinear product starts near zero and the loss stays at log(C) for tens of epochs (measured: 40
synthetic questions, 40 epochs: 40% training accuracy raw, 72.5% standardised; docs/sparc.md).
So each input vector is standardised over its features first (``input_norm``, on by default;
this project's choice, not in the release).

Defaults the paper does not give (this project's choices): ``hga_hidden`` 256,
``hga_dropout`` 0.2, ``fusion_rank`` 256, ``gcn_layers`` 3 (the release's ``GCN(num_layers=2)``
builds three convolutions), one co-attention layer. Optimiser: Adam, lr 1e-4 (SpARC Table 6).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.methods.common import Method, plain_loss, plain_predict
from vqacache.heads.modules.hga import (
    AdjacencyLearner, AttentionPool, BilinearFusion, CoAttention, GraphConvolution, SequenceEncoder,
)

DEFAULTS = {
    "num_frames": 16, "clip_len": 1, "hga_hidden": 256, "hga_dropout": 0.2, "fusion_rank": 256,
    "gcn_layers": 3, "coattn_layers": 1, "question_tokens": True, "token_dim": 0, "appearance": "cls",
    "input_norm": True, "motion_split": -1,
}
"""``token_dim``: the store's token width, recorded by :func:`prepare` (0: no tokens read).
``appearance``: what a frame contributes to its clip: ``cls`` (the CLS vector; real stores) or
``cls+patch`` (the CLS vector beside the mean of the frame's patch tokens; the synthetic store
of the diagnostic, whose CLS vectors carry only the marker and whose patches carry the content).
``input_norm``: standardise every input vector (each frame's CLS and patch vectors, the sentence,
token and candidate vectors) over its features (a LayerNorm without parameters) before the first
projection (this project's choice, see the module docstring; false: the release's raw inputs).
``motion_split``: where a frame vector's motion half starts (the appearance half is before it);
-1 (default): found by :func:`prepare` (2048 for a store imported from NExT-QA's ``app_mot``
file, D = 4096; else 0); 0: one stream."""

APPEARANCE = ("cls", "cls+patch")

OPTIM = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "warmup": 0.0}


def group_clips(cls: Tensor, mask: Tensor, clip_len: int) -> tuple[Tensor, Tensor]:
    """cls (B, N, E), mask (B, N) -> clips (B, T, E) (masked mean of clip_len consecutive frames),
    clip mask (B, T) (any real frame), T = ceil(N / clip_len)."""
    B, N, E = cls.shape
    T = -(-N // clip_len)
    pad = T * clip_len - N
    if pad:
        cls = torch.cat([cls, cls.new_zeros(B, pad, E)], 1)
        mask = torch.cat([mask, mask.new_zeros(B, pad)], 1)
    w = mask.view(B, T, clip_len, 1).to(cls.dtype)
    total = (cls.view(B, T, clip_len, E) * w).sum(2)
    count = w.sum(2)
    return total / count.clamp_min(1.0), count.squeeze(-1) > 0


class HGAModel(nn.Module):
    """cls (B, N, E) + frame_mask, text (B, Et), optional text_tokens (B, L, W) + mask, cand
    (B, C, Et) + cand_mask -> ``logits`` (B, C) (-inf on padded candidates) or (B, A)."""

    def __init__(self, args: dict[str, Any], dims: dict[str, int]) -> None:
        super().__init__()
        H, p = args["hga_hidden"], args["hga_dropout"]
        self.clip_len = args["clip_len"]
        self.open_ended = dims["num_answers"] > 0
        self.use_tokens = bool(args["question_tokens"]) and args["token_dim"] > 0
        if args["appearance"] not in APPEARANCE:
            raise UsageError(f"--method-arg appearance={args['appearance']!r}: expected one of {', '.join(APPEARANCE)}")
        self.with_patch = args["appearance"] == "cls+patch"
        self.input_norm = bool(args["input_norm"])
        self.motion_split = int(args["motion_split"])
        self.video = SequenceEncoder(dims["cls_dim"] + (dims["patch_dim"] if self.with_patch else 0), H, p)
        self.sent_in = nn.Linear(dims["text_dim"], H)
        self.tok_in = nn.Linear(args["token_dim"], H) if self.use_tokens else None
        self.cand_in = nn.Linear(dims["text_dim"], H)
        self.question = SequenceEncoder(H, H, p)
        self.coattn = nn.ModuleList(CoAttention(H) for _ in range(args["coattn_layers"]))
        self.adjacency = AdjacencyLearner(H)
        self.gcn = GraphConvolution(H, args["gcn_layers"], p)
        self.pool = AttentionPool(H)
        self.global_fusion = BilinearFusion(H, H, H, args["fusion_rank"], p)
        self.fusion = BilinearFusion(H, H, H if self.open_ended else 1, args["fusion_rank"], 0.0)
        self.classifier = nn.Linear(H, dims["num_answers"]) if self.open_ended else None

    def _norm(self, x: Tensor) -> Tensor:
        """x (..., D) standardised over D when ``input_norm`` (see the module docstring)."""
        return F.layer_norm(x, x.shape[-1:]) if self.input_norm else x

    def _frames(self, cls: Tensor) -> Tensor:
        """cls (B, N, E) -> the frame vectors (B, N, E): appearance and motion halves (split at
        ``motion_split``) standardised each on its own, then concatenated back."""
        k = self.motion_split
        if k <= 0 or not self.input_norm:
            return self._norm(cls)
        if cls.shape[-1] <= k:
            raise UsageError(f"--method-arg motion_split={k}: the frame vectors are only {cls.shape[-1]} wide")
        return torch.cat([self._norm(cls[..., :k]), self._norm(cls[..., k:])], -1)

    def _question_parts(self, inputs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The question's nodes before the GRU: (B, 1 + L, H) and their mask (B, 1 + L)."""
        sent = self.sent_in(self._norm(inputs["text"])).unsqueeze(1)  # (B, 1, H)
        mask = torch.ones(sent.shape[:2], dtype=torch.bool, device=sent.device)
        if self.use_tokens:
            if "text_tokens" not in inputs:
                raise UsageError("hga reads the question's token states (text_tokens); this batch has none")
            sent = torch.cat([sent, self.tok_in(self._norm(inputs["text_tokens"]))], 1)
            mask = torch.cat([mask, inputs["text_token_mask"]], 1)
        return sent, mask

    def forward(self, inputs: dict[str, Any]) -> dict[str, Tensor]:
        frames = self._frames(inputs["cls"])  # (B, N, E)
        if self.with_patch:
            frames = torch.cat([frames, self._norm(inputs["patch"]).mean(2)], -1)  # (B, N, E + W)
        clips, clip_mask = group_clips(frames, inputs["frame_mask"], self.clip_len)  # (B, T, E')
        v_out, v_last, v_mask = self.video(clips, clip_mask)  # (B, T, H), (B, H), (B, T)
        q_seq, q_mask = self._question_parts(inputs)  # (B, Lq, H)
        B = q_seq.shape[0]
        C = 1 if self.open_ended else inputs["cand"].shape[1]
        if not self.open_ended:  # one "question + answer" sequence per candidate: (B*C, Lq + 1, H)
            cand = self.cand_in(self._norm(inputs["cand"])).reshape(B * C, 1, -1)
            q_seq = torch.cat([q_seq.repeat_interleave(C, 0), cand], 1)
            q_mask = torch.cat([q_mask.repeat_interleave(C, 0), q_mask.new_ones(B * C, 1)], 1)
            v_out, v_last, v_mask = (t.repeat_interleave(C, 0) for t in (v_out, v_last, v_mask))
        q_out, q_last, q_mask = self.question(q_seq, q_mask)
        for layer in self.coattn:
            q_out, v_out = layer(q_out, v_out, q_mask, v_mask)
        nodes, node_mask = torch.cat([q_out, v_out], 1), torch.cat([q_mask, v_mask], 1)  # (B*C, M, H)
        local = self.pool(self.gcn(nodes, self.adjacency(nodes, node_mask), node_mask), node_mask)  # (B*C, H)
        glob = self.global_fusion(q_last, v_last)
        fused = self.fusion(glob, local)
        if self.open_ended:
            return {"logits": self.classifier(torch.relu(fused)), "feature": fused}
        logits = fused.view(B, C).masked_fill(~inputs["cand_mask"], float("-inf"))
        return {"logits": logits, "feature": local.view(B, C, -1).mean(1)}


def token_width(stores: Any) -> int:
    """The token width W of the text store's question bundles (0 when it has no token states)."""
    root = stores.store("text").root
    if "questions" not in root:
        return 0
    for _, split in root["questions"].groups():
        for _, group in split.groups():
            if "text_tokens" in group:
                return int(group["text_tokens"].shape[-1])
    return 0


NEXTQA_APP_DIM, NEXTQA_APP_MOT_DIM = 2048, 4096
"""NExT-QA's ``app_mot`` ``feat``: appearance ``[:2048]``, motion ``[2048:]`` (``sample_loader.py``)."""


def motion_split(stores: Any) -> int:
    """2048 when the frame store was imported from a NExT-QA ``app_mot`` file with the release's
    4096-d vectors (appearance then motion), else 0 (one stream)."""
    store = stores.store("cls")
    imported = store.imported or {}
    if imported.get("layout") != "nextqa":
        return 0
    videos = store.complete_videos()
    width = int(store.video_arrays(videos[0])["cls"].shape[-1]) if videos else 0
    return NEXTQA_APP_DIM if width == NEXTQA_APP_MOT_DIM else 0


def prepare(args: dict[str, Any], stores: Any) -> dict[str, Any]:
    """The store's token width and motion split (recorded with the arguments)."""
    return {"token_dim": token_width(stores) if args["question_tokens"] else 0,
            "motion_split": motion_split(stores) if int(args["motion_split"]) < 0 else int(args["motion_split"])}


def data(args: dict[str, Any]) -> dict[str, Any]:
    return {"num_frames": args["num_frames"], "patch_frames": "all" if args["appearance"] == "cls+patch" else "none",
            "text_tokens": bool(args["question_tokens"]) and args["token_dim"] > 0}


METHOD = Method(
    name="hga", build=HGAModel, loss=plain_loss, predict=plain_predict, data=data,
    defaults=DEFAULTS, optim=OPTIM, prepare=prepare,
)
