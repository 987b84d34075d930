"""``vqa-cache gc``: removes what no reader needs, never what a reader or a live lease needs.

Mutations tried (each makes a test here fail):
1. ``_temporary`` ignores the live leases' tokens -> test_gc_keeps_what_readers_and_writers_need
   (the live writer's temporary is listed and removed; its commit then fails);
2. ``_failures`` lists every failure record, not only completed videos' ->
   test_gc_keeps_what_readers_and_writers_need (the failed video's record disappears);
3. ``apply_gc`` removes leases with ``unlink`` without the steal protocol's re-check ->
   test_expired_lease_renewed_after_planning_is_kept;
4. run logs compared with ``>`` instead of ``<`` against the cutoff -> test_gc_keeps_... (fresh log removed);
5. the dry run applies the plan -> test_cli_dry_run_then_yes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from spec_factory import make_spec  # noqa: E402

from vqacache.cache_spec import open_store, verify_store  # noqa: E402
from vqacache.cache_spec.gc import apply_gc, plan_gc  # noqa: E402
from vqacache.cache_spec.lease import lease_path  # noqa: E402
from vqacache.cli.cache import app  # noqa: E402

OLD = time.time() - 7200  # two hours ago: past --min-age


def _frames(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(cls=rng.standard_normal((n, 8)), cls_hidden=rng.standard_normal((n, 8)), pts=np.arange(n) / 7.5,
                src_index=np.arange(n), is_repeat=np.zeros(n, bool))


def _age(path: Path, when: float = OLD) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)


def _forge_expired_lease(store_path: Path, video_id: str) -> Path:
    path = lease_path(store_path, video_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"video_id": video_id, "owner": "dead-run", "host": "elsewhere", "pid": 1, "token": "f" * 32,
              "claimed": OLD, "renewed": OLD, "ttl_s": 60.0, "expires": OLD + 60}
    path.write_text(json.dumps(record))
    return path


def _shared_root(tmp_path: Path):
    root = tmp_path / "cache"
    store = open_store(root / "toy" / "clip.zarr", "a", spec=make_spec(patches=False), dataset="toy")
    for i, vid in enumerate(["a", "b", "c"]):
        with store.write_video(vid) as w:
            w.append(**_frames(30 + i, i))
    store.record_failure("a", "DecodeError", "old record; the video was completed since")
    store.record_failure("f", "DecodeError", "still failing")
    # a killed writer's temporary: no lease, untouched for two hours
    dead = store.begin_video("d")
    dead.append(**_frames(10, 9))
    _age(dead._tmp)
    # a live writer: its lease is held, its temporary is old on disk (a slow video)
    lease = store.claim("e", "live-run", ttl_s=3600)
    live = store.begin_video("e", lease=lease)
    live.append(**_frames(12, 8))
    _age(live._tmp)
    expired = _forge_expired_lease(store.path, "g")
    store.write_run_log("old-run", {"finished": "2020-01-01T00:00:00+00:00"})
    store.write_run_log("new-run", {"finished": "2099-01-01T00:00:00+00:00"})
    return root, store, dead, live, lease, expired


def test_gc_keeps_what_readers_and_writers_need(tmp_path):
    root, store, dead, live, lease, expired = _shared_root(tmp_path)
    before = {v: store.read_video(v).cls.copy() for v in store.complete_videos()}
    plan = plan_gc(root)
    listed = {(i.kind, i.path.name) for i in plan.items}
    assert listed == {
        ("temporary", dead._tmp.name), ("lease", expired.name), ("failure", "a"),
        ("run-log", "old-run"),
    }, listed
    assert all(i.bytes > 0 for i in plan.items) and dead._tmp.exists()  # a dry run changes nothing

    errors: list[BaseException] = []
    stop = threading.Event()
    passes = [0]

    def reader() -> None:  # stage two iterating the store while gc runs
        try:
            reading = open_store(store.path)
            while not stop.is_set() or passes[0] < 3:
                for vid in reading.complete_videos():
                    assert np.array_equal(reading.read_video(vid).cls, before[vid])
                passes[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    result = apply_gc(plan)
    stop.set()
    thread.join()
    assert not errors, errors
    assert len(result.removed) == 4 and result.bytes_freed == plan.bytes and not result.skipped
    assert not dead._tmp.exists() and not expired.exists() and live._tmp.exists()
    assert store.failures() == {"f": "DecodeError: still failing"}
    assert [r["run_id"] for r in store.run_logs()] == ["new-run"]
    assert store.leases().keys() == {"e"}
    live.commit()  # the live writer publishes as if nothing happened
    lease.release()
    report = verify_store(store)
    assert report.clean and report.ok == 4 and report.temporaries == 0
    assert plan_gc(root).items == []


def test_expired_lease_renewed_after_planning_is_kept(tmp_path):
    """gc removes a lease by the steal protocol: one its holder renewed (or a new claimant took)
    after the listing is kept."""
    store = open_store(tmp_path / "s.zarr", "a", spec=make_spec(patches=False), dataset="toy")
    expired = _forge_expired_lease(store.path, "v")
    plan = plan_gc(store.path)
    assert [i.kind for i in plan.items] == ["lease"]
    record = json.loads(expired.read_text())
    record.update(renewed=time.time(), expires=time.time() + 3600)  # renewed since the listing
    expired.write_text(json.dumps(record))
    result = apply_gc(plan)
    assert result.removed == [] and len(result.skipped) == 1 and expired.exists()


def test_cli_dry_run_then_yes(tmp_path):
    root, store, dead, *_ = _shared_root(tmp_path)
    runner = CliRunner()
    dry = runner.invoke(app, ["gc", str(root)])
    assert dry.exit_code == 0 and "dry run: 4 items" in dry.output and dead._tmp.exists()
    assert "held by a live lease" in dry.output
    done = runner.invoke(app, ["gc", str(root), "--yes"])
    assert done.exit_code == 0 and "removed 4 items, freed" in done.output and not dead._tmp.exists()
    assert verify_store(store).ok == 3
    bad = runner.invoke(app, ["gc", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "neither a store nor a cache root" in bad.output
