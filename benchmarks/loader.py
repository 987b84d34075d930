"""Samples/s of a training loop reading from a store vs the same loop over in-memory batches.

    uv run python benchmarks/loader.py [--shape both|synthetic|nextqa] [--workers 2] [--threads 1]
        [--steps 30] [--rounds 5] [--reads-only N] [--nextqa-videos 5000] [--nextqa-store PATH]
        [--store PATH --method videodistill]

Two store shapes, each written to a temporary folder unless given:

* ``synthetic``: the diagnostic's store (:mod:`vqacache.heads.synthetic`, 150 clips x 2
  questions, 32 frames, E = W = 32, 4 patch tokens, float32), method ``videodistill`` with the
  cosine multiple-choice head (the model the original 0.15 figure was measured with; it reads
  the cls and patch tokens of all N = 32 frames, text, candidates and the teacher's
  probabilities);
* ``nextqa``: NExT-QA's shape: ``--nextqa-videos`` videos (5,000) x 5 questions x 5
  candidates, 100 frames of float16 CLS (E = 512) and patch tokens (4 a frame, W = 768: a
  ``--patch-pool 7`` CLIP ViT-B/16 store), text E = 512; method ``uniform`` with N = 100,
  K = 16: each sample reads 100 CLS rows and 16 frames' patches ("patches for 16").

For each shape, the same model, batch size (8) and optimiser step, the training step on
``--threads`` torch threads (default 1: on this 2-core machine two threads and two workers
oversubscribe the cores; ``--threads 2`` measures that case). A run is ``--steps`` training
steps (at most one epoch), timed:

1. ``cold``: a fresh DataLoader (``--workers`` processes, ``persistent_workers``, prefetch 4),
   from ``iter()``: **includes** worker start-up and the first open of each video visited
   (zarr metadata, pts, shard indexes); compared with one in-memory run right after it.
2. Not timed: the rest of that epoch is drawn from the loader without training, so every
   worker has opened every video once, as in any epoch after the first of a training run
   (the training loop keeps its workers and their open readers across epochs).
3. ``--rounds`` pairs, back to back: ``store``, the steady state: a new epoch's first steps
   from ``iter()`` on the same loader (reads, collation and the transfer from the workers;
   their prefetch starts at ``iter()``, inside the timed region); then, **not timed**, the
   rest of that epoch drawn without training, so that no stale prefetch reaches the next
   round and the workers are idle during ``memory``: the same number of steps over batches
   collated once beforehand (no reads). ``store_vs_memory`` is the median of the rounds'
   ratios, so both sides of a ratio saw the same machine load. ``wait_ms_per_step``: the
   median over rounds of the wall time spent in ``next(loader)`` a step (waiting for a batch
   and receiving it). ``store_vs_memory_main_cpu``: the training process's CPU time a step
   (all its threads, not the workers'), memory over store: what the wall ratio would be with
   cores free for the workers and no wake-up delays, so less sensitive to other jobs' load.

Also, less sensitive to other processes' load: CPU time of this process per sample for reading
(a batch's ``ds[i]`` + its collate, warm readers, one torch thread as in a DataLoader worker)
and for the training step.

``--reads-only N``: no training; per shape, the CPU time of reading N samples (warm readers)
through the pread path and through zarr's own reads (the fast path switched off), the cause
this benchmark was opened for.

Last line: one JSON object, per shape ``store_samples_per_s``, ``cold_samples_per_s``,
``memory_samples_per_s``, ``store_vs_memory`` (steady / memory), ``cold_vs_memory``,
``wait_ms_per_step``, ``store_vs_memory_main_cpu``. On a
shared machine the absolute figures move with the load (every wake-up of a worker or of a
queue thread waits for a core); compare the ratios of one run and give the load with them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqacache.cache_spec import open_store
from vqacache.heads.data import QADataset, collate
from vqacache.heads.methods import get_method, method_args
from vqacache.heads.synthetic import make_temporal_store, synthetic_spec


def make_nextqa_shaped_store(path: Path, n_videos: int, n_frames: int = 100, questions: int = 5, candidates: int = 5,
                             cls_dim: int = 512, patch_dim: int = 768, n_patches: int = 4) -> Path:
    """Random features in NExT-QA's shape (see the module doc); reused when ``path`` exists."""
    if (path / "zarr.json").exists():
        return path
    params = {"shape": "nextqa", "n_videos": n_videos, "n_frames": n_frames, "questions": questions}
    spec = dataclasses.replace(synthetic_spec(**params), dtype="float16")
    store = open_store(path, "a", spec=spec, dataset="synthetic-nextqa-shape")
    rng = np.random.default_rng(0)
    pts = np.arange(n_frames) / 7.5
    for v in range(n_videos):
        vid = f"v{v:05d}"
        with store.write_video(vid, {"source": {"synthetic": "nextqa-shape"}}) as w:
            w.append(cls=rng.standard_normal((n_frames, cls_dim), np.float32),
                     patch=rng.standard_normal((n_frames, n_patches, patch_dim), np.float32),
                     pts=pts, src_index=np.arange(n_frames), is_repeat=np.zeros(n_frames, bool))
        entries = [{"qid": f"{vid}_{q}", "question": f"q{q}", "candidates": [f"c{c}" for c in range(candidates)],
                    "answer": int(rng.integers(candidates)), "qtype": "CW", "start": None, "end": None}
                   for q in range(questions)]
        store.write_questions("train", vid, entries, {
            "text": rng.standard_normal((questions, cls_dim), np.float32),
            "text_tokens": np.zeros((questions, 1, 8), np.float32), "text_len": np.ones(questions, np.int64),
            "cand": rng.standard_normal((questions, candidates, cls_dim), np.float32),
            "cand_tokens": np.zeros((questions, candidates, 1, 8), np.float32),
            "cand_len": np.ones((questions, candidates), np.int64),
        })
    return path


