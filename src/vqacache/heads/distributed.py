"""Training on several processes (``torchrun --nproc-per-node N``): the process group, the
rank's device and the DistributedDataParallel training step.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``)
in every process; :meth:`Distributed.from_env` reads them (absent: one process, nothing to
set up). :meth:`Distributed.start` joins the process group: backend ``nccl`` on CUDA (rank
``r`` takes ``cuda:LOCAL_RANK``), ``gloo`` on the CPU.

**What each rank does** (the recipe, :mod:`vqacache.heads.recipe`): every rank builds the
same model (same seed) and reads its share of the training store (a
:class:`~torch.utils.data.DistributedSampler` with ``num_replicas`` = world size: rank ``r``
takes positions ``r, r + W, ...`` of the epoch's permutation, so step ``i``'s samples over
all ranks are the ones one process takes with the same global batch). ``--batch-size`` is
the global batch: each rank reads ``batch_size / W`` samples a step (:func:`local_batch_size`).
:class:`LossStep` runs the method's whole ``loss()`` inside DDP's forward (methods call their
model's own sub-modules, e.g. ``model.losses(batch)``, which a DDP wrapper does not expose);
DDP averages the gradients over the ranks, so a loss that is a mean over the batch gets the
gradient of the global batch's mean. Validation, checkpoints, metrics, curves and printed
lines are rank 0's; the other ranks wait at a :meth:`~Distributed.barrier`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqacache.cache_spec.errors import UsageError

BARRIER_TIMEOUT = timedelta(hours=2)
"""How long ranks wait for each other (rank 0's validation and checkpoint writes included)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place among ``world_size`` training processes (1: a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """From torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (absent: one process)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, writes and prints."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """The rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` when several processes train."""
        if self.enabled and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def start(self, device: str) -> None:
        """Join the process group (nccl on CUDA, gloo on the CPU); nothing for one process."""
        if not self.enabled or dist.is_initialized():
            return
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if cuda else "gloo", rank=self.rank, world_size=self.world_size,
                                timeout=BARRIER_TIMEOUT)

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: list[float], device: str) -> list[float]:
        """The mean of each value over the ranks (one all-reduce); unchanged for one process."""
        if not self.enabled or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def wrap(self, step: LossStep, device: str) -> nn.Module:
        """``step`` in DistributedDataParallel (several processes), else itself.

        ``find_unused_parameters``: some methods leave parameters out of a step's graph (a
        branch not taken); DDP then marks them ready instead of waiting for them."""
        if not self.enabled:
            return step
        ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        return nn.parallel.DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Samples per rank and step; the global ``--batch-size`` must split evenly over the ranks."""
    if global_batch % world_size:
        raise UsageError(f"--batch-size {global_batch} is the global batch and must be a multiple of the "
                         f"{world_size} processes")
    return global_batch // world_size


class LossStep(nn.Module):
    """A method's ``loss(model, batch, args)`` as a module's forward, so DDP sees the whole
    step (its hooks average the gradients of every parameter the loss used)."""

    def __init__(self, model: nn.Module, loss: Any, args: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.args = args

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        return self.loss(self.model, batch, self.args)
