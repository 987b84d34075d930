"""Per-video isolation and lease heartbeats in stage one (issue 10, defect 3 and ``--lease-ttl``).

Before: only ``DecodeError`` was caught in ``run_shard``; a non-finite output, an encoder error
or a lost lease escaped, ``abort()`` deleted every open group (including ones another run
owned) and the run died; leases were renewed only between decoded chunks, so a lone run with a
3-second lease died with ``LeaseLost``. Mutations tried, each made a test here fail:
- ``_VideoSink.append`` without its ``except`` (the non-finite video kills the run);
- ``FrameBatcher`` ignoring ``on_error`` (the out-of-memory batch kills the run);
- ``_Sink.add`` not checking ``lease.lost`` and ``_finish`` treating ``LeaseLost`` as a failure
  (the taken-over video is recorded as failed and the exit code is 3);
- no ``Heartbeat`` around the shard (the slow-encoder run loses its videos).
"""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from vqacache.cache_spec import open_store, verify_store
from vqacache.cache_spec.video_writer import VideoWriter
from vqacache.cli.featurize import app as featurize_app
from vqacache.featurize import shard as shard_mod

runner = CliRunner()


def featurize(demo_root, tiny_clip, cache, *extra: str):
    args = ["--dataset", "demo", "--data-root", str(demo_root), "--encoder", tiny_clip, "--weights", "random",
            "--cache-root", str(cache), "--split", "val", "--workers", "0", "--batch-size", "4", *extra]
    return runner.invoke(featurize_app, args, catch_exceptions=False)


def the_store(cache):
    (path,) = sorted(cache.glob("*/*.zarr"))
    return open_store(path)


@pytest.fixture(scope="module")
def val_ids(demo_root):
    from vqacache.featurize.datasets import get_dataset

    return sorted(v.video_id for v in get_dataset("demo", demo_root).videos("val"))


def test_a_non_finite_video_fails_alone(tmp_path, demo_root, tiny_clip, val_ids, monkeypatch):
    victim = val_ids[1]
    append = VideoWriter.append

    def poisoned(self, **blocks):
        if self.video_id == victim:
            blocks["cls"] = blocks["cls"] * float("nan")
        return append(self, **blocks)

    monkeypatch.setattr(VideoWriter, "append", poisoned)
    result = featurize(demo_root, tiny_clip, tmp_path)
    assert result.exit_code == 3, result.output
    store = the_store(tmp_path)
    assert store.complete_videos() == [v for v in val_ids if v != victim]
    assert store.failures()[victim].startswith("ValueError: refusing to store non-finite")
    assert verify_store(store).clean and store.temporaries() == []


def test_an_encoder_error_fails_only_the_videos_of_its_batch(tmp_path, demo_root, tiny_clip, val_ids, monkeypatch):
    encode = shard_mod._Sink._encode
    calls = {"n": 0}

    def out_of_memory_once(self, frames):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return encode(self, frames)

    monkeypatch.setattr(shard_mod._Sink, "_encode", out_of_memory_once)
    result = featurize(demo_root, tiny_clip, tmp_path)
    assert result.exit_code == 3, result.output
    store = the_store(tmp_path)
    failed = store.failures()
    assert 1 <= len(failed) <= 2 and all(r.startswith("OutOfMemoryError: encoder: CUDA out of memory") for r in failed.values())
    assert sorted([*store.complete_videos(), *failed]) == val_ids and store.temporaries() == []
    monkeypatch.undo()
    again = featurize(demo_root, tiny_clip, tmp_path, "--retry-failed")
    assert again.exit_code == 0, again.output
    assert the_store(tmp_path).complete_videos() == val_ids and the_store(tmp_path).failures() == {}


def test_a_video_taken_over_by_another_run_is_dropped_silently(tmp_path, demo_root, tiny_clip, val_ids, monkeypatch):
    """Mid-video, another run takes the lease (as after a stall): this run drops the video,
    counts it as lost, leaves the other run's lease alone and exits 0."""
    victim = val_ids[0]
    append = VideoWriter.append
    taken = {}

    def taken_over(self, **blocks):
        if self.video_id == victim and not taken:
            store = open_store(the_store(tmp_path).path, "a")
            store.break_lease(victim, self.lease.owner)
            taken["lease"] = store.claim(victim, "another-run", ttl_s=600)
        return append(self, **blocks)

    monkeypatch.setattr(VideoWriter, "append", taken_over)
    result = featurize(demo_root, tiny_clip, tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 lost to another run" in result.output
    store = the_store(tmp_path)
    assert store.complete_videos() == [v for v in val_ids if v != victim] and store.failures() == {}
    assert store.leases()[victim]["token"] == taken["lease"].token and store.temporaries() == []


def test_a_heartbeat_keeps_short_leases_alive_through_slow_batches(tmp_path, demo_root, tiny_clip, val_ids, monkeypatch):
    """A 3 s lease and an encoder batch that takes 4.5 s: renewals come from the heartbeat
    thread, not from between chunks, so nothing is lost."""
    encode = shard_mod._Sink._encode
    calls = {"n": 0}

    def slow_first_batch(self, frames):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(4.5)
        return encode(self, frames)

    monkeypatch.setattr(shard_mod._Sink, "_encode", slow_first_batch)
    result = featurize(demo_root, tiny_clip, tmp_path, "--lease-ttl", "3")
    assert result.exit_code == 0, result.output
    assert "lost" not in result.output
    assert the_store(tmp_path).complete_videos() == val_ids
