"""MCG's instance-level contrast (ICL, eq. 1-3): the video and question CLS tokens projected
to 256 dimensions and l2-normalised, a symmetric InfoNCE over the batch with a learnable
temperature (start 0.07, clamped to [0.001, 0.5] before every use, as the released code's
``self.temp.clamp_(0.001, 0.5)``).

The released code averages the two directions' batch means ((l_v2t + l_t2v) / 2), which is
eq. 3's 1/(2N) sum over the batch; so does this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEMP_INIT, TEMP_MIN, TEMP_MAX = 0.07, 0.001, 0.5
PROJ_DIM = 256


class InstanceContrast(nn.Module):
    """g_x, g_y and tau_1: ``embed`` gives the normalised vectors, ``forward`` the loss.

    Args:
        video_dim: width of x_cls; text_dim: width of y_cls; proj_dim: 256 (the paper's).
    """

    def __init__(self, video_dim: int, text_dim: int, proj_dim: int = PROJ_DIM) -> None:
        super().__init__()
        self.video_proj = nn.Linear(video_dim, proj_dim)  # g_x
        self.text_proj = nn.Linear(text_dim, proj_dim)  # g_y
        self.temp = nn.Parameter(torch.tensor(TEMP_INIT))

    def temperature(self) -> Tensor:
        """tau_1 clamped to [0.001, 0.5] in place (no gradient through the clamp)."""
        with torch.no_grad():
            self.temp.clamp_(TEMP_MIN, TEMP_MAX)
        return self.temp

    def similarity(self, x_cls: Tensor, y_cls: Tensor) -> Tensor:
        """x_cls (B, Dx), y_cls (B, Dy) -> sim (B, B), sim[i, j] = g_x(x_i) . g_y(y_j)  # eq. 1"""
        gx = F.normalize(self.video_proj(x_cls), dim=-1)
        gy = F.normalize(self.text_proj(y_cls), dim=-1)
        return gx @ gy.t()

    def forward(self, x_cls: Tensor, y_cls: Tensor) -> tuple[Tensor, Tensor]:
        """-> (L_ICL (), sim (B, B) without temperature, for hard-negative mining)."""
        sim = self.similarity(x_cls, y_cls)
        return info_nce(sim / self.temperature()), sim


def info_nce(logits: Tensor) -> Tensor:
    """logits (B, B), positives on the diagonal -> (l_x2y + l_y2x) / 2, batch means  # eq. 2-3"""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
