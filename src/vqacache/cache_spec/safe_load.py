"""One line for a refused ``torch.load(weights_only=True)``, shared by every loader of a file
a user hands us (head checkpoints, open_clip / ALBEF / Hugging Face weight files).

torch's message frames the refusal with lines that are not for our users (one advises
retrying with ``weights_only=False``, i.e. running the file's code) and with terminal colour
codes; what remains says what was refused (``Unsupported global: GLOBAL posix.system``).
"""

from __future__ import annotations

import pickle
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                "In PyTorch 2.6", "(1) In PyTorch", "(2) Alternatively", "This file can still be loaded")


def load_error_reason(exc: BaseException) -> str:
    """The line of a ``torch.load`` error that says what was refused (no advice to unpickle)."""
    for line in _ANSI.sub("", str(exc)).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(_BOILERPLATE):
            return line if isinstance(exc, pickle.UnpicklingError) else f"{type(exc).__name__}: {line}"
    return type(exc).__name__
