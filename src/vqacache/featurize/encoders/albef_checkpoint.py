"""ALBEF weights: what ``--weights`` means for ALBEF, and the key map from ALBEF's checkpoints.

``--weights`` for ``albef`` is a local checkpoint file or ``random[:SEED]``. ALBEF's weights
are not on the Hugging Face hub: the VQA checkpoint is the "Finetuned checkpoint for VQA"
linked from the ALBEF README (https://github.com/salesforce/ALBEF, file ``vqa.pth``, often
saved as ``ALBEF_VQA.pth``). A file is recorded by content (``sha256:<hex>``), never by path.

The file is a ``torch.save`` of a dict whose ``"model"`` entry is the state dict of ALBEF's
``models/model_vqa.py`` (a bare state dict is accepted too). Its keys map onto
:class:`~vqacache.featurize.encoders.albef_model.AlbefModel` like this (``i`` a text encoder
layer, ``F = text_layers`` = ALBEF's ``fusion_layer``, 6 for ALBEF):

=====================================================  =========================================
ALBEF checkpoint key                                   AlbefModel parameter
=====================================================  =========================================
``visual_encoder.<rest>``                              ``visual.<rest>`` (timm ViT; same names:
                                                       ``cls_token``, ``pos_embed``,
                                                       ``patch_embed.proj.*``, ``blocks.<j>.norm1``,
                                                       ``.attn.qkv``, ``.attn.proj``, ``.norm2``,
                                                       ``.mlp.fc1``, ``.mlp.fc2``, ``norm.*``)
``text_encoder[.bert].embeddings.<rest>``              ``text.embeddings.<rest>``
``text_encoder[.bert].encoder.layer.<i>.<rest>``,      ``text.encoder.layer.<i>.<rest>``
i < F
``text_encoder[.bert].encoder.layer.<i>.<rest>``,      ``fusion.layer.<i-F>.<rest>`` (with
i >= F                                                 ``crossattention.*``)
``text_decoder.bert.<rest>``                           ``decoder.bert.<rest>``
``text_decoder.cls.predictions.<rest>``                ``decoder.cls.predictions.<rest>``
``vision_proj.*``, ``text_proj.*`` (when present)      ``vision_proj.*``, ``text_proj.*``
=====================================================  =========================================

Inside a BERT layer the names are the same in ALBEF's ``xbert.py`` and transformers:
``attention.self.{query,key,value}``, ``attention.output.{dense,LayerNorm}``,
``crossattention.self.{query,key,value}``, ``crossattention.output.{dense,LayerNorm}``,
``intermediate.dense``, ``output.{dense,LayerNorm}``. ``text_encoder.bert.`` is the layout of
pre-training checkpoints (``BertForMaskedLM``); ALBEF's ``VQA.py`` strips ``bert.`` the same way.

Ignored on purpose (:data:`IGNORED`): the momentum-distillation copies (``visual_encoder_m``,
``text_encoder_m``, ``text_decoder_m``, ``vision_proj_m``, ``text_proj_m``), the
``embeddings.position_ids`` buffers (``arange``), the pre-training heads and queues
(``text_encoder.cls.*``, ``itm_head.*``, ``temp``, ``image_queue``, ``text_queue``,
``idx_queue``, ``queue_ptr``), for a model built without the answer decoder (the encoder)
``text_decoder.*``, and for the image-QA teacher ``vision_proj``/``text_proj``. The
decoder's output layer is tied to its input embedding (``cls.predictions.decoder.weight`` =
``bert.embeddings.word_embeddings.weight``, ``cls.predictions.decoder.bias`` =
``cls.predictions.bias``), in ALBEF as here: both copies are loaded and must be equal.

Accounting is strict both ways: a checkpoint key that is neither mapped nor ignored, or a
model parameter that no key fills, is a :class:`UsageError` naming a few of them. When the
checkpoint's ``pos_embed`` has another grid than the model (a 256 px pre-training checkpoint
into the 384 px VQA model), the patch positions are resized bicubically as ALBEF's
``interpolate_pos_embed`` does (:func:`interpolate_pos_embed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.safe_load import load_error_reason
from vqacache.cache_spec.spec import WeightsSpec
from vqacache.featurize.encoders.albef_model import AlbefModel
from vqacache.featurize.encoders.weights import CHECKPOINT_SUFFIXES, sha256_file

WHERE_TO_GET = (
    "ALBEF's weights are not on the Hugging Face hub: download the VQA checkpoint (vqa.pth, "
    "'Finetuned checkpoint for VQA' in https://github.com/salesforce/ALBEF) and pass --weights "
    "/path/to/ALBEF_VQA.pth, or --weights random[:SEED] for random weights"
)
_RANDOM = re.compile(r"random(?::(\d{1,18}))?")

IGNORED = (
    re.compile(r"(visual_encoder|text_encoder|text_decoder|vision_proj|text_proj)_m\..*"),
    re.compile(r".*embeddings\.position_ids"),
    re.compile(r"text_encoder\.cls\..*"),
    re.compile(r"itm_head\..*"),
    re.compile(r"(temp|image_queue|text_queue|idx_queue|queue_ptr)"),
)
"""Checkpoint keys dropped on purpose (see the module docstring)."""

_TEXT_LAYER = re.compile(r"text_encoder\.(?:bert\.)?encoder\.layer\.(\d+)\.(.+)")
_TEXT_EMBEDDINGS = re.compile(r"text_encoder\.(?:bert\.)?embeddings\.(.+)")


@dataclass(frozen=True)
class AlbefWeights:
    """Resolved ``--weights``: ``spec`` (recorded), ``path`` of a checkpoint or ``seed`` of
    random weights (exactly one is set)."""

    spec: WeightsSpec
    path: Path | None = None
    seed: int | None = None


def resolve_albef_weights(weights: str | None) -> AlbefWeights:
    """``--weights`` -> a checkpoint file (hashed) or a random seed; anything else is a one-line
    :class:`UsageError` saying where ALBEF's checkpoint comes from."""
    if weights is None or not str(weights).strip():
        raise UsageError(f"albef has no default weights; {WHERE_TO_GET}")
    weights = str(weights).strip()
    match = _RANDOM.fullmatch(weights)
    if match:
        seed = int(match.group(1) or 0)
        return AlbefWeights(WeightsSpec("random", f"random:{seed}"), seed=seed)
    if weights.startswith("random"):
        raise UsageError(f"--weights {weights!r}: random weights are 'random' or 'random:SEED' (SEED an integer >= 0)")
    path = Path(weights).expanduser()
    if path.is_file():
        return AlbefWeights(WeightsSpec("file", f"sha256:{sha256_file(path)}"), path=path.resolve())
    if path.suffix in CHECKPOINT_SUFFIXES or "/" in weights or "\\" in weights:
        raise UsageError(f"--weights {weights}: no such file")
    raise UsageError(f"--weights {weights!r} is not a file; {WHERE_TO_GET}")


