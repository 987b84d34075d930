"""Multi-process training (``torchrun``): two CPU processes with the gloo backend train to the
same losses and parameters as one process with the same global batch, and resume.

The reference is an independent run in this process (one rank, no process group); the two
ranks are spawned by the test (``torch.multiprocessing.spawn``, the env torchrun sets, a free
loopback port), run one epoch, stop, resume and finish. ``uniform`` is used: its loss is a mean
over the batch and it draws nothing at random, so DDP's gradient average over the ranks equals
the global batch's gradient.

Mutations tried (each fails a test here):

1. the sampler's ``num_replicas=1, rank=0`` (every rank reads the whole store, the old sampler):
   ``test_two_processes_train_as_one`` fails (losses differ).
2. the per-rank batch = the global ``--batch-size`` (not split): ``test_two_processes_train_as_one``
   fails (half the steps, other losses).
3. ``Distributed.wrap`` returning the step without DDP (no gradient average):
   ``test_two_processes_train_as_one`` fails (parameters differ).
4. ``Distributed.mean`` returning the rank's own values (rank 0's losses written):
   ``test_two_processes_train_as_one`` fails (metrics' losses differ).
5. ``local_batch_size`` without its divisibility check: ``test_batch_must_split_over_the_ranks`` fails.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vqacache.cache_spec.errors import UsageError
from vqacache.heads.checkpoint import load_checkpoint
from vqacache.heads.distributed import Distributed, local_batch_size
from vqacache.heads.synthetic import make_temporal_store
from vqacache.heads.train import TrainConfig, train

SMALL = {"num_frames": 8, "num_select": 2, "num_layers": 1, "num_heads": 2, "dim": 16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(store: str, out: str, **kw) -> TrainConfig:
    return TrainConfig(method="uniform", store=store, out=out, batch_size=4, lr=3e-3, args=SMALL, epochs=2,
                       amp=False, **kw)


def _rank(rank: int, world: int, ports: list[int], store: str, out: str) -> None:
    """One torchrun-like process: an interrupted run (1 epoch), then its resume."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    for port, kw in zip(ports, ({"stop_after": 1}, {"resume": True}), strict=True):
        os.environ["MASTER_PORT"] = str(port)
        metrics = train(_config(store, out, **kw))
        assert bool(metrics) == (rank == 0)  # only rank 0 validates and reports


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(make_temporal_store(tmp_path_factory.mktemp("ddp") / "s.zarr", {"train": 4, "val": 2}, n_frames=10,
                                   dim=16, n_patches=2, teacher=False).path)


def test_two_processes_train_as_one(store, tmp_path):
    one = train(_config(store, str(tmp_path / "one")))  # 4 videos x 2 questions / 4: 2 steps an epoch
    mp.spawn(_rank, args=(2, [_free_port(), _free_port()], store, str(tmp_path / "two")), nprocs=2, join=True)

    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]  # rank 0 alone wrote, the resume appended epoch 1
    assert lines[-1]["step"] == one["step"] == 4  # 2 epochs of 2 steps
    assert lines[-1]["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    assert lines[-1]["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5, abs=1e-6)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2

    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and not any(k.startswith("module.") for k in b)  # the unwrapped model's state
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("qkv.bias"):  # softmax ignores the key bias: its gradient is rounding noise, which Adam
            d = x.shape[0] // 3  # scales up to ~lr a step; the query and value biases are compared
            x, y = torch.cat([x[:d], x[2 * d:]]), torch.cat([y[:d], y[2 * d:]])
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=k)


def test_batch_must_split_over_the_ranks():
    assert local_batch_size(8, 2) == 4 and local_batch_size(5, 1) == 5
    with pytest.raises(UsageError, match="--batch-size 5"):
        local_batch_size(5, 2)


def test_env_without_torchrun_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    d = Distributed.from_env()
    assert (d.rank, d.world_size, d.is_main, d.enabled) == (0, 1, True, False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = Distributed.from_env()
    assert (d.rank, d.world_size, d.is_main, d.device("cuda"), d.device("cpu")) == (3, 4, False, "cuda:1", "cpu")
