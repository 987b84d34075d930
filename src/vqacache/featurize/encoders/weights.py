"""Weights resolution: what ``--weights`` means, where the bytes come from, how they are named.

``--weights`` takes one of

* a pretrained **tag** of the model (``openai``, ``laion2b_s32b_b82k``; see
  ``open_clip.list_pretrained_tags_by_model``): loaded through open_clip's download cache
  (Hugging Face hub, or a URL for the few tags that have no hub copy). A cached copy is used
  without touching the network; if there is none and the machine is offline (``HF_HUB_OFFLINE``
  set or the host unreachable) a one-line :class:`UsageError` says so at once instead of
  letting the hub client retry for half a minute. Recorded by tag *and* content,
  ``WeightsSpec("pretrained", "<tag>@sha256:<hex>")`` with the sha256 of the file actually
  loaded: a tag names no fixed bytes (a re-released or corrupted file under the same tag
  must not write into the same store). Each file is hashed once per process
  (:func:`sha256_file_cached`, keyed by path, size and mtime: ViT-g files are GBs).
* a **local file** (``.pt``/``.pth``/``.bin``/``.safetensors`` holding an open_clip state
  dict): recorded by content, ``WeightsSpec("file", "sha256:<hex>")``, never by path.
* ``random`` or ``random:SEED``: the deterministic random init of :func:`init_random_`
  (:mod:`vqacache.cache_spec.random_init`)
  (seed 0 by default), recorded as ``WeightsSpec("random", "random:SEED")``. Only when asked
  for: nothing ever falls back to random weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.random_init import RANDOM_INIT, init_random_  # noqa: F401 (re-exported)
from vqacache.cache_spec.spec import WeightsSpec


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_RANDOM = re.compile(r"random(?::(\d{1,18}))?")
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's weights come from, resolved to something loadable.

    ``spec``: what the feature spec records. ``path``: local checkpoint to load (pretrained
    tags resolve to their cached file), ``None`` for random weights. ``seed``: the random seed.
    ``pretrained_cfg``: open_clip's config of the tag (mean/std, interpolation, resize mode,
    ``quick_gelu``), empty unless ``spec.source == "pretrained"``.
    """

    spec: WeightsSpec
    path: Path | None = None
    seed: int | None = None
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)


def resolve_weights(model: str, weights: str | None, default_tag: str | None, *, what: str) -> ResolvedWeights:
    """Turn a ``--weights`` value into loadable weights for open_clip model ``model``.

    ``weights=None`` means ``default_tag``; ``what`` names the encoder in error messages.
    Pretrained tags are downloaded here when needed (or fail fast when offline).
    """
    import open_clip

    if weights is None:
        if default_tag is None:
            raise UsageError(f"{what} has no default weights; pass --weights ({_choices(model)})")
        weights = default_tag
    weights = weights.strip()
    match = _RANDOM.fullmatch(weights)
    if match:
        seed = int(match.group(1) or 0)
        return ResolvedWeights(WeightsSpec("random", f"random:{seed}"), seed=seed)
    if weights.startswith("random"):
        raise UsageError(f"--weights {weights!r}: random weights are 'random' or 'random:SEED' (SEED an integer >= 0)")
    if open_clip.is_pretrained_cfg(model, weights):
        tag = _clean_tag(weights)
        cfg = dict(open_clip.get_pretrained_cfg(model, tag))
        path = download_pretrained(model, tag, cfg)
        try:
            digest = sha256_file_cached(path)
        except OSError as exc:  # vanished or unreadable between the lookup and the hash
            raise UsageError(
                f"{model}/{tag} weights at {path} cannot be read ({exc.strerror or exc}); "
                "download them again, or pass --weights PATH or --weights random"
            ) from None
        return ResolvedWeights(WeightsSpec("pretrained", f"{tag}@sha256:{digest}"), path=path, pretrained_cfg=cfg)
    path = Path(weights).expanduser()
    if path.is_file():
        return ResolvedWeights(WeightsSpec("file", f"sha256:{sha256_file(path)}"), path=path.resolve())
    if path.suffix in CHECKPOINT_SUFFIXES or os.sep in weights or "/" in weights:
        raise UsageError(f"--weights {weights}: no such file")
    raise UsageError(f"--weights {weights!r} is not a pretrained tag of {model} nor a file ({_choices(model)})")


