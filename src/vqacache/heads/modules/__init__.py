"""Building blocks of the heads, one concept per file; each unaware of training.

VideoDistill (Zou et al.): :class:`LAGate` (eq. 1-3), :class:`FrameSampler` with
:class:`FrameSamplingBlock`, :class:`GumbelTopK` / :func:`gumbel_topk` (eq. 4-6) with
:func:`select_frames`, :class:`VisionRefinement` with :class:`VisionRefinementBlock` built on
:class:`DividedAttention`; answer heads :class:`AnswerClassifier` and :class:`CandidateScorer`.
"""

from vqacache.heads.modules.answer_heads import AnswerClassifier, CandidateScorer
from vqacache.heads.modules.frame_sampling import FrameSampler, FrameSamplingBlock
from vqacache.heads.modules.gumbel_topk import GumbelTopK, gumbel_topk, select_frames
from vqacache.heads.modules.la_gate import LAGate
from vqacache.heads.modules.space_time_attention import DividedAttention
from vqacache.heads.modules.vision_refinement import VisionRefinement, VisionRefinementBlock

__all__ = [
    "AnswerClassifier",
    "CandidateScorer",
    "DividedAttention",
    "FrameSampler",
    "FrameSamplingBlock",
    "GumbelTopK",
    "LAGate",
    "VisionRefinement",
    "VisionRefinementBlock",
    "gumbel_topk",
    "select_frames",
]
