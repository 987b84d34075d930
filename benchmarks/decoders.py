"""Decoders against PyAV on real videos: exactness of the planned frames, and decode speed.

    uv run python benchmarks/decoders.py [--videos ../shared/data/videos] [--repeats 3]

For each video, PyAV (the reference) decodes every frame to rgb24 and the frames to keep at
7.5 fps are chosen by presentation time (nearest pts, ties to the earlier frame; the rule
written out plainly, as in tests/test_decode.py). Then whichever candidate decoders import
here are measured on the same file:

- ``decord``: the module ``decord``, from the distribution ``decord`` (0.6.0, unmaintained)
  or ``decord2`` (the maintained fork, same module name); which one is reported. Frame count,
  timestamps against the demuxed pts, and ``get_batch`` of the planned frames.
- ``torchcodec`` (needs system FFmpeg libraries): ``get_frames_at`` of the planned frames
  in exact seek mode.

Exactness = the planned frames are pixel-identical to PyAV's (``planned_equal`` of
``planned``); ``all_equal`` compares every frame. Times are the best of ``--repeats`` runs,
each opening the file anew: ``pyav_s`` decodes every frame and converts each to RGB,
``pyav_planned_s`` converts only the planned ones (what the project's PyAV path does), and
``<decoder>.s`` fetches the planned ones only (what the decord path does). When vqacache
imports, the project's own ``decode_at_fps`` is timed too (``auto`` vs ``pyav``; probe and
resize to 256 included) with its backend choice. The scratch environments that measured the
old decord and torchcodec had no vqacache: the script runs with av, numpy and the decoder
alone. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np

FPS = Fraction(15, 2)


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(best wall time in seconds, last result) of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pyav_all(path: Path) -> tuple[np.ndarray, list[int], Fraction]:
    """((N, H, W, 3) uint8 frames in presentation order, sorted pts, time base)."""
    images, stamps = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = Fraction(stream.time_base)
        for frame in container.decode(stream):
            images.append(frame.to_ndarray(format="rgb24"))
            stamps.append(frame.pts)
    return np.stack(images), sorted(stamps), time_base


def pyav_planned(path: Path, unique: list[int]) -> np.ndarray:
    """(U, H, W, 3): decode every frame, convert only the planned ones (the project's PyAV path)."""
    wanted, images = set(unique), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for j, frame in enumerate(container.decode(stream)):
            if j in wanted:
                images.append(frame.to_ndarray(format="rgb24"))
    return np.stack(images)


def plan(stamps: list[int], time_base: Fraction, fps: Fraction = FPS) -> list[int]:
    """Presentation-order index of the frame shown at each output step k / fps."""
    seconds = [(s - stamps[0]) * time_base for s in stamps]
    gaps = sorted(b - a for a, b in zip(seconds, seconds[1:]) if b > a)
    duration = seconds[-1] + gaps[(len(gaps) - 1) // 2]
    chosen: list[int] = []
    j = 0
    while Fraction(len(chosen)) / fps < duration:
        t = Fraction(len(chosen)) / fps
        while j + 1 < len(seconds) and abs(seconds[j + 1] - t) < abs(seconds[j] - t):
            j += 1
        chosen.append(j)
    return chosen


def compare(got: np.ndarray, want: np.ndarray) -> int:
    """How many frames of (N, H, W, 3) ``got`` equal ``want`` exactly (0 on a shape mismatch)."""
    if got.shape != want.shape:
        return 0
    return int(sum(np.array_equal(a, b) for a, b in zip(got, want)))


def measure_decord(path: Path, frames: np.ndarray, seconds: np.ndarray, chosen: list[int],
                   repeats: int) -> dict[str, Any]:
    from decord import VideoReader, cpu

    unique = sorted(set(chosen))

    def planned() -> np.ndarray:
        reader = VideoReader(str(path), ctx=cpu(0))
        return reader.get_batch(unique).asnumpy()

    reader = VideoReader(str(path), ctx=cpu(0))
    n = len(reader)
    out: dict[str, Any] = {"n_frames": n}
    if n == frames.shape[0]:
        stamps = reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
        out["max_pts_error_s"] = float(np.abs((stamps - stamps[0]) - seconds).max())
        out["all_equal"] = compare(reader.get_batch(list(range(n))).asnumpy(), frames)
    t, got = best_of(repeats, planned)
    out.update(planned=len(unique), planned_equal=compare(got, frames[unique]), s=round(t, 4))
    return out


def measure_torchcodec(path: Path, frames: np.ndarray, chosen: list[int], repeats: int) -> dict[str, Any]:
    from torchcodec.decoders import VideoDecoder

    unique = sorted(set(chosen))

    def planned() -> np.ndarray:
        decoder = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="exact")
        return decoder.get_frames_at(unique).data.numpy()

    decoder = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="exact")
    n = decoder.metadata.num_frames
    out: dict[str, Any] = {"n_frames": n}
    t, got = best_of(repeats, planned)
    out.update(planned=len(unique), planned_equal=compare(got, frames[unique]), s=round(t, 4))
    return out


def measure_project(path: Path, repeats: int) -> dict[str, Any] | None:
    try:
        from vqacache.featurize.decode import decode_at_fps
    except ImportError:
        return None
    t_auto, auto = best_of(repeats, lambda: decode_at_fps(path, backend="auto"))
    t_pyav, ref = best_of(repeats, lambda: decode_at_fps(path, backend="pyav"))
    return {
        "backend": auto.info.backend,
        "fallback_reason": auto.info.fallback_reason,
        "equal_to_pyav_path": bool(np.array_equal(auto.frames, ref.frames)),
        "auto_s": round(t_auto, 4),
        "pyav_s": round(t_pyav, 4),
    }


def distribution(module: str) -> str | None:
    """``name==version`` of the installed distribution that provides ``module``, or None."""
    for name, modules in metadata.packages_distributions().items():
        if name == module:
            dist = modules[0]
            return f"{dist}=={metadata.version(dist)}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, default=Path(__file__).parents[1] / "../shared/data/videos")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    decoders = {m: distribution(m) for m in ("decord", "torchcodec") if distribution(m)}
    results: dict[str, Any] = {"av": av.__version__, "decoders": decoders, "videos": {}}
    for path in sorted(p for p in args.videos.iterdir() if p.is_file()):
        t_ref, (frames, stamps, time_base) = best_of(args.repeats, lambda: pyav_all(path))
        seconds = np.array([float((s - stamps[0]) * time_base) for s in stamps])
        chosen = plan(stamps, time_base)
        unique = sorted(set(chosen))
        t_planned, got = best_of(args.repeats, lambda: pyav_planned(path, unique))
        assert np.array_equal(got, frames[unique]), path.name
        row: dict[str, Any] = {"n_frames": frames.shape[0], "n_out": len(chosen), "pyav_s": round(t_ref, 4),
                               "pyav_planned_s": round(t_planned, 4)}
        for name in decoders:
            try:
                if name == "decord":
                    row[name] = measure_decord(path, frames, seconds, chosen, args.repeats)
                else:
                    row[name] = measure_torchcodec(path, frames, chosen, args.repeats)
            except Exception as e:  # a decoder that fails on a file is a result, not a crash
                row[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
        project = measure_project(path, args.repeats)
        if project is not None:
            row["project"] = project
        results["videos"][path.name] = row
        print(path.name, json.dumps(row), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
