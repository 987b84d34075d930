"""``vqa-featurize --cluster slurm`` on a real one-node SLURM (scripts/local-slurm.sh, run by .ci/run).

Skipped outside CI when there is no ``sbatch`` (or no dask-jobqueue: ``uv sync --extra slurm``);
under ``CI=true`` a missing SLURM fails the test instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_VIDEOS, in_ci, need_shared
from vqacache.cache_spec import open_store

ARRAYS = ("cls", "cls_hidden", "patch", "pts", "src_index", "is_repeat")


def _need_slurm() -> None:
    missing = []
    if shutil.which("sbatch") is None:
        missing.append("sbatch (a running SLURM: scripts/local-slurm.sh start)")
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        missing.append("dask-jobqueue (uv sync --extra slurm)")
    if missing:
        reason = f"needs {' and '.join(missing)}"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The shared videos, each under three names: 12 videos, enough to cancel a job mid-run."""
    folder = tmp_path_factory.mktemp("videos")
    for video in sorted(need_shared(SHARED_VIDEOS).iterdir()):
        for copy in range(3):
            (folder / f"{video.stem}-{copy}{video.suffix}").symlink_to(video)
    return folder


def _cli(videos: Path, cache: Path, tiny_clip: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vqacache.cli.featurize", "--dataset", "folder", "--data-root", str(videos),
            "--encoder", tiny_clip, "--weights", "random", "--cache-root", str(cache), "--batch-size", "8", *extra]


SLURM_ARGS = ("--cluster", "slurm", "--jobs", "2", "--job-cores", "1", "--job-memory", "3GB", "--walltime", "00:30:00")


