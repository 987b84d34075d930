"""Today's reader must open the frozen format-v1 store and read the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fixtures.make_format_v1 import fixture_video
from spec_factory import make_spec
from test_spec import V1_FINGERPRINT
from vqacache.cache_spec import open_store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format_v1.zarr"


def test_reader_opens_format_v1():
    store = open_store(FIXTURE)
    assert store.fingerprint == V1_FINGERPRINT and store.spec == make_spec() and store.dataset == "fixture"
    assert store.complete_videos() == ["clip/a b"]
    assert store.failures() == {"broken": "unreadable: not a video file"}
    got, want = store.read_video("clip/a b"), fixture_video()
    for name in ("cls", "cls_hidden", "patch"):
        np.testing.assert_array_equal(got[name], want[name].astype(np.float16))
    for name in ("pts", "src_index", "is_repeat"):
        np.testing.assert_array_equal(got[name], want[name])
    assert store.verify_video("clip/a b")
    q = store.read_question("clip/a b_1")
    assert q.candidates == ("one",) and q.start == 0.5 and q.text_tokens.shape == (2, 6)


def test_fixture_fingerprint_recomputed_in_fresh_process():
    meta = json.loads((FIXTURE / "zarr.json").read_text())["attributes"]["vqacache"]
    code = (
        "import json,sys; from vqacache.cache_spec import FeatureSpec;"
        "print(FeatureSpec.from_dict(json.load(sys.stdin)).fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(meta["spec"]), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == meta["fingerprint"] == V1_FINGERPRINT