def _choices(model: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model)
    listed = f"tags: {', '.join(tags)}; " if tags else "no pretrained tags; "
    return f"{listed}or a checkpoint PATH, or random[:SEED]"


def _clean_tag(tag: str) -> str:
    """open_clip's tag normalisation: ``LAION2B-s32b`` and ``laion2b_s32b`` are one tag."""
    return tag.lower().replace("-", "_")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_HASHED: dict[tuple[str, int, int], str] = {}
_HASHED_LOCK = threading.Lock()


def sha256_file_cached(path: str | Path) -> str:
    """:func:`sha256_file`, computed once per process for a file as long as its resolved path,
    size and modification time stay the same (a replaced or rewritten file is hashed again)."""
    real = Path(path).resolve()
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    with _HASHED_LOCK:  # one hash at a time: two threads never read the same GBs twice
        if key not in _HASHED:
            _HASHED[key] = sha256_file(real)
        return _HASHED[key]


# -- pretrained tags: open_clip's cache first, the network only when it is there ------------


def download_pretrained(model: str, tag: str, cfg: dict[str, Any]) -> Path:
    """Local path of the checkpoint of ``model``/``tag``: cached, or downloaded now.

    Follows ``open_clip.download_pretrained``: the hub copy when the tag has one, else the URL.
    """
    import open_clip

    what = f"{model}/{tag}"
    cached = _cached_checkpoint(cfg)
    if cached is not None:
        return cached
    host = urlparse(_hub_endpoint() if cfg.get("hf_hub") else cfg.get("url", "")).hostname or ""
    if _hub_offline() or not _reachable(host):
        raise UsageError(
            f"{what} weights are not in the local cache and this machine is offline; download them "
            "once, pass a local file with --weights PATH, or --weights random for random weights"
        )
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as exc:  # network, disk, hub errors: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"could not download {what} weights ({first}); pass --weights PATH or --weights random") from exc


def _cached_checkpoint(cfg: dict[str, Any]) -> Path | None:
    """The file ``open_clip.download_pretrained(cfg)`` would return, if it is already cached:
    the tag's own ``file``; else the hub copy (safetensors first); else the URL download cache,
    when the file there has the sha256 prefix the URL names (as open_clip checks)."""
    if cfg.get("file"):
        own = Path(cfg["file"]).expanduser()
        return own if own.is_file() else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        for name in _hub_filenames(filename or "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo_id, name)
            if isinstance(hit, str):
                return Path(hit)
        return None
    url = cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file() and sha256_file_cached(target).startswith(_url_sha256_prefix(url)):
            return target
    return None


def _url_sha256_prefix(url: str) -> str:
    """The sha256 (prefix) a download URL names, as open_clip reads it: the folder before the
    file for OpenAI's URLs, the file name's last ``-`` part for mlfoundations'; else empty."""
    name = os.path.basename(url)
    if "openaipublic" in url:
        return url.split("/")[-2]
    if "mlfoundations" in url:
        return os.path.splitext(name)[0].split("-")[-1]
    return ""


def _hub_filenames(filename: str) -> list[str]:
    """Safetensors alternatives first, as open_clip's ``download_pretrained_from_hf`` does."""
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable() -> bool:
    """Can the Hugging Face hub be used now? False when ``HF_HUB_OFFLINE`` is set or its host
    cannot be reached within a few seconds (so callers fail fast instead of retrying)."""
    return not _hub_offline() and _reachable(urlparse(_hub_endpoint()).hostname or "")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _reachable(host: str) -> bool:
    """Can a TCP connection to ``host:443`` be opened within a few seconds? (DNS included.)

    Behind a proxy a direct connection proves nothing: then the download itself decides.
    """
    if not host:
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False