def _store(cache: Path):
    (path,) = sorted(cache.glob("*/*.zarr"))
    return open_store(path)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, videos, tiny_clip):
    cache = tmp_path_factory.mktemp("local")
    run = subprocess.run(_cli(videos, cache, tiny_clip, "--workers", "0"), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return _store(cache)


def _assert_same(store, reference) -> None:
    assert store.fingerprint == reference.fingerprint
    assert store.complete_videos() == reference.complete_videos() and store.failures() == {}
    assert store.incomplete_videos() == []
    assert store.questions() == reference.questions()
    for video_id in store.complete_videos():
        a, b = store.read_video(video_id), reference.read_video(video_id)
        for name in ARRAYS:
            if name in ("pts", "src_index", "is_repeat"):
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{video_id}/{name}")
            else:  # other batch compositions: equal within fp16 rounding
                np.testing.assert_allclose(a[name].astype(np.float32), b[name].astype(np.float32),
                                           rtol=4e-3, atol=4e-3, err_msg=f"{video_id}/{name}")


def _verify(store_path: Path, videos: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "vqacache.cli.cache", "verify", str(store_path), "--data-root",
                          str(videos)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _our_jobs(output: str) -> list[str]:
    return re.findall(r"^job (\d+) submitted", output, flags=re.M)


def test_slurm_run_equals_local_run(tmp_path, videos, tiny_clip, local_store):
    _need_slurm()
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    run = subprocess.run(_cli(videos, cache, tiny_clip, *SLURM_ARGS), capture_output=True, text=True,
                         cwd=tmp_path, timeout=900)  # cwd: the jobs' slurm-*.out files
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    summary = run.stdout.strip().splitlines()[-1]
    print(f"SLURM run: {time.perf_counter() - t0:.1f} s; {summary}")
    assert "dask dashboard: http" in output and len(_our_jobs(output)) >= 2, output
    assert summary.startswith("12 videos done, 0 skipped, 0 failed") and "0 jobs lost" in summary, summary
    store = _store(cache)
    _assert_same(store, local_store)
    _verify(store.path, videos)


def test_scancel_a_job_mid_run(tmp_path, videos, tiny_clip, local_store):
    _need_slurm()
    cache = tmp_path / "cache"
    proc = subprocess.Popen(_cli(videos, cache, tiny_clip, *SLURM_ARGS, "--job-retries", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 600
        done = 0
        while time.time() < deadline and proc.poll() is None:
            stores = sorted(cache.glob("*/*.zarr"))
            done = len(open_store(stores[0]).complete_videos()) if stores else 0
            if done >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended before a job could be cancelled:\n{proc.stdout.read()}"
        assert 2 <= done < 12, done
        running = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %j"], capture_output=True, text=True).stdout
        victim = next(line.split()[0] for line in running.splitlines() if "dask-worker" in line)
        subprocess.run(["scancel", victim], check=True)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    print(f"scancel {victim} after {done} videos: {summary}")
    assert f"job {victim} lost" in output, output
    assert "1 jobs lost" in summary and " 0 failed" in summary, summary
    store = _store(cache)
    assert sorted(store.complete_videos()) == local_store.complete_videos()  # each once
    _assert_same(store, local_store)
    _verify(store.path, videos)


class _Job:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        raise RuntimeError("scancel: invalid job id")  # the job is gone already


class _FakeCluster:
    """What JobWatch uses of a dask-jobqueue cluster."""

    def __init__(self) -> None:
        self.workers = {"c-0": _Job("1"), "c-1": _Job("2")}
        self.worker_spec = dict.fromkeys(self.workers, {})
        self.scheduler_info = {"workers": {"tcp://a:1": {"name": "c-0"}, "tcp://a:2": {"name": "c-1"}}}
        self.scaled: list[int] = []

    def scale(self, jobs: int) -> None:
        self.scaled.append(jobs)
        name = f"c-{len(self.scaled) + 1}"
        self.worker_spec[name] = {}
        self.workers[name] = _Job(str(len(self.scaled) + 2))


def test_job_watch_replaces_lost_jobs_within_the_budget():
    """No SLURM needed: a job that leaves squeue is lost, replaced, and blamed for its worker's death."""
    import asyncio

    from distributed.scheduler import KilledWorker

    from vqacache.featurize.cluster import JobOptions, JobWatch

    async def scenario() -> tuple[JobWatch, _FakeCluster, list[str]]:
        cluster, messages = _FakeCluster(), []
        watch = JobWatch(cluster, JobOptions("slurm", jobs=2, retries=1), messages.append, interval=0.01)
        watch.check({})  # the job ids are reported; nothing judged before a query knew them
        watch.check({"1": "RUNNING", "2": "RUNNING"})
        assert watch.lost == [] and cluster.scaled == []
        del cluster.scheduler_info["workers"]["tcp://a:1"]
        watch.check({"1": None, "2": "RUNNING"})  # job 1 left squeue
        assert watch.lost == ["1"] and cluster.scaled == [2] and "c-0" not in cluster.worker_spec
        watch.check({"1": None, "2": "COMPLETING", "3": "PENDING"})  # job 2 ends too: past the budget
        assert watch.lost == ["1", "2"] and cluster.scaled == [2]
        await asyncio.sleep(0)
        return watch, cluster, messages

    watch, cluster, messages = asyncio.run(scenario())
    assert messages[:2] == ["job 1 submitted (c-0)", "job 2 submitted (c-1)"]
    assert "job 1 lost; submitting another (1 of 1 replacements)" in messages
    assert "job 2 lost; retry budget (1) spent" in messages
    assert not watch.exhausted  # job 3's worker may still come
    died = KilledWorker("t", type("W", (), {"name": "c-0", "address": "tcp://a:1"})(), 0)
    assert watch.died_with_job(died)
    alive = KilledWorker("t", type("W", (), {"name": "c-9", "address": "tcp://a:9"})(), 0)
    watch.interval = 0.01
    assert not watch.died_with_job(alive)  # a worker death with its job alive: the video's doing


def test_job_watch_past_the_budget_with_no_worker_interrupts_the_run(monkeypatch):
    """No SLURM needed: the budget spent and no worker left -> the driver's wait is interrupted
    once (the run cannot finish); a worker still there -> it is not."""
    import asyncio

    import vqacache.featurize.cluster as cluster_mod
    from vqacache.featurize.cluster import JobOptions, JobWatch

    interrupts: list[int] = []
    monkeypatch.setattr(cluster_mod._thread, "interrupt_main", lambda: interrupts.append(1))

    async def scenario() -> JobWatch:
        cluster = _FakeCluster()
        watch = JobWatch(cluster, JobOptions("slurm", jobs=2, retries=0), lambda m: None, interval=0.01)
        watch.check({})
        watch.check({"1": "RUNNING", "2": "RUNNING"})
        del cluster.scheduler_info["workers"]["tcp://a:1"]
        watch.check({"1": None, "2": "RUNNING"})  # past a budget of 0, but c-1 still works
        assert watch.lost == ["1"] and not watch.exhausted and interrupts == []
        cluster.scheduler_info["workers"].clear()
        watch.check({"1": None, "2": None})  # the last job gone too
        watch.check({"1": None, "2": None})
        await asyncio.sleep(0)
        return watch

    watch = asyncio.run(scenario())
    assert watch.exhausted and watch.lost == ["1", "2"] and interrupts == [1]


def test_budget_exhausted_is_one_line_and_exit_3(monkeypatch, tmp_path):
    """What connect_jobs raises then (JobBudgetExhausted) reaches the user as one line, exit 3."""
    from contextlib import contextmanager

    from typer.testing import CliRunner

    import vqacache.featurize.cluster as cluster_mod
    from vqacache.cli.featurize import app
    from vqacache.featurize.cluster import JobBudgetExhausted

    @contextmanager
    def no_jobs_left(options, report=print):  # noqa: ANN001, ANN202
        raise JobBudgetExhausted("2 jobs lost, retry budget (1) spent and no worker left; rerun to go on "
                                 "(complete videos are kept)")
        yield

    monkeypatch.setattr(cluster_mod, "connect_jobs", no_jobs_left)
    result = CliRunner().invoke(app, ["--dataset", "demo", "--encoder", "clip-b16", "--weights", "random",
                                      "--cache-root", str(tmp_path / "cache"), "--cluster", "slurm", "--jobs", "2"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 3, result.output
    assert lines == ["error: 2 jobs lost, retry budget (1) spent and no worker left; rerun to go on "
                     "(complete videos are kept)"], result.output