def read_albef_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in an ALBEF checkpoint file (``{"model": state_dict, ...}`` or a bare
    state dict), loaded on the CPU without unpickling arbitrary objects."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or format errors: one line for the user
        first = load_error_reason(exc)
        hint = ""
        if "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
            hint = (
                "; it holds objects other than tensors and plain values: if you trust it, re-save its state dict "
                "with torch.save(torch.load(PATH, weights_only=False)['model'], NEW_PATH)"
            )
        raise UsageError(f"--weights {path}: cannot read it as a torch checkpoint ({first}){hint}") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--weights {path} is not an ALBEF checkpoint (no state dict under 'model')")
    return state


def checkpoint_architecture(path: Path) -> str | None:
    """The architecture a ``vqa-train-teacher`` checkpoint records (``vqacache_finetune``'s
    ``architecture``), or None (ALBEF's own files, older fine-tuned ones). Read with
    ``weights_only=True`` and memory-mapped, so the tensors are not read twice."""
    import json

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint: read_albef_checkpoint reports it
        return None
    meta = obj.get("vqacache_finetune") if isinstance(obj, dict) else None
    if not isinstance(meta, str):
        return None
    try:
        value = json.loads(meta).get("architecture")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def checkpoint_layout(state: dict[str, torch.Tensor]) -> dict[str, int | bool | None]:
    """What a checkpoint holds, for building a matching model: ``embed_dim`` (width of
    ``vision_proj``, None without) and ``has_decoder``."""
    proj = state.get("vision_proj.weight")
    return {
        "embed_dim": int(proj.shape[0]) if proj is not None else None,
        "has_decoder": any(k.startswith("text_decoder.") for k in state),
    }


