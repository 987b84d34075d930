"""The precision forward passes run in: ``compute_dtype`` (recorded in every spec).

``float32`` runs as is; ``float16``/``bfloat16`` run under ``torch.autocast`` on the model's
device (weights stay float32), as open_clip's and BLIP-2's own inference scripts do.
"""

from __future__ import annotations

import contextlib

import torch

from vqacache.cache_spec.errors import UsageError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_compute_dtype(compute_dtype: str) -> str:
    if compute_dtype not in TORCH_DTYPES:
        raise UsageError(f"compute dtype must be one of {', '.join(TORCH_DTYPES)}, got {compute_dtype!r}")
    return compute_dtype


def autocast(device: torch.device, compute_dtype: str) -> contextlib.AbstractContextManager:
    """Context for a forward pass on ``device`` in ``compute_dtype``."""
    if compute_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[compute_dtype])
