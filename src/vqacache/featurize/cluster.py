"""Where the work runs: a Dask LocalCluster by default, or an existing scheduler.

Local default: one worker process per GPU, each pinned to its GPU; on a CPU-only machine one
worker (its torch threads use the cores; decoding runs in child processes beside it).
``--scheduler tcp://HOST:PORT`` uses a running cluster instead (``dask scheduler`` +
``dask worker``, or dask-jobqueue on SLURM: see docs/slurm.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster, WorkerPlugin

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
    # workers start decoder child processes, which daemonic processes may not have
    "distributed.worker.daemon": False,
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

    try:
        actual = client.run_on_scheduler(settings)
    except Exception:  # noqa: BLE001 - a scheduler that refuses run_on_scheduler: nothing to say
        return []
    return [
        f"the scheduler has {key.rsplit('.', 1)[1]}={actual[key]!r}; vqa-featurize needs {want!r} "
        "(a video that kills its worker may be retried on every worker, or take another task with it): "
        f"start it with DASK_{key.upper().replace('.', '__').replace('-', '_')}={want}"
        for key, want in SCHEDULER_CONFIG.items()
        if str(actual.get(key)) != str(want)
    ]


@contextmanager
def connect(scheduler: str | None, workers: int | None, device: str) -> Iterator[Client]:
    """A Client on an existing scheduler, or on a fresh LocalCluster closed on exit."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or default_workers(device)
    # for the cluster's whole life, not only its start: the nanny reads these again when it
    # restarts a worker that died (a restarted worker would otherwise be daemonic, unable to
    # start its decoder children, and back to one OpenMP thread)
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
