"""Pretrained open_clip weights are identified by the sha256 of the file actually loaded, not
by their tag alone: a re-released or corrupted file under the same tag must give another
fingerprint, so it never writes into the store of the old bytes.

Offline throughout: a tiny open_clip config, its random weights saved as the "pretrained"
file of a test tag planted where open_clip's cache lookup finds it (a Hugging Face hub cache
in a tmp dir, or the URL download cache under a tmp ``HOME``).

Planted mistakes these tests catch (each was planted and a test failed):

1. ``resolve_weights`` recording the tag only (``WeightsSpec("pretrained", tag)``, the old
   identity): the two files under one tag share a fingerprint ->
   ``test_two_files_under_one_tag_give_two_fingerprints`` fails.
2. ``sha256_file_cached`` keyed by path only (no size/mtime): the file rewritten in place keeps
   its stale hash -> the same test fails.
3. ``_url_sha256_prefix`` forgetting mlfoundations' rule (returns ""): a corrupted file in the
   URL cache is used instead of refused -> ``test_url_cache_file_is_checked_and_hashed`` fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import open_clip
from vqacache.cache_spec.errors import UsageError
from vqacache.cache_spec.spec import SamplingSpec
from vqacache.featurize.encoders import get_encoder
from vqacache.featurize.encoders import weights as weights_mod

TINY = "vqacache-tiny-ident"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
TAG_CFG = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear", "resize_mode": "shortest"}
SAMPLING = SamplingSpec("15/2")
COMMIT = "0" * 40


@pytest.fixture(scope="module")
def state_dicts(tmp_path_factory) -> tuple[dict, dict]:
    """Two different weight sets of the tiny model (random:0, random:1)."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    return tuple(dict(get_encoder(f"open_clip:{TINY}", f"random:{s}").model.state_dict()) for s in (0, 1))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty hub cache and URL cache under tmp_path, offline; returns the hub cache dir."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.cache/clip: open_clip's URL cache
    return hub


def _tag(monkeypatch, cfg: dict) -> None:
    from open_clip import pretrained as oc_pretrained

    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"testtag": {**TAG_CFG, **cfg}})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_files_under_one_tag_give_two_fingerprints(monkeypatch, offline, state_dicts):
    from safetensors.torch import save_file

    _tag(monkeypatch, {"url": "", "hf_hub": "vqacache/tiny-ident/"})
    snap = offline / "models--vqacache--tiny-ident" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (offline / "models--vqacache--tiny-ident" / "refs").mkdir()
    (offline / "models--vqacache--tiny-ident" / "refs" / "main").write_text(COMMIT)
    file = snap / "open_clip_model.safetensors"

    save_file(state_dicts[0], file)
    first = get_encoder(f"open_clip:{TINY}", "testtag")
    spec1 = first.feature_spec(SAMPLING)
    assert spec1.weights.source == "pretrained" and spec1.weights.identity == f"testtag@sha256:{_sha(file)}"

    mtime = file.stat().st_mtime_ns
    save_file(state_dicts[1], file)  # same tag, same path, same size: other bytes (a re-release)
    os.utime(file, ns=(mtime + 10**9, mtime + 10**9))  # a later write (coarse clocks may not tick)
    second = get_encoder(f"open_clip:{TINY}", "testtag")
    spec2 = second.feature_spec(SAMPLING)
    assert spec2.weights.identity == f"testtag@sha256:{_sha(file)}"
    assert spec1.fingerprint() != spec2.fingerprint()
    assert not torch.equal(first.model.visual.proj, second.model.visual.proj)  # the numbers did change

    # the same bytes again: the same fingerprint (content, not the path or the load, decides)
    again = get_encoder(f"open_clip:{TINY}", "testtag").feature_spec(SAMPLING)
    assert again.fingerprint() == spec2.fingerprint()


def test_each_file_is_hashed_once_per_process(monkeypatch, tmp_path):
    calls: list[str] = []
    real = weights_mod.sha256_file
    monkeypatch.setattr(weights_mod, "sha256_file", lambda p, *a: calls.append(str(p)) or real(p, *a))
    monkeypatch.setattr(weights_mod, "_HASHED", {})
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    link = tmp_path / "link.bin"
    link.symlink_to(path)  # the hub cache: snapshot links to a blob
    assert weights_mod.sha256_file_cached(path) == weights_mod.sha256_file_cached(link) == _sha(path)
    assert len(calls) == 1
    path.write_bytes(b"abcd")  # rewritten: hashed again
    assert weights_mod.sha256_file_cached(link) == _sha(path) and len(calls) == 2


def test_url_cache_file_is_checked_and_hashed(monkeypatch, offline, tmp_path, state_dicts):
    """A tag without a hub copy: the URL download cache, with the sha256 prefix its URL names."""
    cache = tmp_path / "home" / ".cache" / "clip"
    cache.mkdir(parents=True)
    good = cache / "good.pt"
    torch.save(state_dicts[0], good)
    prefix = _sha(good)[:8]
    named = cache / f"tiny-{prefix}.pt"
    good.rename(named)
    _tag(monkeypatch, {"url": f"https://github.com/mlfoundations/x/releases/tiny-{prefix}.pt", "hf_hub": ""})
    resolved = weights_mod.resolve_weights(TINY, "testtag", None, what=TINY)
    assert resolved.path == named and resolved.spec.identity == f"testtag@sha256:{_sha(named)}"

    data = named.read_bytes()
    mtime = named.stat().st_mtime_ns
    named.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # corrupted in place: its sha256 no longer matches
    os.utime(named, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(UsageError, match="--weights") as info:
        weights_mod.resolve_weights(TINY, "testtag", None, what=TINY)
    assert "\n" not in str(info.value)


def test_missing_file_is_the_one_line_offline_error(monkeypatch, offline, state_dicts):
    _tag(monkeypatch, {"url": "", "hf_hub": "vqacache/not-cached/"})
    with pytest.raises(UsageError) as info:
        get_encoder(f"open_clip:{TINY}", "testtag")
    message = str(info.value)
    assert "\n" not in message and "--weights" in message and f"{TINY}/testtag" in message
