"""Samples/s of a training loop reading from a store vs the same loop over in-memory tensors.

    uv run python benchmarks/loader.py [--store PATH] [--method videodistill] [--workers 2]

Without ``--store`` a synthetic store (vqacache.heads.synthetic) is written to a temporary
folder. One run of each: the same model, batch size and number of steps; "store" builds
each batch with a DataLoader over QADataset (lazy zarr reads, ``--workers`` processes),
"memory" iterates over the same batches collated once beforehand. Last line: JSON with
store_samples_per_s, memory_samples_per_s, store_vs_memory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vqacache.heads.data import QADataset, collate
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.synthetic import make_temporal_store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store")
    p.add_argument("--method", default="videodistill")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--num-frames", type=int, default=32)
    p.add_argument("--num-select", type=int, default=4)
    p.add_argument("--dim", type=int, default=64)
    a = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    store = a.store or str(make_temporal_store(Path(tmp.name) / "s.zarr", {"train": 150}, n_frames=a.num_frames).path)
    method = get_method(a.method)
    args = method_args(method, {"num_frames": a.num_frames, "num_select": a.num_select, "num_layers": 2,
                                "num_heads": 4, "dim": a.dim})
    ds = QADataset(store, "train", **method.data(args))
    torch.manual_seed(0)
    model = method.build(args, ds.dims())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch) -> None:
        loss, _ = method.loss(model, batch, args)
        opt.zero_grad()
        loss.backward()
        opt.step()

    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, collate_fn=collate, num_workers=a.workers,
                        prefetch_factor=4 if a.workers else None, drop_last=True)
    step(next(iter(loader)))  # warm-up: lazy imports, allocator
    results = {}
    for name in ("store", "memory"):
        if name == "store":
            batches = loader
        else:
            batches = [collate([ds[i] for i in range(j, j + a.batch_size)])
                       for j in range(0, a.batch_size * a.steps, a.batch_size) if j + a.batch_size <= len(ds)]
        n, t0 = 0, time.perf_counter()
        while n < a.steps:
            for batch in batches:
                step(batch)
                n += 1
                if n >= a.steps:
                    break
        results[f"{name}_samples_per_s"] = a.steps * a.batch_size / (time.perf_counter() - t0)
        print(f"{name}: {results[f'{name}_samples_per_s']:.1f} samples/s")
    results["store_vs_memory"] = results["store_samples_per_s"] / results["memory_samples_per_s"]
    results.update({"method": a.method, "workers": a.workers, "batch_size": a.batch_size, "steps": a.steps})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
