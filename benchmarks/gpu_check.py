"""The GPU check (issue 11): every figure a GPU machine is borrowed for, in one run, one JSON file.

Run it through ``benchmarks/gpu_check.sh`` (which finds or makes the environment first):

    bash benchmarks/gpu_check.sh [OUT_DIR]               # on the GPU machine, about 5-7 min
    bash benchmarks/gpu_check.sh --cpu-smoke [OUT_DIR]   # the same steps on the CPU, tiny sizes

Steps, each a child process in its own process group with its own time limit, cut further
to what is left of the whole run's budget (``GPU_CHECK_BUDGET_S``, default 450 s for the
steps, after the environment set-up), so one slow step cannot eat the others' time:

1. ``cuda_tests``: ``pytest tests/test_device.py`` (in GPU mode the CUDA test must pass, not skip);
2. ``stage_one_clip_b16`` and 3. ``stage_one_vitg``: ``benchmarks/featurize_pipeline.py``
   (random weights; end-to-end pipeline frames/s and the bare encoder forward in the same
   run, nvidia-smi utilisation, the limiting stage), through ``stage-one`` below, which gives
   it a bare forward for encoders without open_clip's ``encode_image`` (vitg);
4. ``imageqa``: ``benchmarks/imageqa.py`` (the BLIP teacher, random weights, with its
   projection for all of NExT-QA);
5. ``train_epoch``: one epoch of ``vqa-train-head --method videodistill`` with AMP (bfloat16
   autocast on CUDA) on a synthetic store (``train-epoch`` below).

Writes ``OUT_DIR/gpu_check.json`` (one object: ``figures`` flat, ``steps`` with status,
seconds and each step's own JSON, ``env``) and ``OUT_DIR/gpu_check.log`` (every step's
output); prints the JSON object as its last line. Exit code 0 when every step passed.

Subcommands used by the steps (not meant to be called by hand): ``stage-one [--tiny-vitg]
-- ARGS`` and ``train-epoch ARGS``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY_CLIP = "vqacache-gpu-check-tiny"
TINY_CLIP_CFG = {  # benchmarks/faults.py's tiny open_clip ViT: ViT-B/16's code path, 2 narrow layers
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2},
}

# (seconds limit, GPU arguments, CPU-smoke arguments) per step; the limits add up to more than
# the budget on purpose: a step only gets what is left.
STAGE_ONE_GPU = ["--device", "cuda", "--skip-in-process", "--decode-processes", "4"]
STAGE_ONE_CPU = ["--device", "cpu", "--skip-in-process", "--workers", "0", "--batch-size", "8"]
TRAIN_GPU = ["--device", "cuda", "--train", "300", "--val", "40", "--frames", "100", "--dim", "512",
             "--patches", "4", "--batch-size", "32", "--workers", "4"]
TRAIN_CPU = ["--device", "cpu", "--train", "16", "--val", "8", "--frames", "32", "--dim", "32",
             "--patches", "4", "--batch-size", "8", "--workers", "0", "--num-select", "4"]


def steps(py: str, smoke: bool) -> list[tuple[str, float, list[str]]]:
    me = [py, str(BENCH / "gpu_check.py")]
    pytest = [py, "-m", "pytest", "tests/test_device.py", "-q", "-rs", "-p", "no:cacheprovider"]
    if smoke:
        clip = [*me, "stage-one", "--", "--encoder", f"open_clip:{TINY_CLIP}", *STAGE_ONE_CPU]
        vitg = [*me, "stage-one", "--tiny-vitg", "--", "--encoder", "vitg", *STAGE_ONE_CPU]
        imageqa = [py, str(BENCH / "imageqa.py"), "--device", "cpu", "--questions-per-video", "1", "--frames", "2"]
        train = [*me, "train-epoch", *TRAIN_CPU]
    else:
        clip = [*me, "stage-one", "--", "--encoder", "clip-b16", "--batch-size", "256", "--repeat", "40", *STAGE_ONE_GPU]
        vitg = [*me, "stage-one", "--", "--encoder", "vitg", "--batch-size", "128", "--repeat", "10", *STAGE_ONE_GPU]
        imageqa = [py, str(BENCH / "imageqa.py"), "--device", "cuda", "--questions-per-video", "10", "--frames", "16"]
        train = [*me, "train-epoch", *TRAIN_GPU]
    return [
        ("cuda_tests", 90, pytest),
        ("stage_one_clip_b16", 150, clip),
        ("stage_one_vitg", 180, vitg),
        ("imageqa", 240 if smoke else 120, imageqa),  # BLIP on 2 CPU cores: ~110 s
        ("train_epoch", 150, train),
    ]


# -- the orchestrator -------------------------------------------------------------------------


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_step(name: str, cmd: list[str], limit: float, env: dict, log) -> dict:  # noqa: ANN001
    log.write(f"\n===== {name}: {' '.join(cmd)} (limit {limit:.0f} s)\n")
    log.flush()
    if limit < 5:
        return {"status": "skipped", "reason": "no time left in the budget", "seconds": 0.0, "rc": None}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: a timeout ends its Dask workers too
    try:
        out, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        status = "timeout"
    seconds = round(time.perf_counter() - t0, 1)
    log.write(out)
    log.write(f"===== {name}: {status} in {seconds} s (rc {proc.returncode})\n")
    log.flush()
    print(f"[gpu_check] {name}: {status} in {seconds} s", flush=True)
    result = {"status": status, "seconds": seconds, "rc": proc.returncode, "limit_s": round(limit),
              "result": last_json(out)}
    if status != "ok":
        result["tail"] = out.strip().splitlines()[-8:]
    if name == "cuda_tests":
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
        result["result"] = counts
    return result


def environment(smoke: bool) -> dict:
    info: dict = {"python": platform.python_version(), "machine": platform.machine(), "host": platform.node()}
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        gpu_count=torch.cuda.device_count(), sm_count=props.multi_processor_count)
    except Exception as exc:  # noqa: BLE001 - reported, the steps say the rest
        info["torch_error"] = repr(exc)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        info["nvidia_smi"] = smi or None
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                            timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    info["cpu_count"] = os.cpu_count()
    for key in ("GPU_CHECK_SETUP", "GPU_CHECK_SETUP_S"):
        info[key[10:].lower()] = os.environ.get(key)
    return info


def flat_figures(results: dict) -> dict:
    """The headline numbers, the same keys in both modes (None where a step gave none)."""
    def get(step: str, key: str):  # noqa: ANN202
        r = results.get(step, {}).get("result") or {}
        return r.get(key)

    fig: dict = {
        "cuda_tests_passed": get("cuda_tests", "passed"),
        "cuda_tests_skipped": get("cuda_tests", "skipped"),
        "cuda_tests_failed": get("cuda_tests", "failed"),
    }
    for step, prefix in (("stage_one_clip_b16", "clip_b16"), ("stage_one_vitg", "vitg")):
        for key in ("frames", "pipeline_fps", "pipeline_fps_with_startup", "encode_fps", "decode_fps", "startup_s",
                    "encode_efficiency", "overhead_ratio", "gpu_util_mean", "bound_by", "encode_spread"):
            fig[f"{prefix}_{key}"] = get(step, key)
    for key in ("questions_per_s", "frames_per_s", "images_s_per_video", "rank_s_per_question",
                "nextqa_projected_hours"):
        fig[f"imageqa_{key}"] = get("imageqa", key)
    for key in ("epoch_s", "train_samples_per_s", "steps", "wall_s", "store_build_s", "amp", "amp_dtype", "train_loss"):
        fig[f"train_{key}" if not key.startswith("train_") else key] = get("train_epoch", key)
    return fig


def orchestrate(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", 420 if args.cpu_smoke else 450))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    src = str(ROOT / "src")
    if src not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    tmp = tempfile.TemporaryDirectory(prefix="vqacache-gpu-check-")
    if args.cpu_smoke:
        cfg = Path(tmp.name) / "open_clip_configs"
        cfg.mkdir()
        (cfg / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
        env["VQACACHE_OPEN_CLIP_CONFIGS"] = str(cfg)
    results: dict = {}
    with (out_dir / "gpu_check.log").open("w", encoding="utf-8") as log:
        for name, limit, cmd in steps(sys.executable, args.cpu_smoke):
            left = budget - (time.perf_counter() - t_start)
            results[name] = run_step(name, cmd, min(limit, left), env, log)
    if not args.cpu_smoke:
        tests = results["cuda_tests"]
        if tests["status"] == "ok" and (tests["result"] or {}).get("skipped"):
            tests["status"] = "failed"  # on a GPU machine a skipped CUDA test is a failure
            tests["reason"] = "CUDA test skipped: torch sees no GPU"
    report = {
        "check": "vqacache gpu_check (issue 11)",
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "ok": all(r["status"] == "ok" for r in results.values()),
        "seconds": round(time.perf_counter() - t_start, 1),
        "budget_s": budget,
        "figures": flat_figures(results),
        "steps": results,
        "env": environment(args.cpu_smoke),
    }
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.cleanup()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


# -- step: stage one through featurize_pipeline.py ----------------------------------------------


def stage_one(argv: list[str], tiny_vitg: bool) -> None:
    """``featurize_pipeline.main()`` with a bare forward that also fits Hugging Face towers
    (``vitg``, ``blip``: ``model(pixel_values=...)``; featurize_cpu's calls open_clip's
    ``encode_image``), and optionally a tiny BLIP-2 vision config (CPU smoke; in-process only)."""
    import torch

    sys.path.insert(0, str(BENCH))
    import featurize_cpu
    import featurize_pipeline as fp

    from vqacache.featurize.encoders.precision import autocast

    if os.environ.get("VQACACHE_BENCH_VIDEOS"):  # real videos for the machine that has no ../shared
        featurize_cpu.SHARED_VIDEOS = Path(os.environ["VQACACHE_BENCH_VIDEOS"])
    open_clip_bare = fp.bare_encode_seconds

    def bare_encode_seconds(encoder, batch: torch.Tensor, batch_size: int) -> float:  # noqa: ANN001
        if hasattr(encoder.model, "encode_image"):
            return open_clip_bare(encoder, batch, batch_size)
        on_device = batch.to(encoder.device)
        sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
        with torch.inference_mode(), autocast(encoder.device, encoder.compute_dtype):
            encoder.model(pixel_values=on_device[:2])  # warm-up
            sync()
            t0 = time.perf_counter()
            for start in range(0, len(on_device), batch_size):
                encoder.model(pixel_values=on_device[start : start + batch_size]).last_hidden_state
            sync()
            return time.perf_counter() - t0

    fp.bare_encode_seconds = bare_encode_seconds
    if tiny_vitg:
        import transformers

        from vqacache.featurize.encoders import hf_vision

        def tiny_config(tower):  # noqa: ANN001, ANN202
            return getattr(transformers, tower.config_class)(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)

        hf_vision.default_config = tiny_config
    sys.argv = ["featurize_pipeline.py", *argv]
    fp.main()


# -- step: one AMP epoch of videodistill on a synthetic store -----------------------------------


def train_epoch(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gpu_check.py train-epoch")
    p.add_argument("--device", default="cuda")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=40)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--patches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--num-select", type=int, default=None)
    a = p.parse_args(argv)
    from vqacache.heads.synthetic import make_temporal_store

    with tempfile.TemporaryDirectory(prefix="vqacache-train-epoch-") as tmp:
        t0 = time.perf_counter()
        store = make_temporal_store(Path(tmp) / "synthetic.zarr", {"train": a.train, "val": a.val}, n_frames=a.frames,
                                    dim=a.dim, n_patches=a.patches)
        build_s = time.perf_counter() - t0
        print(f"synthetic store: {a.train} train + {a.val} val clips x {a.frames} frames, dim {a.dim}, "
              f"{a.patches} patches: {build_s:.1f} s", flush=True)
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "vqacache.cli.train_head", "--method", "videodistill", "--store", str(store.path),
               "--out", str(out), "--epochs", "1", "--batch-size", str(a.batch_size), "--workers", str(a.workers),
               "--device", a.device, "--amp", "--num-frames", str(a.frames)]
        if a.num_select is not None:
            cmd += ["--num-select", str(a.num_select)]
        print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # the questions: one per marker per clip (2 markers by default)
    n_questions = 2 * a.train
    figures = {
        "device": a.device, "amp": True, "amp_dtype": "bfloat16" if a.device.startswith("cuda") else None,
        "train_questions": n_questions, "batch_size": a.batch_size, "steps": len(metrics["losses"]),
        "epoch_s": round(metrics["seconds"], 2),  # training steps + validation, from metrics.jsonl
        "train_samples_per_s": round(n_questions / metrics["seconds"], 1),
        "wall_s": round(wall, 1), "store_build_s": round(build_s, 1),
        "train_loss": round(metrics["train_loss"], 4), "val_acc": metrics["val_acc"],
    }
    print(json.dumps(figures))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "stage-one":
        rest = sys.argv[2:]
        tiny = "--tiny-vitg" in rest[: rest.index("--")] if "--" in rest else False
        stage_one(rest[rest.index("--") + 1 :] if "--" in rest else rest, tiny)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "train-epoch":
        train_epoch(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU with tiny sizes")
    p.add_argument("out", nargs="?", default=os.environ.get("OUT") or "/tmp/gpu_check_out")
    sys.exit(orchestrate(p.parse_args()))


if __name__ == "__main__":
    main()