def albef_key(key: str, *, text_layers: int, with_decoder: bool) -> str | None:
    """The :class:`AlbefModel` state key an ALBEF checkpoint ``key`` maps to (the table in the
    module docstring); ``None`` when the key is ignored; ``""`` when it is unknown."""
    if any(p.fullmatch(key) for p in IGNORED):
        return None
    if key.startswith("visual_encoder."):
        return "visual." + key[len("visual_encoder.") :]
    match = _TEXT_EMBEDDINGS.fullmatch(key)
    if match:
        return f"text.embeddings.{match.group(1)}"
    match = _TEXT_LAYER.fullmatch(key)
    if match:
        i, rest = int(match.group(1)), match.group(2)
        return f"text.encoder.layer.{i}.{rest}" if i < text_layers else f"fusion.layer.{i - text_layers}.{rest}"
    if key.startswith(("text_decoder.bert.", "text_decoder.cls.predictions.")):
        return "decoder." + key[len("text_decoder.") :] if with_decoder else None
    if key.startswith(("vision_proj.", "text_proj.")):
        return key
    return ""


def interpolate_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, W) -> (1, 1 + grid*grid, W): the CLS position kept, the g x g patch
    positions resized bicubically (``align_corners=False``, no antialias), as ALBEF's
    ``models/vit.py`` ``interpolate_pos_embed``."""
    old = int(round((pos.shape[1] - 1) ** 0.5))
    if old == grid:
        return pos
    width = pos.shape[-1]
    cls, patches = pos[:, :1], pos[:, 1:]
    patches = patches.reshape(1, old, old, width).permute(0, 3, 1, 2).float()  # (1, W, g, g)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, width).to(pos.dtype)  # (1, grid^2, W)
    return torch.cat([cls, patches], dim=1)


@torch.no_grad()
def load_albef_weights(model: AlbefModel, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Copy an ALBEF state dict into ``model`` through the key map, strictly (see module)."""
    cfg = model.cfg
    target = model.state_dict()  # tied tensors appear under each of their names
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        name = albef_key(key, text_layers=cfg.text_layers, with_decoder=model.decoder is not None)
        if name is None:
            continue
        if name == "" or name not in target:
            unknown.append(key)
            continue
        mapped[name] = value
    if "visual.pos_embed" in mapped:
        mapped["visual.pos_embed"] = interpolate_pos_embed(mapped["visual.pos_embed"], cfg.grid)

    ties = _ties(target)
    for name, source_name in ties.items():  # a tied copy: equal to its source, or filled by it
        if name in mapped and source_name in mapped and not torch.equal(mapped[name], mapped[source_name]):
            raise UsageError(f"{source}: {name} and {source_name} are tied in ALBEF but differ in the checkpoint")
        if name not in mapped and source_name in mapped:
            mapped[name] = mapped[source_name]
        if source_name not in mapped and name in mapped:
            mapped[source_name] = mapped[name]
    missing = sorted(set(target) - set(mapped))
    wrong = sorted(k for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape))
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unexpected key(s) ({_few(unknown)})")
    if missing:
        problems.append(f"{len(missing)} parameter(s) missing ({_few(missing)})")
    if wrong:
        problems.append(
            f"{len(wrong)} shape mismatch(es) ("
            + ", ".join(f"{k} {tuple(mapped[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:3])
            + ")"
        )
    if problems:
        raise UsageError(f"{source} is not an ALBEF checkpoint of this architecture: " + "; ".join(problems))
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in mapped.items()}, strict=True)


def _ties(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{name: first name}`` for state entries sharing storage with an earlier entry."""
    first: dict[tuple[int, tuple[int, ...]], str] = {}
    ties: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in first:
            ties[name] = first[key]
        else:
            first[key] = name
    return ties


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