def measure(store: str, method_name: str, overrides: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """The three timed runs of the module doc on one store."""
    method = get_method(method_name)
    args = method_args(method, overrides)
    ds = QADataset(store, "train", **method.data(args))
    torch.manual_seed(0)
    model = method.build(args, ds.dims())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: dict[str, Any]) -> None:
        loss, _ = method.loss(model, batch, args)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(collate([ds[i] for i in range(a.batch_size)]))  # warm-up: lazy imports, allocator
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, generator=gen, collate_fn=collate,
                        num_workers=a.workers, persistent_workers=a.workers > 0,
                        prefetch_factor=4 if a.workers else None, drop_last=True)
    steps = min(a.steps, len(loader))  # one epoch at most: a round never waits for a new epoch

    def timed(batches: Any, waits: list[float] | None = None, cpu: list[float] | None = None) -> float:
        """Samples/s of ``steps`` training steps; ``waits`` gets the wall seconds spent in next(),
        ``cpu`` the CPU seconds of this process (all its threads; not the workers')."""
        it, wait, t0, c0 = iter(batches), 0.0, time.perf_counter(), time.process_time()
        for _ in range(steps):
            w0 = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - w0
            step(batch)
        elapsed = time.perf_counter() - t0
        if cpu is not None:
            cpu.append(time.process_time() - c0)
        if waits is not None:
            waits.append(wait)
        return steps * a.batch_size / elapsed

    out: dict[str, Any] = {"method": method_name, "samples": len(ds), "videos": len({r.video_id for r in ds.refs}),
                           "steps": steps}
    memory = [collate([ds[j] for j in range(i * a.batch_size, (i + 1) * a.batch_size)]) for i in range(steps)]
    it = iter(loader)
    cold, cold_memory = timed(it), timed(memory)
    t0 = time.perf_counter()
    for _ in it:  # not timed: the rest of the first epoch, without training
        pass
    out["rest_of_first_epoch_s"] = time.perf_counter() - t0
    store_rates, memory_rates, waits, drains, store_cpu, memory_cpu = [], [], [], [], [], []
    for _ in range(a.rounds):  # back to back, so both see the same load on a shared machine
        it = iter(loader)  # a new epoch: the workers' prefetch starts inside the timed steps
        store_rates.append(timed(it, waits, store_cpu))
        t0 = time.perf_counter()
        for _ in it:  # not timed: the rest of the epoch without training, so that the workers are
            pass  # idle during the in-memory steps and no stale prefetch reaches the next round
        drains.append(time.perf_counter() - t0)
        memory_rates.append(timed(memory, cpu=memory_cpu))
    ratios = [s / m for s, m in zip(store_rates, memory_rates)]
    out.update({
        "cold_samples_per_s": cold, "store_samples_per_s": float(np.median(store_rates)),
        "memory_samples_per_s": float(np.median(memory_rates)),
        "store_vs_memory": float(np.median(ratios)), "store_vs_memory_rounds": [round(r, 3) for r in ratios],
        "cold_vs_memory": cold / cold_memory,
        "wait_ms_per_step": float(np.median(waits)) * 1e3 / steps,
        "rest_of_epoch_s": float(np.median(drains)),
        "store_main_cpu_ms_per_step": float(np.median(store_cpu)) * 1e3 / steps,
        "memory_main_cpu_ms_per_step": float(np.median(memory_cpu)) * 1e3 / steps,
    })
    out["store_vs_memory_main_cpu"] = out["memory_main_cpu_ms_per_step"] / out["store_main_cpu_ms_per_step"]
    t0 = time.process_time()  # CPU seconds of this process: less sensitive to other processes' load
    with torch_threads(1):  # as in a DataLoader worker (PyTorch sets 1 there)
        for i in range(steps):
            collate([ds[j] for j in range(i * a.batch_size, (i + 1) * a.batch_size)])
    out["read_cpu_ms_per_sample"] = (time.process_time() - t0) * 1e3 / (steps * a.batch_size)
    t0 = time.process_time()
    timed(memory)
    out["step_cpu_ms_per_sample"] = (time.process_time() - t0) * 1e3 / (steps * a.batch_size)
    for key in ("cold", "store", "memory"):
        print(f"  {key}: {out[f'{key}_samples_per_s']:.1f} samples/s")
    print(f"  store_vs_memory {out['store_vs_memory']:.2f} (median of {a.rounds} rounds of {steps} steps: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})  cold_vs_memory {out['cold_vs_memory']:.2f}"
          f"  (rest of the first epoch, untimed: {out['rest_of_first_epoch_s']:.1f} s)")
    print(f"  steady state: {out['wait_ms_per_step']:.2f} ms a step waiting in next(loader) (receiving included); "
          f"rest of each epoch, untimed: {out['rest_of_epoch_s']:.1f} s")
    print(f"  CPU of the training process a step: store {out['store_main_cpu_ms_per_step']:.2f} ms, memory "
          f"{out['memory_main_cpu_ms_per_step']:.2f} ms (ratio {out['store_vs_memory_main_cpu']:.2f}: the wall ratio "
          "when the workers have cores of their own and nothing waits)")
    print(f"  CPU per sample, in this process: reading {out['read_cpu_ms_per_sample']:.2f} ms (a batch's ds[i] + "
          f"collate, warm readers), training step {out['step_cpu_ms_per_sample']:.2f} ms", flush=True)
    del loader
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reads_only(store: str, method_name: str, overrides: dict[str, Any], n: int) -> dict[str, float]:
    """CPU ms per sample of ``ds[i]`` + collate in this process, warm readers, pread vs zarr's reads
    (the same QADataset with :mod:`vqacache.heads.row_reads`'s fast path switched off)."""
    from vqacache.heads import row_reads

    method = get_method(method_name)
    args = method_args(method, overrides)
    out: dict[str, float] = {}
    real = row_reads._layout
    for name, layout in (("pread", real), ("zarr", lambda array: None)):
        row_reads._layout = layout
        try:
            ds = QADataset(store, "train", **method.data(args))
            m = min(n, len(ds))
            for i in range(m):  # warm: every video opened once, as after a first epoch
                ds[i]
            t0 = time.process_time()
            with torch_threads(1):  # as in a DataLoader worker (PyTorch sets 1 there)
                for i in range(m):
                    collate([ds[i]])
            out[f"{name}_read_cpu_ms_per_sample"] = (time.process_time() - t0) * 1e3 / m
        finally:
            row_reads._layout = real
    out["zarr_over_pread"] = out["zarr_read_cpu_ms_per_sample"] / out["pread_read_cpu_ms_per_sample"]
    print(f"  reads, CPU ms per sample (warm): pread {out['pread_read_cpu_ms_per_sample']:.2f}, "
          f"zarr {out['zarr_read_cpu_ms_per_sample']:.2f} ({out['zarr_over_pread']:.1f}x)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=("both", "synthetic", "nextqa"), default="both")
    p.add_argument("--store", help="measure this store instead of the synthetic shape (with --method)")
    p.add_argument("--method", default="videodistill")
    p.add_argument("--nextqa-videos", type=int, default=5000)
    p.add_argument("--nextqa-store", help="where to write (or reuse) the NExT-QA-shaped store")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="training steps per timed run (at most one epoch)")
    p.add_argument("--rounds", type=int, default=5, help="steady-state store/memory pairs (median reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training step (workers always use 1, as PyTorch sets)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--reads-only", type=int, default=0, metavar="N",
                   help="only compare the CPU cost of reading N samples through pread and through zarr (no training)")
    a = p.parse_args()
    if a.workers < 0 or min(a.steps, a.rounds, a.batch_size, a.nextqa_videos, a.threads) < 1:
        p.error("--workers >= 0; --steps, --rounds, --batch-size, --threads and --nextqa-videos >= 1")
    torch.set_num_threads(a.threads)
    tmp = tempfile.TemporaryDirectory()
    small = {"num_layers": 2, "num_heads": 4, "dim": a.dim}
    results: dict[str, Any] = {"workers": a.workers, "batch_size": a.batch_size, "steps": a.steps,
                               "torch_threads": torch.get_num_threads()}
    if a.shape in ("both", "synthetic"):
        store = a.store or str(make_temporal_store(Path(tmp.name) / "s.zarr", {"train": 150}, n_frames=32).path)
        print(f"synthetic ({a.method}, {store}):")
        head = {"mc_head": "cosine"} if a.method == "videodistill" else {}  # the model of the 0.15 figure
        over = {"num_frames": 32, "num_select": 4, **small, **head}
        results["synthetic"] = (reads_only(store, a.method, over, a.reads_only) if a.reads_only
                                else measure(store, a.method, over, a))
    if a.shape in ("both", "nextqa"):
        path = Path(a.nextqa_store) if a.nextqa_store else Path(tmp.name) / "nextqa.zarr"
        t0 = time.perf_counter()
        make_nextqa_shaped_store(path, a.nextqa_videos)
        n_videos = sum(1 for p in (path / "videos").iterdir() if p.is_dir())
        print(f"nextqa shape (uniform, {path}: {n_videos} videos, written or found in {time.perf_counter() - t0:.0f} s):")
        over = {"num_frames": 100, "num_select": 16, **small}
        results["nextqa"] = (reads_only(str(path), "uniform", over, a.reads_only) if a.reads_only
                             else measure(str(path), "uniform", over, a))
        results["nextqa"]["store_videos"] = n_videos
    print(json.dumps(results))


if __name__ == "__main__":
    main()
