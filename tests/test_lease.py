"""Leases and run logs: what lets concurrent featurize runs share one store."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
import warnings

import numpy as np
import pytest
import zarr

from spec_factory import make_spec
from test_store import fake_video, write
from vqacache.cache_spec import Lease, LeaseLost, lease_dir, open_store, try_claim
from vqacache.cache_spec.lease import read_lease

CTX = mp.get_context("spawn")


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "s.zarr", "a", spec=make_spec(), dataset="demo")


def _expire(lease: Lease) -> None:
    time.sleep(max(lease.remaining(), 0) + 0.02)


def _age(lease: Lease, seconds: float) -> None:
    """Make ``lease`` look ``seconds`` older, on disk and to its holder, as if its holder had
    stalled that long: tests need no sleeps (and no race with a loaded machine)."""
    record = {**lease.record, "renewed": lease.record["renewed"] - seconds, "expires": lease.record["expires"] - seconds}
    lease.path.write_text(json.dumps(record))
    lease.record = record


def _stall(lease: Lease) -> None:
    """The holder stalled past its lease's expiry (by one ttl)."""
    _age(lease, lease.ttl_s + lease.remaining())


def test_claim_is_exclusive_and_lives_beside_the_store(store):
    a = store.claim("sub/clip", "A", ttl_s=30)
    assert isinstance(a, Lease) and not a.lost
    assert store.claim("sub/clip", "B", ttl_s=30) is None
    assert a.path == store.path.with_name("s.zarr.leases") / "sub%2Fclip.json" == lease_dir(store.path) / "sub%2Fclip.json"
    record = json.loads(a.path.read_text())
    assert record["owner"] == "A" and record["pid"] == os.getpid() and record["host"] and record["expires"] > time.time()
    assert store.leases() == {"sub/clip": record}
    assert sorted(p.name for p in a.path.parent.iterdir()) == ["sub%2Fclip.json"]  # no temporary leftovers
    assert store.claim("other", "B", ttl_s=30) is not None  # other videos are free


