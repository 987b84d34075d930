"""The Dask pipeline against its two unavoidable stages, in one run on the same inputs.

Inputs as in featurize_cpu.py (demo val clips + the shared real videos). Figures, in output
frames (7.5 fps) per second of wall time:

- decode-only: ``decode_at_fps`` on every video in this process;
- encode-only: bare open_clip ``encode_image`` on the same unique frames, preprocessed;
- pipeline: ``featurize`` on a local Dask cluster (the default of ``vqa-featurize``): cluster
  start, decode in child processes running ahead, cross-video batching, write;
- in-process: the same with ``workers=0`` (no Dask), to separate Dask's cost from the rest;
- overhead_ratio = pipeline time / (decode time + encode time); target <= 1.10 here;
- encode_efficiency = bare forward time / the pipeline's own encoder time (from the run log):
  1.0 means the encoder ran as fast inside the pipeline as alone.

    uv run python benchmarks/featurize_pipeline.py [--encoder clip-b16] [--batch-size 16]

The last line is one JSON object with decode_fps, encode_fps, pipeline_fps, overhead_ratio,
encode_efficiency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize_cpu import gather_videos, time_decode_and_encode  # noqa: E402

from vqacache.cache_spec import open_store  # noqa: E402
from vqacache.featurize.encoders import get_encoder  # noqa: E402
from vqacache.featurize.pipeline import FeaturizeConfig, featurize  # noqa: E402


def run(folder: Path, cache: Path, encoder: str, batch: int, workers: int | None) -> tuple[float, dict]:
    config = FeaturizeConfig(dataset="folder", encoder=encoder, weights="random", data_root=folder,
                             cache_root=cache, batch_size=batch, workers=workers)
    t0 = time.perf_counter()
    result = featurize(config)
    seconds = time.perf_counter() - t0
    assert result.failed == 0, result.failures
    log = open_store(result.store_path).run_logs()[-1]
    return seconds, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="clip-b16")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = gather_videos(work)
        paths = sorted(folder.iterdir())
        encoder = get_encoder(args.encoder, "random")
        decode_s, encode_s, n_frames, _ = time_decode_and_encode(paths, encoder, args.batch_size)
        del encoder
        pipe_s, pipe_log = run(folder, work / "dask", args.encoder, args.batch_size, None)
        inline_s, inline_log = run(folder, work / "inline", args.encoder, args.batch_size, 0)
    figures = {
        "encoder": args.encoder,
        "videos": len(paths),
        "frames": n_frames,
        "decode_fps": round(n_frames / decode_s, 2),
        "encode_fps": round(n_frames / encode_s, 2),
        "pipeline_fps": round(n_frames / pipe_s, 2),
        "in_process_fps": round(n_frames / inline_s, 2),
        "overhead_ratio": round(pipe_s / (decode_s + encode_s), 3),
        "in_process_overhead_ratio": round(inline_s / (decode_s + encode_s), 3),
        "encode_efficiency": round(encode_s / pipe_log["stage_seconds"]["encode"], 3),
        "in_process_encode_efficiency": round(encode_s / inline_log["stage_seconds"]["encode"], 3),
        "pipeline_stage_seconds": pipe_log["stage_seconds"],
    }
    print(f"{len(paths)} videos, {n_frames} frames at 7.5 fps, encoder {args.encoder}, batch {args.batch_size}")
    print(f"decode-only  {decode_s:7.1f} s  {figures['decode_fps']:8.2f} frames/s")
    print(f"encode-only  {encode_s:7.1f} s  {figures['encode_fps']:8.2f} frames/s (bare forward)")
    print(f"pipeline     {pipe_s:7.1f} s  {figures['pipeline_fps']:8.2f} frames/s (local Dask cluster)  overhead {figures['overhead_ratio']:.3f}x  encode efficiency {figures['encode_efficiency']:.3f}")
    print(f"in-process   {inline_s:7.1f} s  {figures['in_process_fps']:8.2f} frames/s (workers=0)          overhead {figures['in_process_overhead_ratio']:.3f}x  encode efficiency {figures['in_process_encode_efficiency']:.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
