"""Where the work runs: a Dask LocalCluster by default, or an existing scheduler.

Local default: one worker process per GPU, each pinned to its GPU; on a CPU-only machine one
worker (its torch threads use the cores; decoding runs in child processes beside it).
``--scheduler tcp://HOST:PORT`` uses a running cluster instead (``dask scheduler`` +
``dask worker``). ``--cluster slurm|pbs|...`` submits ``--jobs N`` batch jobs through
dask-jobqueue (the ``vqacache[slurm]`` extra), site settings from its own configuration file;
jobs that die are replaced within a budget (:class:`JobWatch`; see docs/slurm.md).
"""

from __future__ import annotations

import _thread
import asyncio
import getpass
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from vqacache.cache_spec import VqaCacheError

ALLOWED_FAILURES = 0
"""A task that kills its worker is not retried elsewhere: a poison video is recorded, not
allowed to kill every worker in turn (the pipeline retries the shard's other videos)."""


WORKER_SATURATION = 1.0
"""A worker holds only the task it runs (no queued second one): when a video kills its worker,
Dask fails every task held by that worker, and an innocent task waiting there would be failed
with it (with a single video, recorded as ``crashed``)."""

SCHEDULER_CONFIG = {
    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
    "distributed.scheduler.worker-saturation": WORKER_SATURATION,
}
"""Settings the scheduler needs; for an existing scheduler see :func:`scheduler_warnings`."""

WORKER_CONFIG = {
    **SCHEDULER_CONFIG,
    # the statistical profiler samples every thread's stack every 10 ms: measurable CPU on
    # a small machine, and our stage timings are in the run log anyway
    "distributed.worker.profile.enabled": False,
}
"""Dask settings the local cluster uses; external clusters need the same (docs/slurm.md)."""


