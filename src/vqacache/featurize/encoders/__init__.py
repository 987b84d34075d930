"""Frozen image(+text) encoders: a registry of names, open_clip CLIP models, tensor preprocessing.

``get_encoder("clip-b16")`` builds OpenAI CLIP ViT-B/16 through open_clip;
``get_encoder("open_clip:ViT-L-14", "laion2b_s32b_b82k")`` any supported open_clip model and
tag; ``weights`` may also be a checkpoint path or ``random[:SEED]``. See :mod:`.registry`,
:mod:`.weights`, :mod:`.open_clip_encoder`, :mod:`.preprocess`.
"""

from vqacache.featurize.encoders.base import Encoder
from vqacache.featurize.encoders.registry import REGISTERED, EncoderEntry, get_encoder, list_encoders, resolve_name

__all__ = ["Encoder", "EncoderEntry", "REGISTERED", "get_encoder", "list_encoders", "resolve_name"]
