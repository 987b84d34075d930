"""Where the encoder runs, and in which precision, when the user says ``auto``.

``--device auto`` (the default) is CUDA when this process sees a GPU, else the CPU;
``--compute-dtype auto`` is float16 autocast on CUDA (as BLIP-2 and open_clip's own scripts
run their frozen towers) and float32 on the CPU. Both are resolved in the process that builds
the encoder (a Dask worker), so a cluster whose workers disagree is refused before any video
is touched, by the spec check; the compute dtype is part of the spec and its fingerprint,
since it changes the features.
"""

from __future__ import annotations

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import COMPUTE_DTYPES

AUTO = "auto"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if a GPU is visible here, else ``cpu``; others checked and kept."""
    import torch  # not at import time: the encoder registry stays free of torch

    if device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this process sees no CUDA GPU")
    return device


def resolve_compute_dtype(compute_dtype: str, device: str) -> str:
    """``auto`` -> ``float16`` on CUDA, ``float32`` elsewhere; others checked and kept."""
    if compute_dtype == AUTO:
        return "float16" if device.startswith("cuda") else "float32"
    if compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"--compute-dtype must be auto or one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    return compute_dtype


def check_device_options(device: str, compute_dtype: str) -> None:
    """Spelling checks only, for the client before a cluster starts (a client without a GPU
    may drive GPU workers, so whether CUDA is there is checked where the encoder is built)."""
    if device != AUTO:
        import torch

        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    resolve_compute_dtype(compute_dtype, "cpu")
