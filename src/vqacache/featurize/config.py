"""What one ``vqa-featurize`` run is asked to do: :class:`FeaturizeConfig`, and the parsing of
``--encoder a,b,c``. Only some fields enter the spec (see :class:`~vqacache.cache_spec.FeatureSpec`);
the rest are operational (where, how fast, how many workers)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vqacache.cache_spec import SpecError, UsageError, parse_fps
from vqacache.featurize.decode import DEFAULT_FPS
from vqacache.featurize.imageqa.task import DEFAULT_FRAMES, DEFAULT_K


@dataclass(frozen=True)
class FeaturizeConfig:
    """Everything ``vqa-featurize`` needs. Only some fields enter the spec (see FeatureSpec)."""

    dataset: str
    encoder: str
    """An encoder name, or several as ``a,b,c``: each video is decoded once and fed to all."""
    cache_root: Path
    data_root: Path | None = None
    dataset_options: tuple[str, ...] = ()
    """``KEY=VALUE`` options of the dataset adapter (e.g. ``video_root=/data/videos``, ``task=count``)."""
    weights: str | None = None
    splits: tuple[str, ...] = ()
    """Splits to featurize; empty = every split the dataset has on disk."""
    patches: bool = True
    patch_pool: int = 1
    patch_fps: Fraction | str | float | None = None
    """``--patch-fps F``: patch tokens only on the frames nearest ``j / F`` (the
    ``nearest-pts-subgrid-v1`` rule), CLS on every frame; None: patch tokens on every frame.
    In the spec (``outputs.patch_fps``) only when set. See :func:`patch_fps_of`."""
    fps: Fraction = DEFAULT_FPS
    short_side: int | None = 256
    dtype: str = "float16"
    compute_dtype: str = "auto"
    """float32, float16 or bfloat16 (autocast); auto: float16 on CUDA, float32 on CPU. In the spec."""
    batch_size: int | None = None
    """Frames per encoder forward; None = the encoder's hint. Operational: not in the spec."""
    device: str = "auto"
    """auto (CUDA if the worker sees a GPU), cpu, cuda or cuda:N. Not in the spec."""
    retry_failed: bool = False
    workers: int | None = None
    """Local Dask workers (None: one per GPU, or one on CPU); 0 runs in this process."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler; overrides ``workers``."""
    jobs: Any = None
    """``--cluster slurm|pbs|...``: a :class:`vqacache.featurize.cluster.JobOptions` (None: local)."""
    shard_videos: int | None = None
    """Videos per task; None picks a size that keeps every worker busy."""
    decode_processes: int = 1
    decode_timeout_s: float = 300.0
    lease_ttl_s: float = 600.0
    imageqa: str | None = None
    """Image-QA teacher (``blip``, ``albef``) whose per-frame answer probabilities are added to
    the question bundles; None: none. Its spec is recorded apart (see TeacherSpec)."""
    imageqa_weights: str | None = None
    imageqa_frames: int = DEFAULT_FRAMES
    imageqa_k: int = DEFAULT_K
    imageqa_tokenizer: str | None = None
    imageqa_score: str | None = None
    """The teacher's answer score (None: the teacher's default; see ``--imageqa-score``)."""


def encoder_names(value: str) -> list[str]:
    """``--encoder a,b,c`` -> ["a", "b", "c"]: each video is decoded once for all of them."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError("--encoder needs at least one name")
    if len(set(names)) != len(names):
        raise UsageError(f"--encoder names an encoder twice: {value!r}")
    return names


def patch_fps_of(config: FeaturizeConfig) -> str | None:
    """``config.patch_fps`` as an exact fraction string (``"2/1"``), checked: positive, at most
    ``--fps``, and only with patch tokens; None when unset. A mistake is a :class:`UsageError`."""
    if config.patch_fps is None:
        return None
    if not config.patches:
        raise UsageError("--patch-fps needs patch tokens; drop --no-patches or --patch-fps")
    try:
        value = parse_fps(config.patch_fps)
    except SpecError as exc:
        raise UsageError(f"--patch-fps: {exc}") from None
    fps = parse_fps(config.fps)
    if value > fps:
        raise UsageError(f"--patch-fps {config.patch_fps} is above --fps {float(fps):g}: patch tokens go on a sub-grid of the sampled frames")
    return f"{value.numerator}/{value.denominator}"


def shard_size(config: FeaturizeConfig, videos: int, workers: int) -> int:
    """Videos per task: ``--shard-videos``, or enough tasks to keep every worker busy (about
    four per worker), at most 16 videos each."""
    return config.shard_videos or max(1, min(16, videos // max(1, 4 * workers)))
