"""Weights of the transformers families (BLIP-2's ViT-g, BLIP's ViT, the BLIP teacher).

``--weights`` takes one of

* a Hugging Face **hub name** (``Salesforce/blip2-opt-2.7b``): the snapshot in the Hugging Face
  cache is used without touching the network; when it is not there (or lacks the weight files
  needed) and the hub cannot be used (``HF_HUB_OFFLINE`` set, or its host unreachable) a
  one-line :class:`UsageError` naming ``--weights`` says so at once; otherwise the files needed
  are downloaded (for a tower inside a larger checkpoint, only the shards that hold it).
  Recorded as ``WeightsSpec("pretrained", "<hub name>@<commit>")``: the snapshot's commit, so
  a repository updated upstream makes a different spec.
* a local **directory** as ``save_pretrained`` writes it (``config.json`` and the weight files,
  sharded or not, safetensors or ``.bin``): its config is the architecture. Recorded by
  content, ``WeightsSpec("file", "sha256:<hex>")`` over every file's relative path and sha256
  (hidden files left out), never by path.
* a local **file** holding one state dict (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) in
  transformers' key layout: the architecture is the family's default configuration (that of
  the default checkpoint). Recorded as ``WeightsSpec("file", "sha256:<hex of its bytes>")``.
* ``random`` or ``random:SEED``: :func:`~.weights.init_random_` over the family's default
  configuration, ``WeightsSpec("random", "random:SEED")``. Only when asked for: nothing ever
  falls back to random weights.

A tower stored inside a larger model (BLIP-2's vision model in ``Blip2ForConditionalGeneration``)
is read by key ``prefix`` (``vision_model.``); a checkpoint of the bare tower works too.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import WeightsSpec
from vqacache.featurize.encoders import weights as weights_mod
from vqacache.featurize.encoders.weights import CHECKPOINT_SUFFIXES, sha256_file

_RANDOM = re.compile(r"random(?::(\d{1,18}))?")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_NOT_SEMANTIC = {
    "transformers_version", "architectures", "dtype", "torch_dtype", "name_or_path",  # bookkeeping
    "id2label", "label2id", "problem_type", "output_attentions", "output_hidden_states", "return_dict",  # heads, outputs
}


@dataclass(frozen=True)
class HfWeights:
    """Where a transformers model's weights come from.

    ``spec``: what the feature spec records. ``folder``: a ``from_pretrained`` folder (a hub
    snapshot or a local directory); ``file``: one state-dict file; ``seed``: random weights.
    Exactly one of the three is set.
    """

    spec: WeightsSpec
    folder: Path | None = None
    file: Path | None = None
    seed: int | None = None


def resolve_hf_weights(weights: str | None, default: str | None, *, what: str, prefix: str = "",
                       allow_file: bool = True) -> HfWeights:
    """Turn a ``--weights`` value into loadable weights (see the module docstring).

    ``weights=None`` means ``default`` (a hub name); ``what`` names the model in errors;
    ``prefix``: key prefix of the tower inside a larger checkpoint (which shards to fetch).
    """
    forms = "a hub name (owner/name), a local directory" + (" or checkpoint file" if allow_file else "")
    if weights is None:
        if default is None:
            raise UsageError(f"{what} has no default weights; pass --weights ({forms}, or random[:SEED])")
        weights = default
    weights = weights.strip()
    match = _RANDOM.fullmatch(weights)
    if match:
        seed = int(match.group(1) or 0)
        return HfWeights(WeightsSpec("random", f"random:{seed}"), seed=seed)
    if weights.startswith("random"):
        raise UsageError(f"--weights {weights!r}: random weights are 'random' or 'random:SEED' (SEED an integer >= 0)")
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"--weights {weights}: no config.json in this directory (save it with save_pretrained)")
        return HfWeights(WeightsSpec("file", f"sha256:{directory_sha256(path)}"), folder=path.resolve())
    if path.is_file():
        if not allow_file:
            raise UsageError(f"--weights {weights}: {what} needs a directory (config and weights), not a file")
        return HfWeights(WeightsSpec("file", f"sha256:{sha256_file(path)}"), file=path.resolve())
    if weights.startswith((".", "/", "~")) or path.suffix in CHECKPOINT_SUFFIXES or weights.count("/") > 1:
        raise UsageError(f"--weights {weights}: no such file or directory")
    if not _HUB_NAME.fullmatch(weights):
        raise UsageError(f"--weights {weights!r} is not {forms}, nor random[:SEED]")
    folder = hub_snapshot(weights, what=what, prefix=prefix)
    return HfWeights(WeightsSpec("pretrained", f"{weights}@{folder.name}"), folder=folder)


# -- the hub: cache first, the network only when it is there --------------------------------


def hub_snapshot(repo: str, *, what: str, prefix: str = "", weights: bool = True) -> Path:
    """The snapshot folder of hub repository ``repo`` holding its configs and tokenizer files
    and (``weights``) the weight files that contain ``prefix``: cached, or downloaded now
    (fails fast when offline)."""
    cached = _cached_snapshot(repo)
    if cached is not None and (not weights or has_weight_files(cached, prefix)):
        return cached
    if not weights_mod.hub_reachable():
        state = "are not complete in" if cached is not None else "are not in"
        raise UsageError(
            f"{what} weights {repo} {state} the Hugging Face cache and this machine is offline; download them "
            "once, pass a local directory with --weights PATH, or --weights random for random weights"
        )
    try:
        return _download(repo, prefix, weights)
    except Exception as exc:  # network, disk, hub errors: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"could not download {repo} ({first}); pass --weights PATH or --weights random") from exc


def _cached_snapshot(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, "config.json")
    return Path(hit).parent if isinstance(hit, str) else None


def _download(repo: str, prefix: str, weights: bool) -> Path:
    """Configs first, then only the weight files holding ``prefix`` (all when there is no index)."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt"]))
    if not weights:
        return folder
    needed = _indexed_files(folder, prefix)
    if needed is not None:
        return Path(snapshot_download(repo, allow_patterns=needed))
    folder = Path(snapshot_download(repo, allow_patterns=["model.safetensors"]))
    if not (folder / "model.safetensors").is_file():
        folder = Path(snapshot_download(repo, allow_patterns=["pytorch_model.bin"]))
    return folder


