"""The loopback check: a stock ``dask scheduler`` and two stock ``dask worker`` processes, started
as Dask documents them and with no DASK_* variable set, give the same store as a local run.

A worker under its nanny (the default) is a daemonic process, which multiprocessing forbids
to have children: the decoder children must be plain subprocesses for this to work at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vqacache.cache_spec import open_store

ARRAYS = ("cls", "cls_hidden", "patch")
EXACT = ("pts", "src_index", "is_repeat")
VIDEOS = 3


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(15)


def _featurize(data_root: Path, cache: Path, tiny_clip: str, env: dict[str, str], *extra: str,
               ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vqacache.cli.featurize", "--dataset", "folder", "--data-root", str(data_root),
           "--encoder", tiny_clip, "--weights", "random", "--cache-root", str(cache), "--batch-size", "8", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _store(cache: Path):  # noqa: ANN202
    (path,) = sorted(cache.glob("folder/*.zarr"))
    return open_store(path)


def test_stock_scheduler_and_workers_give_the_local_store(tmp_path: Path, shared_videos: Path, tiny_clip: str) -> None:
    data_root = tmp_path / "videos"
    data_root.mkdir()
    for video in sorted(p for p in shared_videos.iterdir() if p.suffix == ".mp4")[:VIDEOS]:
        (data_root / video.name).symlink_to(video)
    # no Dask setting at all, as a user's shell would have it; the tiny encoder's config only
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["VQACACHE_OPEN_CLIP_CONFIGS"] = os.environ["VQACACHE_OPEN_CLIP_CONFIGS"]  # set by tiny_clip
    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], env, tmp_path / "scheduler.log")]
    try:
        give_up = time.monotonic() + 60
        while not (sched_file.exists() and sched_file.read_text().strip()):
            assert procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < give_up, "the scheduler never wrote its file"
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(_start([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                 "--name", f"stock{i}"], env, tmp_path / f"worker{i}.log"))
        # the reference, while the workers start
        local = _featurize(data_root, tmp_path / "local", tiny_clip, env, "--workers", "0")
        assert local.returncode == 0, local.stdout + local.stderr
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        remote = _featurize(data_root, tmp_path / "remote", tiny_clip, env, "--scheduler", address)
        logs = "".join(p.read_text() for p in sorted(tmp_path.glob("worker*.log")))
        assert remote.returncode == 0, remote.stdout + remote.stderr + logs
        assert "daemonic" not in remote.stdout + remote.stderr + logs
    finally:
        _stop(procs)

    a, b = _store(tmp_path / "local"), _store(tmp_path / "remote")
    assert a.fingerprint == b.fingerprint
    assert len(a.complete_videos()) == VIDEOS and not a.failures()
    assert a.complete_videos() == b.complete_videos() and a.failures() == b.failures()
    for video_id in a.complete_videos():
        va, vb = a.read_video(video_id), b.read_video(video_id)
        for name in EXACT:
            np.testing.assert_array_equal(va[name], vb[name], err_msg=f"{video_id}/{name}")
        for name in ARRAYS:  # equal within fp16 rounding (other batch compositions)
            np.testing.assert_allclose(va[name].astype(np.float32), vb[name].astype(np.float32),
                                       rtol=4e-3, atol=4e-3, err_msg=f"{video_id}/{name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
