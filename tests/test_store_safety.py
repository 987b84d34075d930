"""What a shared cache must survive: stalled writers, crashes mid-publish, hostile ids, duplicate
question ids (issue 10, defects 1, 2, 5, 6, 7 and the smaller ones of 9).

Each test failed on the code before publish-by-rename (in-place writes, delete-then-rename
bundles, unbounded keys, last-qid-wins index, ``os.replace`` renewals). Mutations tried, each
made a test here fail:
- ``VideoWriter.commit`` without its ``lease.renew()``: the stalled writer publishes
  (test_a_writer_whose_lease_was_taken_publishes_nothing);
- ``publish`` treating an existing final group as success: A's rows "win"
  (test_two_writers_publishing_one_video_exactly_one_wins);
- ``abort`` removing the final group instead of the temporary (test_stalled_writer_cannot_delete...);
- ``replace`` deleting the old bundle before renaming the new one in, with the rename failing
  (test_a_failed_bundle_publish_keeps_the_old_bundle);
- ``id_to_key`` without the hash step (test_long_unicode_ids_get_bounded_keys);
- ``Lease.renew`` checking the token and then overwriting with ``os.replace``
  (test_a_renewal_after_a_stall_never_overwrites_the_new_holder);
- ``_take_ticket`` deleting a ticket it found stale and re-creating it, as before
  (test_two_stealers_never_both_hold_a_ticket).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from spec_factory import make_spec
from test_lease import _stall
from test_store import E, fake_video, write
from vqacache.cache_spec import LeaseLost, StoreError, id_to_key, open_store, store_path, verify_store
from vqacache.cache_spec import store as store_mod
from vqacache.cache_spec import layout
from vqacache.cache_spec import lease as lease_mod
from vqacache.cache_spec import publish as publish_mod
from vqacache.cache_spec.keys import MAX_KEY_CHARS, is_hashed_key
from vqacache.cache_spec.lease import _take_ticket, read_lease
from vqacache.cache_spec.verify import remove_stale_temporaries


@pytest.fixture
def store(tmp_path):
    spec = make_spec()
    return open_store(store_path(tmp_path, "demo", spec.encoder, spec.fingerprint()), "a", spec=spec, dataset="demo")




def _rows(video, a, b):
    return {k: v[a:b] for k, v in video.items()}


def test_stalled_writer_cannot_mix_rows_into_a_finished_video(store):
    """Defect 1: A writes 20 frames, stalls past its lease; B takes over, writes 10 frames and
    completes; A resumes and finishes. B's video stands alone: 10 frames, checksum good."""
    a_video, b_video = fake_video(30, seed=1), fake_video(10, seed=2)
    a = store.claim("w", "A", ttl_s=30, grace_s=0)
    writer_a = store.begin_video("w", lease=a)
    writer_a.append(**_rows(a_video, 0, 20))
    _stall(a)  # A stalls
    b = store.claim("w", "B", ttl_s=30, grace_s=0)
    assert b is not None
    with store.write_video("w", lease=b) as writer_b:
        writer_b.append(**b_video)
    writer_a.append(**_rows(a_video, 20, 30))  # A resumes ...
    with pytest.raises(LeaseLost):
        writer_a.commit()  # ... and is told, with nothing of its published
    v = store.read_video("w")
    assert v.attrs["n_frames"] == 10 and len(v.cls) == 10 and store.verify_video("w")
    np.testing.assert_array_equal(v.cls, b_video["cls"].astype(np.float16))
    assert store.temporaries() == []


def test_stalled_writer_cannot_delete_a_finished_video(store):
    """Defect 2: as above, but A then fails (a decode error): B's video survives."""
    a = store.claim("w", "A", ttl_s=30, grace_s=0)
    writer_a = store.begin_video("w", lease=a)
    writer_a.append(**fake_video(20, seed=1))
    _stall(a)
    b = store.claim("w", "B", ttl_s=30, grace_s=0)
    write_b = fake_video(10, seed=2)
    with store.write_video("w", lease=b) as w:
        w.append(**write_b)
    writer_a.abort()  # the decode error's clean-up
    assert store.is_complete("w") and store.verify_video("w") and len(store.read_video("w").cls) == 10
    assert store.temporaries() == []


def test_a_writer_whose_lease_was_taken_publishes_nothing(store):
    """A stalls past its lease and B takes the video over (B has not written yet): A's commit
    checks its lease, fails, and leaves the key free for B."""
    a = store.claim("w", "A", ttl_s=30, grace_s=0)
    writer_a = store.begin_video("w", lease=a)
    writer_a.append(**fake_video(5))
    _stall(a)
    assert store.claim("w", "B", ttl_s=30, grace_s=0) is not None
    with pytest.raises(LeaseLost, match="taken over"):
        writer_a.commit()
    assert not store.is_complete("w") and store.temporaries() == []