# -- weight files and state dicts -------------------------------------------------------------


def _indexed_files(folder: Path, prefix: str) -> list[str] | None:
    """Shard names of a sharded checkpoint that hold keys under ``prefix`` (all shards when no
    key has it: a bare tower); None when ``folder`` has no index."""
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            under = {f for k, f in weight_map.items() if prefix and k.startswith(prefix)}
            return sorted(under or set(weight_map.values()))
    return None


def weight_files(folder: Path, prefix: str = "") -> list[Path]:
    """The files of ``folder`` to read for the keys under ``prefix``; [] when it has none."""
    shards = _indexed_files(folder, prefix)
    if shards is not None:
        return [folder / s for s in shards]
    return [folder / name for name in SINGLE_FILES if (folder / name).is_file()][:1]


def has_weight_files(folder: Path, prefix: str = "") -> bool:
    files = weight_files(folder, prefix)
    return bool(files) and all(f.is_file() for f in files)


def load_state_dict(files: list[Path], prefix: str = "", *, what: str) -> dict[str, torch.Tensor]:
    """The tensors of ``files`` under ``prefix``, with the prefix removed; every tensor when no
    key has the prefix (a checkpoint of the bare tower). Only the selected tensors are read."""
    if not files:
        raise UsageError(f"{what}: no weight files (model.safetensors or pytorch_model.bin)")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.is_file():
            raise UsageError(f"{what}: weight file {path.name} is missing")
        state.update(_read(path, prefix, what=what))
    if prefix and any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _read(path: Path, prefix: str, *, what: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if prefix and any(k.startswith(prefix) for k in keys):
                    keys = [k for k in keys if k.startswith(prefix)]
                return {k: f.get_tensor(k) for k in keys}
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--weights {path}: cannot read it as a {what} checkpoint ({first})") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UsageError(f"--weights {path}: not a state dict of tensors")
    return dict(loaded)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, source: Path) -> None:
    """Put ``state`` (as float32) into ``model``, which may live on the meta device (strict:
    every parameter, nothing else); one-line error."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) such as {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) such as {unexpected[0]!r}")
        raise UsageError(f"--weights {source} is not a {what} checkpoint: {'; '.join(parts)}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise UsageError(f"--weights {source}: {what} tensor {name!r} was not loaded")


def directory_sha256(folder: str | Path) -> str:
    """Hex sha256 naming a directory by content: one ``<relative path>\\0<sha256>\\n`` line per
    regular file, in path order; hidden files and folders (``.git``, ``.cache``) left out."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


# -- what the spec records ----------------------------------------------------------------------


def spec_config(config: Any) -> dict[str, Any]:
    """A transformers config as plain JSON for the spec: every field (sub-configs included),
    without bookkeeping that does not change the numbers (library version, saved dtype,
    class names, private ``_...`` keys)."""
    return _clean(config.to_dict())


def _clean(d: Any) -> Any:
    if isinstance(d, dict):
        items = sorted((str(k), v) for k, v in d.items())
        return {k: _clean(v) for k, v in items if k not in _NOT_SEMANTIC and not k.startswith("_")}
    if isinstance(d, (list, tuple)):
        return [_clean(v) for v in d]
    return d


_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes, as image processors store them


def processor_settings(folder: Path | None, *, size: int, mean: tuple[float, float, float],
                       std: tuple[float, float, float], interpolation: str, what: str) -> dict[str, Any]:
    """Size, interpolation, mean and std of the image processor saved beside the weights
    (``preprocessor_config.json``), else the given defaults; anything this package's tensor
    transform cannot reproduce (a crop, no resize, another rescale) is a UsageError."""
    settings = {"size": size, "interpolation": interpolation, "mean": tuple(mean), "std": tuple(std)}
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return settings
    cfg = json.loads(path.read_text())
    if cfg.get("do_center_crop") or cfg.get("do_resize") is False or cfg.get("do_normalize") is False:
        raise UsageError(f"{what}: {path} asks for a crop or skips resize/normalise; not supported")
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise UsageError(f"{what}: {path} rescales by {cfg.get('rescale_factor')}; only 1/255 is supported")
    raw = cfg.get("size", size)
    if isinstance(raw, dict):
        raw = (raw.get("height"), raw.get("width")) if "height" in raw else (raw.get("shortest_edge"),) * 2
    sides = (raw, raw) if isinstance(raw, int) else tuple(raw)
    if sides != (size, size):
        raise UsageError(f"{what}: {path} resizes to {sides}, the model reads {size}x{size} images")
    resample = cfg.get("resample", 3)
    if resample not in _RESAMPLE:
        raise UsageError(f"{what}: {path} resamples with PIL filter {resample}; only bilinear/bicubic are supported")
    settings["interpolation"] = _RESAMPLE[resample]
    settings["mean"] = tuple(float(v) for v in cfg.get("image_mean", mean))
    settings["std"] = tuple(float(v) for v in cfg.get("image_std", std))
    return settings
