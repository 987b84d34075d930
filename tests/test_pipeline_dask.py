"""Stage one at lab scale: Dask clusters, kill-and-resume, two concurrent runs.

Every run uses the tiny open_clip config (registered for subprocesses and Dask workers through
$VQACACHE_OPEN_CLIP_CONFIGS by the ``tiny_clip`` fixture) with random weights, on the demo's
val split (4 clips, one at 6 fps).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vqacache.cache_spec import open_store
from vqacache.featurize.pipeline import FeaturizeConfig, featurize

ARRAYS = ("cls", "cls_hidden", "patch", "pts", "src_index", "is_repeat")


def config(cache: Path, demo_root: Path, tiny_clip: str, **kw) -> FeaturizeConfig:
    base = dict(dataset="demo", data_root=demo_root, encoder=tiny_clip, weights="random", cache_root=cache,
                splits=("val",), batch_size=8, shard_videos=1)
    base.update(kw)
    return FeaturizeConfig(**base)


def store_of(cache: Path):
    (path,) = sorted(cache.glob("demo/*.zarr"))
    return open_store(path)


def assert_same_store(a, b, exact: bool = True) -> None:
    assert a.fingerprint == b.fingerprint
    assert a.complete_videos() == b.complete_videos() and a.failures() == b.failures()
    assert a.questions() == b.questions()
    for video_id in a.complete_videos():
        va, vb = a.read_video(video_id), b.read_video(video_id)
        for name in ARRAYS:
            if exact or name in ("pts", "src_index", "is_repeat"):
                np.testing.assert_array_equal(va[name], vb[name], err_msg=f"{video_id}/{name}")
            else:  # other batch compositions: equal within fp16 rounding
                np.testing.assert_allclose(va[name].astype(np.float32), vb[name].astype(np.float32), rtol=4e-3, atol=4e-3)
        assert va.attrs["checksum"] == vb.attrs["checksum"] or not exact


class RecordingReporter:
    """Records what the progress bar would show: one ``advance`` per video is the contract."""

    def __init__(self) -> None:
        self.advances: list[tuple[int, int, dict[str, str]]] = []
        self.messages: list[str] = []
        self.total = None

    def start(self, total_videos: int, description: str) -> None:
        self.total = total_videos

    def advance(self, videos: int, frames: int, failures: dict[str, str]) -> None:
        self.advances.append((videos, frames, dict(failures)))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def finish(self) -> None:
        pass


@pytest.fixture(scope="module")
def inline_store(tmp_path_factory, demo_root, tiny_clip):
    cache = tmp_path_factory.mktemp("inline")
    result = featurize(config(cache, demo_root, tiny_clip, workers=0))
    assert result.failed == 0 and result.done == 4
    return store_of(cache)


def test_local_cluster_equals_inline_run(tmp_path, demo_root, tiny_clip, inline_store):
    reporter = RecordingReporter()
    result = featurize(config(tmp_path, demo_root, tiny_clip, workers=1, shard_videos=4), reporter)
    assert result.done == 4 and result.failed == 0 and result.dashboard
    store = store_of(tmp_path)
    assert_same_store(store, inline_store)
    # one shard of 4 videos, and still the progress bar moves once per video, with its frames
    assert reporter.total == 4 and [a[0] for a in reporter.advances] == [1, 1, 1, 1]
    assert sum(a[1] for a in reporter.advances) == result.frames == sum(
        store.video_arrays(v)["pts"].shape[0] for v in store.complete_videos())
    logs = store.run_logs()
    assert len(logs) == 1 and logs[0]["videos_done"] == 4 and logs[0]["settings"]["workers"] == 1
    assert {"decode_wait", "encode", "write"} <= set(logs[0]["stage_seconds"])


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_external_scheduler_with_two_worker_processes(tmp_path, demo_root, tiny_clip, inline_store):
    bin_dir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    procs = [_start([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--dashboard-address", ":0", "--scheduler-file", str(sched_file)], env=env)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(_start([str(bin_dir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                 "--name", f"w{i}", "--no-dashboard"], env=env))
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        reporter = RecordingReporter()
        result = featurize(config(tmp_path / "cache", demo_root, tiny_clip, scheduler=address), reporter)
        assert result.done == 4 and result.failed == 0
        assert not [m for m in reporter.messages if m.startswith("warning")], reporter.messages
        assert_same_store(store_of(tmp_path / "cache"), inline_store)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _cli(cache: Path, demo_root: Path, tiny_clip: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vqacache.cli.featurize", "--dataset", "demo", "--data-root", str(demo_root),
            "--encoder", tiny_clip, "--weights", "random", "--cache-root", str(cache), "--split", "val",
            "--batch-size", "8", "--workers", "0", *extra]


def test_sigkill_at_any_moment_then_rerun_gives_the_uninterrupted_store(tmp_path, demo_root, tiny_clip, inline_store):
    cache = tmp_path / "cache"
    rng = random.Random(0)
    for attempt in range(3):  # kill at a few random moments, rerunning each time
        proc = _start(_cli(cache, demo_root, tiny_clip))
        time.sleep(rng.uniform(4.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(_cli(cache, demo_root, tiny_clip), capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    store = store_of(cache)
    assert store.incomplete_videos() == []
    assert_same_store(store, inline_store, exact=False)
    assert not any(p.name.endswith(".json") for p in (store.path / "leases").glob("*")) if (store.path / "leases").exists() else True


def test_two_concurrent_runs_share_the_work(tmp_path, demo_root, tiny_clip, inline_store):
    cache = tmp_path / "cache"
    a = _start(_cli(cache, demo_root, tiny_clip))
    b = _start(_cli(cache, demo_root, tiny_clip))
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    store = store_of(cache)
    assert_same_store(store, inline_store, exact=False)
    logs = store.run_logs()
    assert len(logs) == 2
    assert sum(log["videos_done"] for log in logs) == 4  # every video featurized exactly once


def test_a_video_that_kills_its_worker_is_recorded_as_crashed(tmp_path, demo_root, tiny_clip, inline_store, monkeypatch):
    """A worker process dies (os._exit, as in a native crash) while writing one video of a
    four-video shard: that video is recorded as ``crashed`` after its solo retry kills a worker
    again; the shard's other videos (one finished before, two after it) are all done, equal to
    the uninterrupted run, without waiting out the dead worker's leases; exit code 3."""
    import dask
    import distributed  # noqa: F401 - before config.set, or leaving it would drop distributed's defaults

    videos = sorted(inline_store.complete_videos())
    poison = videos[1]
    monkeypatch.setenv("VQACACHE_TEST_KILL_WORKER_ON", poison)
    reporter = RecordingReporter()
    preload = str(Path(__file__).with_name("worker_faults.py"))
    with dask.config.set({"distributed.worker.preload": [preload]}):
        result = featurize(config(tmp_path, demo_root, tiny_clip, workers=1, shard_videos=4), reporter)
    assert result.failed == 1 and result.done == 3 and result.exit_code == 3
    assert result.failures[poison].startswith("crashed: the worker process died")
    store = store_of(tmp_path)
    assert store.failures()[poison].startswith("crashed")
    assert sorted(store.complete_videos()) == [v for v in videos if v != poison]
    assert store.leases() == {}
    for video_id in store.complete_videos():
        got, want = store.read_video(video_id), inline_store.read_video(video_id)
        for name in ARRAYS:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{video_id}/{name}")
    assert sorted(a[0] for a in reporter.advances) == [1, 1, 1, 1]
    assert [f for a in reporter.advances for f in a[2]] == [poison]
    assert result.frames == sum(a[1] for a in reporter.advances)


def test_scheduler_warnings_name_the_settings_it_lacks():
    import dask
    from distributed import Client, LocalCluster

    from vqacache.featurize.cluster import SCHEDULER_CONFIG, scheduler_warnings

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        warnings = scheduler_warnings(client)
    assert len(warnings) == 2  # Dask's defaults: allowed-failures 3, worker-saturation 1.1
    assert "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0" in warnings[0]
    assert "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0" in warnings[1]
    with dask.config.set(SCHEDULER_CONFIG):
        with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
            assert scheduler_warnings(client) == []
