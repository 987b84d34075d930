"""Building blocks of the heads, one concept per file; each unaware of training.

VideoDistill (Zou et al.): :class:`LAGate` (eq. 1-3), :class:`FrameSampler` with
:class:`FrameSamplingBlock`, :class:`GumbelTopK` / :func:`gumbel_topk` (eq. 4-6) with
:func:`select_frames`, :class:`VisionRefinement` with :class:`VisionRefinementBlock` built on
:class:`DividedAttention`; answer heads :class:`AnswerClassifier` and :class:`CandidateScorer`.

VLAP (Wang et al.): :class:`FramePrompter` (eq. 2-5), :class:`FrameQFormer` (eq. 6),
:class:`QFormerDistiller` with :class:`DistillDecoder` (eq. 7), :class:`FrozenT5`, and the
BLIP-2-family loading in :mod:`.blip2_family` (imported from there: it needs transformers).
"""

from vqacache.heads.modules.answer_heads import AnswerClassifier, CandidateScorer
from vqacache.heads.modules.frame_prompter import FramePrompter, prompter_temperature
from vqacache.heads.modules.frame_qformer import FrameQFormer
from vqacache.heads.modules.frame_sampling import FrameSampler, FrameSamplingBlock
from vqacache.heads.modules.frozen_llm import FrozenT5
from vqacache.heads.modules.gumbel_topk import GumbelTopK, gumbel_topk, select_frames
from vqacache.heads.modules.la_gate import LAGate
from vqacache.heads.modules.qformer_distiller import DistillDecoder, QFormerDistiller
from vqacache.heads.modules.space_time_attention import DividedAttention
from vqacache.heads.modules.vision_refinement import VisionRefinement, VisionRefinementBlock

__all__ = [
    "AnswerClassifier",
    "CandidateScorer",
    "DistillDecoder",
    "DividedAttention",
    "FramePrompter",
    "FrameQFormer",
    "FrameSampler",
    "FrameSamplingBlock",
    "FrozenT5",
    "GumbelTopK",
    "LAGate",
    "QFormerDistiller",
    "VisionRefinement",
    "VisionRefinementBlock",
    "gumbel_topk",
    "prompter_temperature",
    "select_frames",
]
