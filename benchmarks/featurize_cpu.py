"""Stage-one throughput on CPU: decode-only, encode-only and end-to-end, in one run.

Inputs: the demo's val clips and the shared real videos (../shared/data/videos), gathered
into one folder dataset. Figures, all in output frames (7.5 fps) per second of wall time:

- decode-only: ``decode_at_fps`` on every video (frames at 7.5 fps, resized to short side 256);
- encode-only: a bare open_clip ``model.encode_image`` forward on the same unique frames,
  already preprocessed, in the same batch size (the irreducible model cost);
- end-to-end: ``vqa-featurize``'s library call in this process (``workers=0``) into a fresh
  store (decode in a child process, preprocess, encode, expand repeats, write, checksum);
- overhead_ratio = end-to-end time / (decode time + encode time): 1.0 means the pipeline adds
  nothing to its two unavoidable stages (single process: they run one after the other).

    uv run python benchmarks/featurize_cpu.py [--encoder clip-b16] [--batch-size 16]

The last line is one JSON object with decode_fps, encode_fps, end_to_end_fps, overhead_ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vqacache.featurize.datasets import get_dataset
from vqacache.featurize.decode import decode_at_fps
from vqacache.featurize.encoders import get_encoder
from vqacache.featurize.pipeline import FeaturizeConfig, featurize

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def gather_videos(work: Path, repeat: int = 1) -> Path:
    """A folder dataset of symlinks: demo val clips + the shared real videos, each ``repeat``
    times under different names (a longer run of the same frames, for fast devices)."""
    demo = get_dataset("demo", work / "demo")
    sources = [(f"demo_{v.path.name}", v.path) for v in demo.videos("val")]
    if SHARED_VIDEOS.is_dir():
        sources += [(f"real_{path.name}", path) for path in sorted(SHARED_VIDEOS.iterdir())]
    else:
        print(f"note: {SHARED_VIDEOS} not found; demo clips only")
    folder = work / "videos"
    folder.mkdir()
    for copy in range(repeat):
        for name, path in sources:
            (folder / (name if repeat == 1 else f"{copy:03d}_{name}")).symlink_to(path)
    return folder


def decode_and_preprocess(paths: list[Path], encoder) -> tuple[float, int, torch.Tensor]:  # noqa: ANN001
    """``decode_at_fps`` on every video, timed; then the unique frames preprocessed (untimed).
    Returns (decode seconds, output frames, preprocessed unique frames (U, 3, S, S) on CPU)."""
    t0 = time.perf_counter()
    decoded = [decode_at_fps(p) for p in paths]
    decode_s = time.perf_counter() - t0
    n_frames = sum(len(d.frames) for d in decoded)
    batch = torch.cat([encoder.transform(d.frames[~d.is_repeat]) for d in decoded])
    return decode_s, n_frames, batch


def bare_encode_seconds(encoder, batch: torch.Tensor, batch_size: int) -> float:  # noqa: ANN001
    """A bare open_clip ``encode_image`` over ``batch`` on the encoder's device and precision
    (inputs already there, outside the timer): the irreducible model cost."""
    on_device = batch.to(encoder.device)
    sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), encoder.autocast():
        encoder.model.encode_image(on_device[:2])  # warm-up
        sync()
        t0 = time.perf_counter()
        for start in range(0, len(on_device), batch_size):
            encoder.model.encode_image(on_device[start : start + batch_size])
        sync()
        return time.perf_counter() - t0


def time_decode_and_encode(paths: list[Path], encoder, batch_size: int) -> tuple[float, float, int, int]:  # noqa: ANN001
    """The two unavoidable stages, timed alone: ``decode_at_fps`` on every video, then a bare
    open_clip ``encode_image`` over the same unique frames (preprocessed outside the timer).
    Returns (decode seconds, encode seconds, output frames, unique frames)."""
    decode_s, n_frames, batch = decode_and_preprocess(paths, encoder)
    return decode_s, bare_encode_seconds(encoder, batch, batch_size), n_frames, len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="clip-b16")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = gather_videos(work)
        paths = sorted(folder.iterdir())
        encoder = get_encoder(args.encoder, "random", patches=True)

        decode_s, encode_s, n_frames, n_unique = time_decode_and_encode(paths, encoder, args.batch_size)

        # end-to-end through the library call behind vqa-featurize
        config = FeaturizeConfig(
            dataset="folder", encoder=args.encoder, weights="random", data_root=folder,
            cache_root=work / "cache", batch_size=args.batch_size, workers=0, device="cpu",
        )
        t0 = time.perf_counter()
        result = featurize(config)
        e2e_s = time.perf_counter() - t0
        assert result.failed == 0 and result.frames == n_frames, (result.failures, result.frames, n_frames)

    figures = {
        "encoder": args.encoder,
        "videos": len(paths),
        "frames": n_frames,
        "unique_frames": n_unique,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "decode_fps": round(n_frames / decode_s, 2),
        "encode_fps": round(n_frames / encode_s, 2),
        "end_to_end_fps": round(n_frames / e2e_s, 2),
        "overhead_ratio": round(e2e_s / (decode_s + encode_s), 3),
        "stage_seconds": {k: round(v, 2) for k, v in result.timings.items()},
    }
    print(f"{len(paths)} videos, {n_frames} frames at 7.5 fps ({n_unique} unique), encoder {args.encoder}")
    print(f"decode-only   {decode_s:7.1f} s  {figures['decode_fps']:8.2f} frames/s")
    print(f"encode-only   {encode_s:7.1f} s  {figures['encode_fps']:8.2f} frames/s  (bare open_clip forward)")
    print(f"end-to-end    {e2e_s:7.1f} s  {figures['end_to_end_fps']:8.2f} frames/s")
    print(f"overhead      {figures['overhead_ratio']:.3f} x (end-to-end / (decode + encode))")
    print(json.dumps(figures))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