def worker_environ(n_workers: int) -> dict[str, object]:
    """Each local worker's share of the cores for torch's intra-op threads.

    Dask's nanny pins OMP/MKL/OpenBLAS to one thread per worker by default, which halves a
    2-core CPU encoder; one encoder per worker should use its share of the machine instead.
    Its malloc trim threshold is dropped too (see below).
    """
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.update({name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    # Dask also sets MALLOC_TRIM_THRESHOLD_=65536, which makes glibc return freed activations to
    # the OS after every forward; measured here: ViT-B/16 ~15% slower (2.9-3.2 vs 3.4-3.6 frames/s)
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


class PinGPU(WorkerPlugin):
    """Pins local worker i to GPU i (before the worker's first CUDA call)."""

    name = "vqacache-pin-gpu"

    def setup(self, worker) -> None:  # noqa: ANN001 - distributed's Worker
        os.environ["CUDA_VISIBLE_DEVICES"] = str(worker.name)


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers(device: str) -> int:
    """One per GPU for a CUDA device (``auto`` with GPUs here); else one per 16 cores (at least one)."""
    if device.startswith("cuda") or (device == "auto" and local_gpu_count()):
        return max(1, local_gpu_count())
    return max(1, (os.cpu_count() or 1) // 16)


def pins_gpus(device: str) -> bool:
    """Whether local workers each get their own GPU: a bare ``cuda``, or ``auto`` with GPUs."""
    return device == "cuda" or (device == "auto" and local_gpu_count() > 0)


def scheduler_warnings(client: Client) -> list[str]:
    """What an existing scheduler's settings would get wrong (empty when nothing)."""

    def settings() -> dict[str, object]:
        import dask

        return {key: dask.config.get(key) for key in SCHEDULER_CONFIG}

    def worker_settings() -> dict[str, object]:
        import socket

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return {"host": socket.gethostname(), "cores": cores, "omp": os.environ.get("OMP_NUM_THREADS")}

    try:
        actual = client.run_on_scheduler(settings)
    except Exception:  # noqa: BLE001 - a scheduler that refuses run_on_scheduler: nothing to say
        return []
    warnings = [
        f"the scheduler has {key.rsplit('.', 1)[1]}={actual[key]!r}; vqa-featurize needs {want!r} "
        "(a video that kills its worker may be retried on every worker, or take another task with it): "
        f"start it with DASK_{key.upper().replace('.', '__').replace('-', '_')}={want}"
        for key, want in SCHEDULER_CONFIG.items()
        if str(actual.get(key)) != str(want)
    ]
    # Workers need no Dask setting to be correct (decoder children are plain subprocesses,
    # which daemonic workers may start); these only make them slower, named in one line.
    try:
        workers, nthreads = client.run(worker_settings), client.nthreads()
    except Exception:  # noqa: BLE001 - workers that refuse client.run: nothing to say
        workers, nthreads = {}, {}
    per_host: dict[object, int] = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + 1
    slow = []
    for address, info in sorted(workers.items()):
        share = max(1, int(info["cores"]) // per_host[info["host"]])
        omp = str(info["omp"] or "")
        if nthreads.get(address, 1) > 1:
            slow.append(f"{address} runs {nthreads[address]} tasks at once (start it with --nthreads 1)")
        if omp.isdigit() and int(omp) < share:
            slow.append(f"{address} has OMP_NUM_THREADS={omp} for its {share} cores (the nanny's default; "
                        f"start it with DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{{'OMP_NUM_THREADS': {share}}}\")")
    if slow:
        warnings.append("worker settings that only slow the run: " + "; ".join(slow))
    return warnings


JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
    "oar": "OARCluster", "moab": "MoabCluster", "htcondor": "HTCondorCluster",
}
"""``--cluster`` values (besides ``local``): dask-jobqueue's cluster classes."""

JOB_WORKER_ENVIRON = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
}
"""Exported by each job's script before its worker starts (see WORKER_CONFIG)."""


@dataclass(frozen=True)
class JobOptions:
    """``--cluster slurm|pbs|...``: what a user changes per run. Anything left None comes from
    dask-jobqueue's configuration file (``~/.config/dask/jobqueue.yaml``, key ``jobqueue.<cluster>``)."""

    cluster: str
    jobs: int = 1
    partition: str | None = None
    account: str | None = None
    walltime: str | None = None
    gpus: int | None = None
    cores: int | None = None
    memory: str | None = None
    retries: int | None = None
    """Jobs that may be lost (preempted, cancelled, killed) and replaced; None: as many as ``jobs``."""

    @property
    def budget(self) -> int:
        return self.jobs if self.retries is None else self.retries


class JobBudgetExhausted(VqaCacheError, RuntimeError):
    """Every job was lost, the retry budget is spent and no worker is left: the run stops
    (complete videos are kept; a rerun goes on). One line from the CLI, exit code 3 (some
    work not done), like a run with failed videos."""

    exit_code = 3


class JobWatch:
    """Watches the jobs from a thread (every ``interval`` s) and acts on the cluster's event loop:
    reports each new job id; a job that ended (for SLURM: left ``squeue`` or in a final state;
    elsewhere: its worker gone for ``grace`` s) is lost: dropped from the cluster's spec and a new
    job submitted in its place, until ``budget`` jobs were lost. Past the budget, with no worker
    left, the run is interrupted. :meth:`died_with_job` tells the pipeline whether a worker death
    was its job's loss (its videos are retried) or the video's doing (recorded as crashed)."""

    ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING"}

    def __init__(self, cluster, options: JobOptions, report: Callable[[str], None],  # noqa: ANN001
                 interval: float = 2.0, grace: float = 60.0) -> None:
        self.cluster = cluster
        self.options = options
        self.report = report
        self.interval = interval
        self.grace = grace
        self.reported: set[str] = set()
        self.queued: set[str] = set()
        self.joined: set[str] = set()
        self.absent_since: dict[str, float] = {}
        self.addresses: dict[str, str] = {}
        self.lost: list[str] = []
        self.lost_names: set[str] = set()
        self.exhausted = False
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="vqacache-jobwatch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            states = self._job_states()
            try:
                self.cluster.loop.add_callback(self.check, states)
            except Exception:  # noqa: BLE001 - the loop is closing
                return

    def _job_states(self) -> dict[str, str | None] | None:
        """SLURM: {job id: its state, None when it left ``squeue``} for each job id reported before
        the query (a job submitted since is not judged on it); None where not known."""
        asked = set(self.reported)
        if self.options.cluster != "slurm" or not asked:
            return None
        try:
            # this user's jobs (``-j`` fails as a whole once one of the ids has left the queue)
            out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-u", getpass.getuser()],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None  # the controller did not answer: nothing is known, nothing is lost
        states: dict[str, str | None] = dict.fromkeys(asked)
        states.update({job: state for job, state, *_ in (line.split() for line in out.stdout.splitlines())
                       if job in asked})
        return states

    def check(self, states: dict[str, str | None] | None = None) -> None:
        cluster = self.cluster
        info = cluster.scheduler_info.get("workers", {})
        workers = {str(w.get("name")) for w in info.values()}
        self.addresses.update({address: str(w.get("name")) for address, w in info.items()})
        now = time.monotonic()
        for name, job in list(cluster.workers.items()):
            name = str(name)
            job_id = getattr(job, "job_id", None)
            if job_id and job_id not in self.reported:
                self.reported.add(job_id)
                self.report(f"job {job_id} submitted ({name})")
            if name in workers:
                self.joined.add(name)
                self.absent_since.pop(name, None)
            if states is not None and job_id not in states:
                gone = False  # submitted after the query: judged on the next one
            elif states is not None:
                alive = states.get(job_id) in self.ALIVE
                if alive:
                    self.queued.add(job_id)
                gone = not alive and (job_id in self.queued or name in self.joined)
            else:
                since = self.absent_since.setdefault(name, now) if name not in workers else now
                gone = name in self.joined and now - since > self.grace
            if gone:
                self._lose(name, job_id, job)
        if len(self.lost) > self.options.budget and not workers and not self.exhausted:
            self.exhausted = True
            _thread.interrupt_main()  # no worker left, none coming: stop waiting for results

    def _lose(self, name: str, job_id: str | None, job) -> None:  # noqa: ANN001
        cluster = self.cluster
        self.lost.append(job_id or name)
        self.lost_names.add(name)
        self.joined.discard(name)
        cluster.worker_spec.pop(name, None)
        cluster.workers.pop(name, None)  # not left to scale(): its scancel of a job gone may fail
        asyncio.ensure_future(_close_quietly(job))
        if len(self.lost) <= self.options.budget:
            self.report(f"job {job_id} lost; submitting another ({len(self.lost)} of {self.options.budget} "
                        "replacements)")
            cluster.scale(jobs=self.options.jobs)
        else:
            self.report(f"job {job_id} lost; retry budget ({self.options.budget}) spent")

    def died_with_job(self, error: BaseException) -> bool:
        """Whether the worker death ``error`` (KilledWorker) came with the loss of its job: waits
        until the watch has seen the job end, or for as long as that takes at most."""
        worker = getattr(error, "last_worker", None)
        name = getattr(worker, "name", None)
        name = str(name) if name is not None else self.addresses.get(getattr(worker, "address", ""), "")
        if not name:
            return False
        deadline = time.monotonic() + (5 * self.interval if self.options.cluster == "slurm" else self.grace + 5 * self.interval)
        while time.monotonic() < deadline:
            if name in self.lost_names:
                return True
            time.sleep(0.2)
        return name in self.lost_names


async def _close_quietly(job) -> None:  # noqa: ANN001
    try:
        await job.close()  # scancel of a job that is already gone
    except Exception:  # noqa: BLE001
        pass


def _jobqueue_cluster(options: JobOptions):  # noqa: ANN202
    """The dask-jobqueue cluster for ``options`` (its scheduler runs in this process)."""
    try:
        import dask_jobqueue
    except ImportError as e:
        from vqacache.cache_spec import UsageError

        raise UsageError(f"--cluster {options.cluster} needs dask-jobqueue: install the extra with "
                         "`uv sync --extra slurm` (or `pip install vqacache[slurm]`)") from e
    kind = options.cluster
    config_prologue = list(dask.config.get(f"jobqueue.{kind}.job-script-prologue", None) or [])
    config_args = list(dask.config.get(f"jobqueue.{kind}.worker-extra-args", None) or [])
    kwargs: dict[str, object] = {
        "processes": 1,  # one worker per job, one task at a time: it runs one encoder
        "worker_extra_args": [*config_args, "--nthreads", "1"],
        "job_script_prologue": [*config_prologue, *(f"export {k}={v}" for k, v in JOB_WORKER_ENVIRON.items())],
    }
    for key, value in (("cores", options.cores), ("memory", options.memory), ("walltime", options.walltime),
                       ("queue", options.partition), ("account", options.account)):
        if value is not None:
            kwargs[key] = value
    if options.gpus:
        if kind != "slurm":
            from vqacache.cache_spec import UsageError

            raise UsageError(f"--job-gpus is for slurm; for {kind} ask for GPUs in dask-jobqueue's configuration "
                             f"(jobqueue.{kind}.job-extra-directives or resource-spec)")
        directives = list(dask.config.get(f"jobqueue.{kind}.job-extra-directives", None) or [])
        kwargs["job_extra_directives"] = [*directives, f"--gres=gpu:{options.gpus}"]
    try:
        return getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[kind])(**kwargs)
    except ValueError as e:
        from vqacache.cache_spec import UsageError

        raise UsageError(f"--cluster {kind}: {e}\n(set --job-cores/--job-memory, or cores/memory under "
                         f"jobqueue.{kind} in dask-jobqueue's configuration file)") from e


@contextmanager
def connect_jobs(options: JobOptions, report: Callable[[str], None] = print) -> Iterator[tuple[Client, JobWatch]]:
    """A Client on a fresh dask-jobqueue cluster of ``options.jobs`` jobs, kept at that many
    (:class:`JobWatch`) and closed (its jobs cancelled) on exit."""
    with dask.config.set({**WORKER_CONFIG, "distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = _jobqueue_cluster(options)
        watch = JobWatch(cluster, options, report)
        try:
            cluster.scale(jobs=options.jobs)
            watch.start()
            with Client(cluster) as client:
                report(f"dask dashboard: {client.dashboard_link}")
                client.wait_for_workers(1)
                try:
                    yield client, watch
                except KeyboardInterrupt:
                    if watch.exhausted:
                        raise JobBudgetExhausted(
                            f"{len(watch.lost)} jobs lost, retry budget ({options.budget}) spent and no worker "
                            "left; rerun to go on (complete videos are kept)") from None
                    raise
        finally:
            watch.stop()
            cluster.close()


@contextmanager
def connect(scheduler: str | None, workers: int | None, device: str) -> Iterator[Client]:
    """A Client on an existing scheduler, or on a fresh LocalCluster closed on exit."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or default_workers(device)
    # for the cluster's whole life, not only its start: the nanny reads these again when it
    # restarts a worker that died (a restarted worker would otherwise be back to one OpenMP
    # thread and the profiler)
    with dask.config.set({**WORKER_CONFIG, "distributed.nanny.pre-spawn-environ": worker_environ(n)}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        try:
            with Client(cluster) as client:
                if pins_gpus(device):  # each worker its own GPU, seen as cuda:0
                    client.register_plugin(PinGPU())
                yield client
        finally:
            cluster.close()
