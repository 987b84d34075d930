"""Batched tensor preprocessing that reproduces open_clip's inference transform.

open_clip's eval transform for ``resize_mode="shortest"`` is, per PIL image::

    Resize(S, interpolation)  ->  CenterCrop(S)  ->  ToTensor()  ->  Normalize(mean, std)

Here the same steps run on a whole batch of decoded frames as one tensor (on any device):

1. resize the short side to ``S`` (long side ``int(S * long / short)``, torchvision's rule)
   with antialiased ``interpolation`` in float32; torch's antialiased kernels are PIL's
   (bicubic a = -0.5, support widened by the downscale factor);
2. round and clamp to the 0..255 grid, because PIL resizes 8-bit images and so quantises;
3. center crop ``S x S`` (offsets ``round((H - S) / 2)``, torchvision's rule);
4. scale to [0, 1] and normalise with ``mean`` / ``std``.

The BLIP family's processors (transformers' ``BlipImageProcessor``) resize straight to
``S x S`` without keeping the aspect ratio and without a crop (``resize="squash"``): the same
passes, with both sides' targets ``S`` and step 3 skipped.

The one remaining difference from open_clip's PIL path is PIL's fixed-point arithmetic:
a pixel can land one grey level away (|diff| <= 1/255 before normalisation). The
implementation is versioned by :data:`PREPROCESS_IMPL`, recorded in the feature spec: change
the numbers, bump it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vqacache.cache_spec.spec import PreprocessSpec
from vqacache.featurize.encoders.transfer import to_device

PREPROCESS_IMPL = "vqacache-tensor-v1"
"""Identity of this implementation; stored in ``FeatureSpec.extra`` (it changes numbers)."""


RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class ImageTransform:
    """The model transform: resize to ``size`` (short side, or both sides), crop, normalise.

    ``interpolation``: ``"bicubic"`` or ``"bilinear"`` (antialiased, as PIL does).
    ``resize``: ``"shortest"`` (open_clip: short side to ``size``, then the center crop) or
    ``"squash"`` (BLIP: both sides to ``size``, aspect ratio not kept, no crop).
    """

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "shortest"

    def __post_init__(self) -> None:
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be bicubic or bilinear, got {self.interpolation!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")

    def __call__(self, frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 RGB frames (N, H, W, 3) -> normalised float32 (N, 3, size, size) on ``device``."""
        return preprocess_frames(frames, self, device)

    def spec(self, decode_short_side: int | None, decode_interpolation: str) -> PreprocessSpec:
        """This transform (after the decoder's resize) as the spec records it; "squash" is
        ``crop="none"`` with both sides resized (encoders add ``extra["resize"] = "squash"``)."""
        return PreprocessSpec(
            decode_short_side=decode_short_side,
            decode_interpolation=decode_interpolation,
            resize_short_side=self.size,
            interpolation=self.interpolation,
            crop="center" if self.resize == "shortest" else "none",
            crop_size=self.size,
            mean=self.mean,
            std=self.std,
            antialias=True,
        )


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (H, W) when the short side becomes ``size`` (torchvision's truncating rule)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's center crop of ``size x size``; image must be >= size."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) array or tensor -> uint8 tensor (N, 3, H, W) on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB of shape (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return to_device(x, device).permute(0, 3, 1, 2)  # (N, 3, H, W)



def preprocess_frames(
    frames: np.ndarray | torch.Tensor, transform: ImageTransform, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3), all the same size -> float32 (N, 3, S, S), normalised, on ``device``."""
    x = frames_to_tensor(frames, device)  # (N, 3, H, W) uint8
    n, _, h, w = x.shape
    s = transform.size
    if n == 0:
        return torch.empty(0, 3, s, s, dtype=torch.float32, device=x.device)
    x = x.float()
    rh, rw = resized_shape(h, w, s) if transform.resize == "shortest" else (s, s)
    if rw != w:  # PIL: horizontal pass first, back on the uint8 grid after each pass
        x = _resize_pass(x, (h, rw), transform.interpolation)  # (N, 3, H, rw)
    if rh != h:
        x = _resize_pass(x, (rh, rw), transform.interpolation)  # (N, 3, rh, rw)
    top, left = center_crop_offsets(rh, rw, s)  # (0, 0) when squashed
    x = x[:, :, top : top + s, left : left + s]  # (N, 3, S, S)
    mean = torch.tensor(transform.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous()


def _resize_pass(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """One antialiased resize of float (N, C, H, W) holding 0..255 values, then PIL's rounding:
    ``floor(v + 0.5)`` clipped to 0..255 (PIL rounds half up and clips after every pass)."""
    x = F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True)
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)
