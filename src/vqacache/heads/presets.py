"""Named training settings from the papers (``vqa-train-head --preset NAME``).

A preset fixes a method, method arguments and training settings (optimiser, learning rate,
epochs, batch size); anything given explicitly on the command line wins over it. Each value
says where it comes from: the paper's table, or this project's choice where the paper is silent.

* ``sparc-hga``: SpARC around HGA on NExT-QA, Table 6 column 1: Adam, lr 1e-4, 60 epochs,
  16 frames, batch 256, mixup with alpha = beta = 0.1; w_c = w_s = 1 (A.5).
* ``sparc-hga-agqa``: Table 6 column 3 (AGQA 2.0): Adam, lr 1e-4, 10 epochs, 8 frames,
  batch 256, no augmentation.
* ``hga`` and ``hga-agqa``: the backbone alone with the same settings (the baseline rows).

This project's choices in all of them: weight decay 0, no warm-up (the loop's linear decay to
0 follows; the paper names no schedule), Temporal Guided Mixup on every batch when the table
says augmentation is used (``mixup_prob`` 1), the causal threshold t = 0.5 (not given).
VGT (Table 6 column 2) is not a backbone here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vqacache.cache_spec.errors import UnknownName, UsageError


@dataclass(frozen=True)
class Preset:
    """``method``; ``args``: method arguments; ``train``: :class:`~vqacache.heads.train.TrainConfig`
    fields (epochs, batch_size, lr, weight_decay, warmup, optimizer); ``source``: where from."""

    name: str
    method: str
    args: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    source: str = ""


_HGA_TRAIN = {"optimizer": "adam", "lr": 1e-4, "batch_size": 256, "weight_decay": 0.0, "warmup": 0.0}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sparc-hga", "sparc",
           {"backbone": "hga", "num_frames": 16, "w_c": 1.0, "w_s": 1.0, "mixup_alpha": 0.1, "mixup_beta": 0.1,
            "mixup_prob": 1.0},
           {**_HGA_TRAIN, "epochs": 60}, "SpARC Table 6 (NExT-QA, HGA), A.5"),
    Preset("sparc-hga-agqa", "sparc",
           {"backbone": "hga", "num_frames": 8, "w_c": 1.0, "w_s": 1.0, "mixup_prob": 0.0},
           {**_HGA_TRAIN, "epochs": 10}, "SpARC Table 6 (AGQA 2.0, HGA), A.5"),
    Preset("hga", "hga", {"num_frames": 16}, {**_HGA_TRAIN, "epochs": 60}, "SpARC Table 6 (NExT-QA, HGA) without SpARC"),
    Preset("hga-agqa", "hga", {"num_frames": 8}, {**_HGA_TRAIN, "epochs": 10}, "SpARC Table 6 (AGQA 2.0, HGA) without SpARC"),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownName(f"unknown --preset {name!r}; valid: {', '.join(sorted(PRESETS))}") from None


def apply_preset(
    name: str, method: str | None, args: dict[str, Any], train: dict[str, Any],
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, method args, train settings) with the preset under the explicit values.

    ``args``: explicit method arguments; ``train``: explicit training settings (None: not given).
    A ``method`` other than the preset's is refused."""
    preset = get_preset(name)
    if method is not None and method != preset.method:
        raise UsageError(f"--preset {name} trains --method {preset.method}, not {method}")
    merged_train = {k: v for k, v in preset.train.items()}
    merged_train.update({k: v for k, v in train.items() if v is not None})
    return preset.method, {**preset.args, **args}, merged_train