def test_two_writers_publishing_one_video_exactly_one_wins(store):
    """No lease at all (the worst case): both build complete temporaries; the first rename
    publishes, the second finds the key taken, removes its temporary and is told."""
    first, second = fake_video(6, seed=1), fake_video(9, seed=2)
    w1, w2 = store.begin_video("v"), store.begin_video("v")
    w1.append(**first)
    w2.append(**second)
    w2.commit()
    with pytest.raises(LeaseLost, match="published by another writer"):
        w1.commit()
    assert len(store.read_video("v").cls) == 9 and store.verify_video("v")
    assert store.temporaries() == [] and store.complete_videos() == ["v"]


def test_readers_never_see_a_video_being_written(store):
    writer = store.begin_video("v")
    writer.append(**fake_video(5))
    assert store.complete_videos() == [] and store.incomplete_videos() == [] and not store.is_complete("v")
    assert len(store.temporaries()) == 1
    writer.commit()
    assert store.complete_videos() == ["v"] and store.temporaries() == []


def test_a_failed_bundle_publish_keeps_the_old_bundle(store, monkeypatch):
    """Defect 7: replacing a bundle renames the old one aside first; if publishing the new one
    fails, the error propagates (never swallowed) and nothing is lost on disk."""
    entries = [{"qid": "q1", "question": "what?", "candidates": ["a", "b"], "answer": 0}]
    arrays = {"text": np.ones((1, E), np.float32), "text_len": np.array([1]), "text_tokens": np.ones((1, 1, 12), np.float32)}
    store.write_questions("val", "v", entries, arrays)
    real_rename = os.rename

    def failing_rename(src, dst):
        if os.path.basename(str(src)).startswith(".tmp-"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(publish_mod.os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space"):
        store.write_questions("val", "v", entries, {**arrays, "text": np.zeros((1, E), np.float32)})
    monkeypatch.undo()
    store = open_store(store.path)
    assert float(store.read_question("q1").text[0]) == 1.0  # the old bundle is back in place
    assert store.temporaries() == []  # the new one's temporary removed, nothing left aside


def test_replacing_a_bundle_is_atomic_for_readers(store):
    entries = [{"qid": "q1", "question": "what?", "candidates": ["a", "b"], "answer": 0}]
    for value in (1.0, 2.0):
        store.write_questions("val", "v", entries, {"text": np.full((1, E), value, np.float32), "text_len": np.array([1]),
                                                    "text_tokens": np.ones((1, 1, 12), np.float32)})
    assert float(store.read_question("q1").text[0]) == 2.0
    assert [p.name for p in (store.path / layout.QUESTIONS / "val").iterdir() if p.is_dir()] == [id_to_key("v")]


@pytest.mark.parametrize("vid", ["影" * 60, "视频/" * 60 + "clip", "x" * 600, "a%~b" * 50])
def test_long_unicode_ids_get_bounded_keys(store, vid):
    """Defect 6: a 180-byte Chinese id was a 540-byte file name (OSError: File name too long)."""
    key = id_to_key(vid)
    assert len(key.encode()) <= MAX_KEY_CHARS + 2 and "/" not in key
    write(store, vid, fake_video(3))
    assert store.complete_videos() == [vid] and store.read_video(vid).video_id == vid
    lease = store.claim(vid, "A", ttl_s=5)
    assert lease is not None and read_lease(store.path, vid)["video_id"] == vid
    lease.release()
    store.record_failure(vid, "decode-error", "x")
    assert list(store.failures()) == [vid]


def test_hashed_keys_cannot_collide_with_plain_ones():
    long_id = "y" * 400
    key = id_to_key(long_id)
    assert is_hashed_key(key) and not is_hashed_key(id_to_key("y" * 100))
    assert id_to_key(long_id + "z") != key  # different ids, different hashes
    assert is_hashed_key(id_to_key("%~" * 100)) and not is_hashed_key(id_to_key("%~"))  # '%' itself is encoded


def test_duplicate_qids_in_one_bundle_are_refused_naming_both(store):
    """Defect 5: the index kept the last of two records with one qid, silently."""
    entries = [{"qid": "q1", "question": "first one?", "candidates": []},
               {"qid": "q1", "question": "second one?", "candidates": []}]
    with pytest.raises(ValueError, match="q1.*'first one\\?'.*'second one\\?'"):
        store.write_questions("val", "v", entries, {})
    assert store.questions() == []


def test_a_qid_in_two_bundles_is_an_error_naming_both(store):
    store.write_questions("val", "v1", [{"qid": "q1", "question": "a?", "candidates": []}], {})
    store.write_questions("test", "v2", [{"qid": "q1", "question": "b?", "candidates": []}], {})
    with pytest.raises(StoreError, match="q1.*'v1'.*'v2'|q1.*'v2'.*'v1'"):
        store.questions()


def test_features_support_in(store):
    write(store, "v", fake_video(3, patches=True))
    v = store.read_video("v")
    assert "patch" in v and "cls" in v and "nonsense" not in v
    store.write_questions("val", "v", [{"qid": "q", "question": "?", "candidates": []}], {})
    q = store.read_question("q")
    assert "question" in q and "cand" not in q


def test_a_renewal_after_a_stall_never_overwrites_the_new_holder(store, monkeypatch):
    """Defect 9: A passes its checks, stalls past its lease, B steals and holds the video; A's
    renewal must then fail instead of writing its record over B's."""
    a = store.claim("v", "A", ttl_s=30, grace_s=0)
    real_rename = os.rename
    stolen = {}

    def stall_then_rename(src, dst):
        if ".renew-" in os.path.basename(str(dst)) and not stolen:
            _stall(a)  # A stalls between its checks and its write ...
            stolen["b"] = store.claim("v", "B", ttl_s=30, grace_s=0)  # ... and B takes over
        return real_rename(src, dst)

    monkeypatch.setattr(lease_mod.os, "rename", stall_then_rename)
    a.record = {**a.record, "expires": time.time() + 30}  # A's own clock says it is still fine
    with pytest.raises(LeaseLost, match="taken over"):
        a.renew()
    monkeypatch.undo()
    b = stolen["b"]
    assert b is not None and read_lease(store.path, "v")["token"] == b.token
    b.renew()  # B's lease is intact and renewable


def test_two_stealers_never_both_hold_a_ticket(store, monkeypatch):
    """Defect 9: stealers P1 and P2 both find a dead stealer's ticket stale; P2 looked first,
    then P1 took its ticket before P2 acted on what it saw. P2 must get none (before: it
    deleted the 'stale' ticket, by now P1's fresh one, and took it too)."""
    path = lease_mod.lease_path(store.path, "v")
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = path.with_name(f".{path.name}.steal-T")
    dead.write_text("{}")
    os.utime(dead, (time.time() - 60, time.time() - 60))
    real_stat = Path.stat
    taken = {}

    def p1_overtakes(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)  # P2 has just seen the dead ticket's age
        if self == dead and "p1" not in taken:
            taken["p1"] = None
            taken["p1"] = _take_ticket(path, "T")  # P1 acts in between
        return result

    monkeypatch.setattr(Path, "stat", p1_overtakes)
    p2 = _take_ticket(path, "T")
    monkeypatch.undo()
    assert taken["p1"] is not None and taken["p1"].exists()
    assert p2 is None  # exactly one stealer holds a ticket


def test_verify_counts_temporaries_and_removes_only_stale_ones(store):
    leased = store.claim("live", "A", ttl_s=600)
    live = store.begin_video("live", lease=leased)  # a writer at work
    live.append(**fake_video(3))
    dead = store.begin_video("dead")  # a writer that was killed: its temporary stays behind
    dead.append(**fake_video(3))
    write(store, "done", fake_video(3))
    report = verify_store(store)
    assert report.clean and report.ok == 1 and report.temporaries == 2
    assert "2 temporaries" in report.summary_line()
    removed = remove_stale_temporaries(store, min_age_s=0)
    assert len(removed) == 1 and "dead" in removed[0]
    live.commit()  # the live writer is unaffected
    assert store.complete_videos() == ["done", "live"] and store.temporaries() == []
    assert remove_stale_temporaries(store, min_age_s=3600) == []


def test_each_video_records_its_versions_and_drift_is_reported(store, monkeypatch):
    write(store, "v", fake_video(3))
    versions = store.read_video("v").attrs["versions"]
    assert versions["torch"] == torch_version()
    assert store.version_drift() == []
    (major, minor, *_) = versions["torch"].split(".")
    patch_only = {**versions, "torch": f"{major}.{minor}.999"}
    monkeypatch.setattr(store_mod, "video_versions", lambda: patch_only)
    assert store.version_drift() == []  # the same major.minor: no warning
    other = {**versions, "torch": f"{major}.{int(minor) + 1}.0"}
    monkeypatch.setattr(store_mod, "video_versions", lambda: other)
    assert store.version_drift() == [f"torch {versions['torch']} -> {major}.{int(minor) + 1}.0"]
    assert store.video_versions_summary() == {", ".join(f"{k} {v}" for k, v in sorted(versions.items())): 1}


def torch_version() -> str:
    from importlib import metadata

    return metadata.version("torch")
