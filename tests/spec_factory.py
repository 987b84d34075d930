"""A small valid FeatureSpec for tests that need one without an encoder."""

from __future__ import annotations

from vqacache.cache_spec import FeatureSpec, OutputSpec, PreprocessSpec, SamplingSpec, WeightsSpec


def make_spec(patches: bool = True, seed: int = 0, **changes) -> FeatureSpec:
    fields = dict(
        encoder="clip-b16",
        architecture="open_clip:ViT-B-16",
        weights=WeightsSpec("random", f"random:{seed}"),
        preprocess=PreprocessSpec(
            decode_short_side=256,
            decode_interpolation="bilinear",
            resize_short_side=224,
            interpolation="bicubic",
            crop="center",
            crop_size=224,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
        ),
        sampling=SamplingSpec("7.5"),
        outputs=OutputSpec(
            cls="image-embedding",
            cls_hidden="post-ln-cls",
            patch_layer="post-ln" if patches else None,
            patch_pool=1,
            text="clip-text",
            text_context=77,
        ),
    )
    fields.update(changes)
    return FeatureSpec(**fields)