def test_plain_zarr_readers_do_not_see_leases(store):
    write(store, "v", fake_video(3))
    store.claim("v2", "A", ttl_s=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about any non-zarr entry inside a group
        root = zarr.open_group(store.path, mode="r")
        assert sorted(k for k, _ in root.members(max_depth=None)) == sorted(
            ["videos", "failures", "questions", "videos/v", *(f"videos/v/{a}" for a in ("cls", "cls_hidden", "patch", "pts", "src_index", "is_repeat"))]
        )
        assert store.complete_videos() == ["v"] and store.summary()["incomplete"] == 0


def test_release_frees_the_video(store):
    a = store.claim("v", "A", ttl_s=30)
    assert a.release() is True and a.released and not a.lost
    assert read_lease(store.path, "v") is None and store.leases() == {}
    b = store.claim("v", "B", ttl_s=30)
    assert b is not None and b.owner == "B"
    with pytest.raises(LeaseLost, match="released"):
        a.renew()
    assert a.release() is False  # releasing twice is harmless and does not touch B's lease
    assert read_lease(store.path, "v")["owner"] == "B"
    with b:  # a lease is a context manager that releases
        pass
    assert read_lease(store.path, "v") is None


def test_break_lease_frees_a_dead_holders_video_for_its_own_run_only(store):
    dead = store.claim("v", "run-1", ttl_s=600)  # its holder "dies": nobody releases it
    assert store.claim("v", "run-1", ttl_s=600) is None  # a live-looking lease blocks a retry
    assert store.break_lease("v", "run-2") is False  # another run's lease is left alone
    assert read_lease(store.path, "v")["owner"] == "run-1"
    assert store.break_lease("v", "run-1") is True and read_lease(store.path, "v") is None
    retry = store.claim("v", "run-1", ttl_s=600)
    assert retry is not None and retry.token != dead.token
    with pytest.raises(LeaseLost, match="taken over"):  # the holder, were it alive, learns it lost
        dead.renew()
    assert store.break_lease("missing", "run-1") is False
    assert sorted(p.name for p in lease_dir(store.path).iterdir()) == ["v.json"]  # no leftovers


def _hold(store_path: str, video_id: str, owner: str, ready) -> None:  # noqa: ANN001
    """Child process: claim and keep a long lease, then wait to be killed."""
    from vqacache.cache_spec.lease import try_claim as claim

    assert claim(store_path, video_id, owner, ttl_s=600) is not None
    ready.set()
    time.sleep(600)


def test_a_lease_whose_holder_was_killed_on_this_host_is_taken_at_once(store):
    """kill -9 of a holder leaves its 10-minute lease behind: another process takes it over
    at once, because the holder's pid is gone on this host. A live holder, or one on another
    host, keeps its lease until it expires."""
    import signal

    ready = CTX.Event()
    holder = CTX.Process(target=_hold, args=(str(store.path), "v", "killed-run", ready))
    holder.start()
    try:
        assert ready.wait(60)
        assert store.claim("v", "rerun", ttl_s=600) is None  # alive: its lease holds
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    assert read_lease(store.path, "v")["owner"] == "killed-run"
    taken = store.claim("v", "rerun", ttl_s=600)
    assert taken is not None and read_lease(store.path, "v")["owner"] == "rerun"
    assert sorted(p.name for p in lease_dir(store.path).iterdir()) == ["v.json"]  # no leftovers

    path = lease_dir(store.path) / "w.json"  # the same dead pid, but written on another host
    record = json.loads(taken.path.read_text()) | {"video_id": "w", "host": "elsewhere", "pid": holder.pid}
    path.write_text(json.dumps(record))
    assert store.claim("w", "rerun", ttl_s=600) is None


def test_expired_lease_is_stolen_and_the_loser_is_told(store):
    a = store.claim("v", "A", ttl_s=30, grace_s=0)
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is None
    _age(a, 30.5)  # expired half a second ago
    assert store.claim("v", "B", ttl_s=30, grace_s=5) is None  # grace: not yet, even once expired
    b = store.claim("v", "B", ttl_s=30, grace_s=0)
    assert b is not None and read_lease(store.path, "v")["owner"] == "B"
    with pytest.raises(LeaseLost, match="taken over .*B"):
        a.renew()
    assert a.lost
    assert a.release() is False  # the loser's release leaves the new holder alone
    assert read_lease(store.path, "v")["token"] == b.token
    b.renew()
    assert sorted(p.name for p in b.path.parent.iterdir()) == ["v.json"]  # stale copies and tickets cleaned up


def test_a_lease_past_its_expiry_is_lost_to_its_holder(store):
    a = store.claim("v", "A", ttl_s=0.1)
    _expire(a)  # not stolen (grace), but the holder may no longer act on it
    with pytest.raises(LeaseLost, match="expired"):
        a.renew()
    assert a.lost
    assert a.release() is True and read_lease(store.path, "v") is None  # but it still frees the video


def test_renewed_lease_is_not_stolen(store):
    a = store.claim("v", "A", ttl_s=30, grace_s=0)
    for _ in range(8):  # 96 simulated seconds, three ttls: renewed whenever a third has passed
        _age(a, 12)
        a.renew_if_due()
        assert store.claim("v", "B", ttl_s=30, grace_s=0) is None
    b = store.claim("w", "A", ttl_s=3, grace_s=0)
    with b.keep_alive(interval_s=0.1):  # the thread renews long before the 3 s run out
        time.sleep(0.8)
        assert store.claim("w", "B", ttl_s=30, grace_s=0) is None
    assert not a.lost and not b.lost
    _stall(a)  # the holder stops renewing (dies): the lease is taken over
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is not None


def test_keep_alive_flags_a_lost_lease(store):
    a = store.claim("v", "A", ttl_s=30, grace_s=0)
    _stall(a)
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is not None
    with a.keep_alive(interval_s=0.01):
        deadline = time.monotonic() + 60  # only a failure waits this long
        while not a.lost and time.monotonic() < deadline:
            time.sleep(0.01)
    assert a.lost


def test_ticket_of_a_stealer_that_died_mid_steal(store):
    a = store.claim("v", "A", ttl_s=0.1, grace_s=0)
    _expire(a)
    ticket = a.path.with_name(f".v.json.steal-{a.token}")
    ticket.write_text("{}")  # another stealer is at work on this lease: keep off
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is None
    os.utime(ticket, (time.time() - 60, time.time() - 60))  # ... or it died long ago
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is not None and not ticket.exists()


def test_unreadable_lease_expires_by_its_mtime(store):
    path = lease_dir(store.path) / "v.json"
    path.parent.mkdir()
    path.write_text("")  # a claimant killed mid-write (O_EXCL fallback)
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is None
    os.utime(path, (time.time() - 31, time.time() - 31))  # untouched for longer than a ttl
    assert store.claim("v", "B", ttl_s=30, grace_s=0) is not None


def test_write_video_checks_the_lease_before_the_marker(store):
    video = fake_video(10)
    a = store.claim("v", "A", ttl_s=30, grace_s=0)
    with pytest.raises(LeaseLost):
        with store.write_video("v", lease=a) as w:
            w.append(**video)
            _stall(a)
            b = store.claim("v", "B", ttl_s=30, grace_s=0)
            assert b is not None
    assert not store.is_complete("v") and store.incomplete_videos() == [] and store.temporaries() == []  # nothing of A left
    with pytest.raises(LeaseLost):
        with store.write_video("v", lease=a):
            pass
    with store.write_video("v", lease=b) as w:
        w.append(**video)
    assert store.is_complete("v") and store.verify_video("v")
    with pytest.raises(ValueError, match="lease is for"):
        with store.write_video("w", lease=b):
            pass


def test_read_only_store_cannot_claim(store):
    with pytest.raises(OSError, match="read-only"):
        open_store(store.path).claim("v", "A", ttl_s=1)
    with pytest.raises(ValueError):
        try_claim(store.path, "v", "A", ttl_s=0)


# -- many processes ----------------------------------------------------------------------
# Three spawned worker processes, started once for this module (spawning is the slow part),
# each running the module-level task functions below on command.


def _serve(name, inbox, outbox, barrier):
    for task, args in iter(inbox.get, None):
        try:
            outbox.put((name, globals()[task](name, barrier, *args)))
        except Exception as exc:  # reported to the test, which fails on it
            outbox.put((name, f"error: {exc!r}"))


@pytest.fixture(scope="module")
def workers():
    """``workers(task, *args)`` runs ``task(name, barrier, *args)`` in every worker at once
    and returns ``{worker name: result}``."""
    n = 3
    barrier, outbox = CTX.Barrier(n), CTX.Queue()
    inboxes = [CTX.Queue() for _ in range(n)]
    procs = [CTX.Process(target=_serve, args=(f"p{k}", q, outbox, barrier), daemon=True) for k, q in enumerate(inboxes)]
    for p in procs:
        p.start()

    def run(task, *args):
        for q in inboxes:
            q.put((task, args))
        return dict(outbox.get(timeout=60) for _ in inboxes)

    yield run
    for q in inboxes:
        q.put(None)
    for p in procs:
        p.join(0.5)
        if p.is_alive():
            p.terminate()


def _steal_race(name, barrier, path, rounds):
    won = []
    for i in range(rounds):
        barrier.wait(30)  # all workers find the same expired lease at the same moment
        if try_claim(path, f"r{i}", name, ttl_s=60, grace_s=0) is not None:
            won.append(i)
    return won


def test_racing_stealers_exactly_one_wins(tmp_path, workers):
    path, rounds = tmp_path / "s.zarr", 30
    for i in range(rounds):  # leases of a dead holder, all expired
        try_claim(path, f"r{i}", "dead", ttl_s=0.001)
    time.sleep(0.01)
    results = workers("_steal_race", path, rounds)
    assert all(isinstance(won, list) for won in results.values()), results
    for i in range(rounds):
        winners = [name for name, won in results.items() if i in won]
        assert len(winners) == 1, (i, winners)
        assert read_lease(path, f"r{i}")["owner"] == winners[0]
    assert sorted(p.name for p in lease_dir(path).iterdir()) == sorted(f"r{i}.json" for i in range(rounds))


def _claim_and_do(name, barrier, path, ids, done_file):
    rng = random.Random(name)
    pending, did = list(ids), 0
    barrier.wait(30)
    while pending:
        deferred = []
        for vid in pending:
            lease = try_claim(path, vid, name, ttl_s=30)
            if lease is None:
                deferred.append(vid)  # someone else holds it: come back later
                continue
            with open(done_file) as f:  # the pipeline's is_complete() check after claiming
                done = {line.split()[0] for line in f}
            if vid not in done:
                time.sleep(rng.uniform(0, 0.004))  # "featurize"
                with open(done_file, "a") as f:
                    f.write(f"{vid} {name}\n")
                did += 1
            lease.release()
        pending = deferred
        time.sleep(0.001)
    return did


def test_many_processes_do_every_video_exactly_once(tmp_path, workers):
    path, done_file = tmp_path / "s.zarr", tmp_path / "done.txt"
    done_file.write_text("")
    ids = [f"video_{i:02d}" for i in range(50)]
    did = workers("_claim_and_do", path, ids, done_file)
    assert all(isinstance(n, int) for n in did.values()), did
    lines = done_file.read_text().split("\n")[:-1]
    assert sorted(line.split()[0] for line in lines) == ids  # every id once, none twice
    assert sum(did.values()) == 50 and sum(n > 0 for n in did.values()) > 1  # the work was shared
    assert list(lease_dir(path).iterdir()) == []  # all released


# -- run logs ----------------------------------------------------------------------------


def test_run_logs_round_trip_without_touching_videos(store):
    write(store, "v", fake_video(3))
    assert store.run_logs() == []
    record = {
        "start": "2026-01-02T03:04:05+00:00", "end": "2026-01-02T04:00:00+00:00", "host": "node1", "owner": "node1:123",
        "done": 10, "failed": 1, "skipped": 2, "frames": np.int64(1234),
        "seconds": {"decode": 10.5, "encode": 20.0, "write": 1.25},
        "settings": {"batch_size": 64, "workers": 4, "device": "cuda:0"},
    }
    store.write_run_log("run-b", record)
    store.write_run_log("run-a", {**record, "start": "2026-01-01T00:00:00+00:00"})
    store.write_run_log("run-b", {**record, "done": 11})  # a run updates its own log
    logs = store.run_logs()
    assert [r["run_id"] for r in logs] == ["run-a", "run-b"] and logs[1]["done"] == 11 and logs[1]["frames"] == 1234
    assert logs[1]["seconds"] == record["seconds"] and logs[1]["settings"] == record["settings"]
    assert store.complete_videos() == ["v"] and store.incomplete_videos() == [] and store.failures() == {}
    assert open_store(store.path).run_logs() == logs  # readable from a read-only handle
    assert zarr.open_group(store.path, mode="r")["runs/run-a"].attrs["done"] == 10  # plain zarr too
    with pytest.raises(OSError, match="read-only"):
        open_store(store.path).write_run_log("x", {})


def _log_run(name, barrier, path):
    store = open_store(path, "a")
    barrier.wait(30)  # all create the runs/ group and their own run group at once
    store.write_run_log(f"run-{name}", {"start": name, "owner": name})
    return True


def test_concurrent_runs_log_without_losing_records(store, workers):
    assert set(workers("_log_run", store.path).values()) == {True}
    assert [r["run_id"] for r in store.run_logs()] == ["run-p0", "run-p1", "run-p2"]
