"""FeatureSpec: validation, canonical JSON round trip, fingerprint stability."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from fractions import Fraction

import pytest

from spec_factory import make_spec
from vqacache.cache_spec import FeatureSpec, OutputSpec, SamplingSpec, SpecError, WeightsSpec

# The fingerprint of make_spec() as computed when format v1 was released. If this changes,
# every existing cache in every lab is silently orphaned: bump FORMAT_VERSION instead.
V1_FINGERPRINT = "1fa68c34b18b3832ad673b699e7c7be95f6bb5c7d6c256eb8c2fafe115dc4d59"


def test_round_trip_dict_and_json():
    spec = make_spec()
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert FeatureSpec.from_json(json.dumps(spec.to_dict(), indent=2)) == spec


def test_canonical_json_is_sorted_and_compact():
    text = make_spec().to_json()
    assert " " not in text and "\n" not in text
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), sort_keys=True))
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_fingerprint_is_pinned():
    assert make_spec().fingerprint() == V1_FINGERPRINT


def test_fingerprint_stable_in_fresh_process():
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from spec_factory import make_spec; print(make_spec().fingerprint())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}
    )
    assert out.stdout.strip() == make_spec().fingerprint()


def test_every_semantic_field_changes_the_fingerprint():
    base = make_spec()
    p = base.preprocess
    variants = [
        make_spec(encoder="clip-b32"),
        make_spec(architecture="open_clip:ViT-B-32"),
        make_spec(weights=WeightsSpec("random", "random:1")),
        make_spec(weights=WeightsSpec("pretrained", "openai")),
        make_spec(weights=WeightsSpec("file", "sha256:" + "0" * 64)),
        make_spec(preprocess=dataclasses.replace(p, decode_short_side=None)),
        make_spec(preprocess=dataclasses.replace(p, decode_short_side=320)),
        make_spec(preprocess=dataclasses.replace(p, interpolation="bilinear")),
        make_spec(preprocess=dataclasses.replace(p, crop="none")),
        make_spec(preprocess=dataclasses.replace(p, mean=(0.5, 0.5, 0.5))),
        make_spec(preprocess=dataclasses.replace(p, antialias=False)),
        make_spec(sampling=SamplingSpec("1")),
        make_spec(patches=False),
        make_spec(outputs=dataclasses.replace(base.outputs, patch_pool=2)),
        make_spec(outputs=dataclasses.replace(base.outputs, cls_hidden=None)),
        make_spec(dtype="float32"),
        make_spec(compute_dtype="bfloat16"),
        make_spec(extra={"quick_gelu": True}),
    ]
    prints = {v.fingerprint() for v in variants}
    assert len(prints) == len(variants)
    assert base.fingerprint() not in prints


def test_fps_is_exact_whatever_the_spelling():
    assert SamplingSpec(7.5) == SamplingSpec("15/2") == SamplingSpec("7.5") == SamplingSpec(Fraction(15, 2))
    assert SamplingSpec(7.5).fps == "15/2"
    assert SamplingSpec("30000/1001").fps_fraction == Fraction(30000, 1001)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(dtype="int8"), "dtype"),
        (lambda d: d["weights"].update(source="magic"), "source"),
        (lambda d: d["weights"].update(source="random", identity="seed0"), "random:<seed>"),
        (lambda d: d["sampling"].update(fps="-1"), "fps"),
        (lambda d: d["sampling"].update(fps="fast"), "fps"),
        (lambda d: d["preprocess"].update(crop_size=0), "crop_size"),
        (lambda d: d["preprocess"].update(mean=[0.5, 0.5]), "mean"),
        (lambda d: d["outputs"].update(patch_pool=True), "patch_pool"),
        (lambda d: d.update(surprise=1), "unknown field"),
        (lambda d: d["outputs"].pop("cls"), "lacks field"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(mutate, message):
    d = make_spec().to_dict()
    mutate(d)
    with pytest.raises(SpecError, match=message):
        FeatureSpec.from_dict(d)


def test_spec_error_is_a_value_error():
    with pytest.raises(ValueError):
        FeatureSpec.from_json("{not json")


def test_diff_names_the_changed_fields():
    a, b = make_spec(), make_spec(dtype="float32", sampling=SamplingSpec(5))
    assert a.diff(b) == ["dtype: 'float16' != 'float32'", "sampling.fps: '15/2' != '5/1'"]


def test_output_spec_patches_flag():
    assert make_spec().outputs.patches and not make_spec(patches=False).outputs.patches
    assert isinstance(make_spec().outputs, OutputSpec)
