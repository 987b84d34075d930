"""Frozen image(+text) encoders: a registry of names, their families, tensor preprocessing.

``get_encoder("clip-b16")`` builds OpenAI CLIP ViT-B/16 through open_clip;
``get_encoder("open_clip:ViT-L-14", "laion2b_s32b_b82k")`` any supported open_clip model and
tag; ``get_encoder("vitg")`` / ``get_encoder("blip")`` the BLIP family's vision towers through
transformers. ``weights`` may also be a checkpoint path (file, or a ``save_pretrained`` folder
for the transformers families) or ``random[:SEED]``. See :mod:`.registry`, :mod:`.weights`,
:mod:`.hf_weights`, :mod:`.open_clip_encoder`, :mod:`.hf_vision`, :mod:`.preprocess` and
docs/encoders.md.
"""

from vqacache.featurize.encoders.base import Encoder
from vqacache.featurize.encoders.registry import (
    ENCODERS,
    REGISTERED,
    EncoderEntry,
    get_encoder,
    list_encoders,
    resolve_name,
)

__all__ = ["ENCODERS", "Encoder", "EncoderEntry", "REGISTERED", "get_encoder", "list_encoders", "resolve_name"]
