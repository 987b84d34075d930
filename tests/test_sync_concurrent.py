"""Several ``vqa-cache sync`` runs (and featurize writers) into one local destination at once.

A sync claims each video's lease at the destination (the featurize writers' leases,
``<store>.leases/``) before copying it: a video another live process holds is not copied
while it is held; the sync copies everything else, then waits for it, and copies it once the
holder lets go without publishing, or counts it as skipped when the holder published it. Two
syncs started together end with every video copied exactly once between them and a clean
destination equal to the source. (Concurrent syncs into one S3 bucket: tests/test_sync.py.)

Mutations tried (each makes a test here fail):
1. no lease claimed (every video copied at once) -> all three tests;
2. no second look at the destination after the claim -> test_the_holders_copy_stands (copied
   again) and test_two_syncs_at_once (copied twice);
3. held videos dropped after the first pass instead of waited for -> test_a_held_video_is_waited_for
   and test_the_holders_copy_stands.
"""

from __future__ import annotations

import threading

import pytest

from vqacache.cache_spec import open_store, verify_store
from vqacache.cache_spec import sync as sync_mod
from vqacache.cache_spec.diff import diff_stores
from vqacache.cache_spec.lease import try_claim
from vqacache.cache_spec.sync import sync_stores
from vqacache.heads.synthetic import make_temporal_store


@pytest.fixture
def source(tmp_path):
    return make_temporal_store(tmp_path / "src.zarr", splits={"train": 2, "val": 1}, n_frames=10, dim=8, n_patches=2)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(sync_mod, "WAIT_POLL_S", 0.05)


def _clean_copy(source, dst) -> None:
    store = open_store(dst)
    assert verify_store(store).clean and store.temporaries() == []
    assert diff_stores(source, store).equal and store.questions() == source.questions()


def _sync_in_thread(source, dst):
    """Start a sync; returns (thread, result dict, event set once the sync waits for a held video)."""
    result: dict = {}
    waiting = threading.Event()

    def progress(line: str) -> None:
        if "held by another process" in line:
            waiting.set()

    def run() -> None:
        try:
            result["report"] = sync_stores(source.path, dst, progress)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result, waiting


def test_a_held_video_is_waited_for(source, tmp_path):
    dst = tmp_path / "dst.zarr"
    held = source.complete_videos()[1]
    lease = try_claim(dst, held, "another sync", ttl_s=60)  # a live holder at the destination
    assert lease is not None
    thread, result, waiting = _sync_in_thread(source, dst)
    assert waiting.wait(30), result
    partial = open_store(dst)
    assert held not in partial.complete_videos() and len(partial.complete_videos()) == 2  # the others copied
    lease.release()  # the holder gives up without publishing
    thread.join(30)
    assert not thread.is_alive() and "error" not in result, result
    report = result["report"]
    assert report.videos_waited == 1 and sorted(report.videos_copied) == source.complete_videos()
    _clean_copy(source, dst)


def test_the_holders_copy_stands(source, tmp_path, monkeypatch):
    dst = tmp_path / "dst.zarr"
    held = source.complete_videos()[0]
    lease = try_claim(dst, held, "another sync", ttl_s=60)
    thread, result, waiting = _sync_in_thread(source, dst)
    assert waiting.wait(30), result
    copies = []
    real = sync_mod._copy_group
    monkeypatch.setattr(sync_mod, "_copy_group", lambda *a, **k: (copies.append(a[3]), real(*a, **k)))
    real(source, sync_mod._Side(source.path), sync_mod._Side(dst), ("videos", held), sync_mod.SyncReport(),
         replace_existing=False)  # the holder publishes its copy
    lease.release()
    thread.join(30)
    assert not thread.is_alive() and "error" not in result, result
    report = result["report"]
    assert held not in report.videos_copied and report.videos_skipped == 1
    assert [parts for parts in copies if parts[0] == "videos"] == []  # nothing copied after the holder published
    _clean_copy(source, dst)


def test_two_syncs_at_once(source, tmp_path, monkeypatch):
    dst = tmp_path / "dst.zarr"
    sync_stores(source.path, dst)  # the root exists; two runs now race over the videos of a fresh copy
    for video_id in source.complete_videos():
        sync_mod.remove_tree(dst / "videos" / video_id)
    start, started = threading.Barrier(2), set()
    real = sync_mod._sync_video

    def together(*args):  # both runs reach the first video before either copies it (once each)
        if threading.get_ident() not in started:
            started.add(threading.get_ident())
            start.wait(10)
        return real(*args)

    monkeypatch.setattr(sync_mod, "_sync_video", together)
    runs = [_sync_in_thread(source, dst) for _ in range(2)]
    for thread, result, _ in runs:
        thread.join(60)
        assert not thread.is_alive() and "error" not in result, result
    copied = [v for _, result, _ in runs for v in result["report"].videos_copied]
    assert sorted(copied) == source.complete_videos()  # each video copied exactly once between them
    _clean_copy(source, dst)
