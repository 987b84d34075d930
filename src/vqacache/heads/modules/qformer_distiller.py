"""VLAP's QFormer-Distiller (eq. 7): ``L_distill = MSE(D(X'_student), X'_teacher)``.

The student's query outputs (B, 32 K, d) (K selected frames, 32 queries each, already in the
LLM's width d) are mapped by the decoder D to the teacher's length (B, 32 T, d) and compared
with the teacher's (B, 32 T, d) by the mean squared error over every element.

**The decoder D** (paper Table 5: "a simple FC with a LN after it" works best). The paper does
not say along which axis; the released code (``dist_fc_bn``) transposes to (B, d, 32 K),
applies ``Linear(32 K -> 32 T)`` **over the token axis** and ``LayerNorm(32 T)``, i.e. the
normalisation runs over the token axis for each channel, and transposes back. We follow the
released code (``norm="tokens"``, the default: it is what the released numbers were trained
with); ``norm="channels"`` normalises over d instead (the usual transformer placement), an
option for ablations.

The teacher's tensor must come without a gradient (the caller runs the teacher under
``torch.no_grad()``); the loss detaches it anyway so that no gradient can reach it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError

NORMS = ("tokens", "channels")


class DistillDecoder(nn.Module):
    """D: student (B, L_s, d) -> (B, L_t, d); Linear over the token axis L_s -> L_t, then LayerNorm
    over the tokens (``norm="tokens"``, released code) or over d (``norm="channels"``)."""

    def __init__(self, student_len: int, teacher_len: int, dim: int, norm: str = "tokens") -> None:
        super().__init__()
        if norm not in NORMS:
            raise UsageError(f"unknown distiller norm {norm!r}; valid: {', '.join(NORMS)}")
        self.norm_axis = norm
        self.fc = nn.Linear(student_len, teacher_len)
        self.ln = nn.LayerNorm(teacher_len if norm == "tokens" else dim)

    def forward(self, student: Tensor) -> Tensor:
        """student (B, L_s, d) -> (B, L_t, d)."""
        x = self.fc(student.transpose(1, 2))  # (B, d, L_t)
        if self.norm_axis == "tokens":
            return self.ln(x).transpose(1, 2)  # LayerNorm(L_t) over the token axis
        return self.ln(x.transpose(1, 2))  # (B, L_t, d), LayerNorm(d)


class QFormerDistiller(nn.Module):
    """eq. 7: ``MSE(D(student), teacher)``; student (B, 32 K, d), teacher (B, 32 T, d) -> ()."""

    def __init__(self, student_len: int, teacher_len: int, dim: int, norm: str = "tokens") -> None:
        super().__init__()
        self.decoder = DistillDecoder(student_len, teacher_len, dim, norm)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        decoded = self.decoder(student)  # (B, 32 T, d)
        return F.mse_loss(decoded.float(), teacher.detach().float())  # eq. 7
