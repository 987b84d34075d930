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


@pytest.fixture(scope="module")
def inline_store(tmp_path_factory, demo_root, tiny_clip):
    cache = tmp_path_factory.mktemp("inline")
    result = featurize(config(cache, demo_root, tiny_clip, workers=0))
    assert result.failed == 0 and result.done == 4
    return store_of(cache)


def test_local_cluster_equals_inline_run(tmp_path, demo_root, tiny_clip, inline_store):
    result = featurize(config(tmp_path, demo_root, tiny_clip, workers=1))
    assert result.done == 4 and result.failed == 0 and result.dashboard
    store = store_of(tmp_path)
    assert_same_store(store, inline_store)
    logs = store.run_logs()
    assert len(logs) == 1 and logs[0]["videos_done"] == 4 and logs[0]["settings"]["workers"] == 1
    assert {"decode_wait", "encode", "write"} <= set(logs[0]["stage_seconds"])


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_external_scheduler_with_two_worker_processes(tmp_path, demo_root, tiny_clip, inline_store):
    bin_dir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
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
        result = featurize(config(tmp_path / "cache", demo_root, tiny_clip, scheduler=address))
        assert result.done == 4 and result.failed == 0
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
