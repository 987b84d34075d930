"""``vqa-featurize``: stage one, decode videos at a fixed fps and cache encoder features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqacache.cache_spec import UsageError, parse_fps
from vqacache.cli._common import RichReporter, user_errors_exit
from vqacache.cli.dry_run import print_dry_run
from vqacache.featurize.datasets import list_datasets
from vqacache.featurize.pipeline import FeaturizeConfig, featurize

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Decode a dataset's videos at a fixed fps and cache frozen-encoder features in Zarr.")
@user_errors_exit
def run(
    dataset: Annotated[str, typer.Option(help=f"Dataset name: {', '.join(list_datasets())} (docs/datasets.md).")],
    encoder: Annotated[
        str | None, typer.Option(help="Encoder name, e.g. clip-b16, or open_clip:MODEL; several as a,b,c (each video decoded once, one store each). Required unless --dry-run.")
    ] = None,
    cache_root: Annotated[
        Path | None, typer.Option(help="Root of the shared feature cache (required unless --dry-run).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Pretrained tag (default: the encoder's), a local checkpoint file, or random[:SEED]."),
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Where the dataset's annotations and videos are (demo: generated there).")
    ] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option(help="An option of the dataset adapter as KEY=VALUE, e.g. video_root=/data/videos or "
                     "task=count (repeatable; docs/datasets.md lists each adapter's)."),
    ] = None,
    split: Annotated[list[str] | None, typer.Option(help="Split(s) to featurize; repeat for several. Default: all.")] = None,
    patches: Annotated[bool, typer.Option(help="Also store patch tokens (T, P, D).")] = True,
    patch_pool: Annotated[int, typer.Option(min=1, help="Average-pool the patch grid by this factor.")] = 1,
    patch_fps: Annotated[
        str | None,
        typer.Option(help="Patch tokens only on the frames nearest j/F (e.g. 2 or 1; CLS stays on every frame); "
                     "default: every frame. Recorded in the spec (docs/cache-format.md)."),
    ] = None,
    fps: Annotated[str, typer.Option(help="Sampling rate by presentation time, e.g. 7.5 or 15/2.")] = "7.5",
    short_side: Annotated[int, typer.Option(min=0, help="Resize decoded frames to this short side (0: native).")] = 256,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float16 or float32.")] = "float16",
    batch_size: Annotated[int | None, typer.Option(min=1, help="Frames per encoder forward.")] = None,
    device: Annotated[
        str, typer.Option(help="torch device for the encoder: auto (a GPU if the worker sees one), cpu, cuda, cuda:N.")
    ] = "auto",
    compute_dtype: Annotated[
        str,
        typer.Option(help="Encoder precision: float32, float16 or bfloat16 autocast; auto = float16 on CUDA, "
                     "float32 on CPU. Recorded in the spec (it changes the features)."),
    ] = "auto",
    retry_failed: Annotated[bool, typer.Option(help="Retry videos recorded as failed.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Local Dask workers (default: one per GPU, one on CPU); 0 runs in this process."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Use an existing Dask scheduler, e.g. tcp://HOST:8786 (see docs/slurm.md).")
    ] = None,
    cluster: Annotated[
        str, typer.Option(help="Where the workers run: local (this machine), or batch jobs through dask-jobqueue: "
                          "slurm, pbs, sge, lsf, oar, moab, htcondor (needs `uv sync --extra slurm`; site settings "
                          "from dask-jobqueue's configuration file; see docs/slurm.md).")
    ] = "local",
    jobs: Annotated[int, typer.Option(min=1, help="--cluster slurm|...: batch jobs to keep running (one worker each).")] = 1,
    partition: Annotated[str | None, typer.Option(help="--cluster slurm|...: the partition (queue) of the jobs.")] = None,
    account: Annotated[str | None, typer.Option(help="--cluster slurm|...: the account the jobs are charged to.")] = None,
    walltime: Annotated[str | None, typer.Option(help="--cluster slurm|...: each job's time limit, e.g. 04:00:00.")] = None,
    job_gpus: Annotated[int | None, typer.Option(min=0, help="--cluster slurm: GPUs per job (--gres=gpu:N; its one worker uses the first: ask for 1).")] = None,
    job_cores: Annotated[int | None, typer.Option(min=1, help="--cluster slurm|...: CPU cores per job.")] = None,
    job_memory: Annotated[str | None, typer.Option(help="--cluster slurm|...: memory per job, e.g. 16GB.")] = None,
    job_retries: Annotated[
        int | None, typer.Option(min=0, help="--cluster slurm|...: jobs that may be lost (preempted, cancelled) "
                                 "and replaced before the run gives up (default: --jobs).")
    ] = None,
    decode_processes: Annotated[int, typer.Option(min=1, help="Decoder child processes per worker.")] = 1,
    decode_timeout: Annotated[float, typer.Option(min=1, help="Seconds without a decoded chunk before a video times out.")] = 300.0,
    lease_ttl: Annotated[float, typer.Option(
        min=0.5, help="Seconds a video's lease lives without renewal (renewed by a heartbeat every third of it); "
                      "a stalled or dead run loses its videos about this long after its last renewal.")] = 600.0,
    imageqa: Annotated[
        str | None,
        typer.Option(help="Also store an image-QA teacher's per-frame answer probabilities for every question "
                     "(SpARC): blip or albef."),
    ] = None,
    imageqa_weights: Annotated[
        str | None, typer.Option(help="The teacher's weights: hub name, local checkpoint file/folder, or random[:SEED].")
    ] = None,
    imageqa_frames: Annotated[int, typer.Option(min=1, help="Frames per question the teacher scores (uniform).")] = 16,
    imageqa_k: Annotated[
        int, typer.Option(min=1, help="Open-ended: vocabulary answers scored in full per frame (ALBEF's k_test).")
    ] = 128,
    imageqa_tokenizer: Annotated[
        str | None,
        typer.Option(help="The teacher's tokenizer (folder or vocab.txt); default: beside its weights or in the "
                     "Hugging Face cache (bert-base-uncased for both BLIP and ALBEF)."),
    ] = None,
    imageqa_score: Annotated[
        str | None,
        typer.Option(help="The teacher's answer score: blip: loglik (default) or blip (BLIP's label-smoothed "
                     "rank_answer); albef: albef (default, ALBEF's rank_answer) or loglik."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read the annotations only: print questions, videos and videos missing on disk per split, then exit.")
    ] = False,
    umask: Annotated[
        str | None, typer.Option(help="Umask for what this run and its local workers create, e.g. 002 for a root shared "
                                 "by a group (docs/lab-root.md); default: yours.")
    ] = None,
) -> None:
    from vqacache.cache_spec.permissions import apply_umask

    apply_umask(umask)  # before any worker starts: local workers inherit it
    if dry_run:
        print_dry_run(dataset, data_root, tuple(split or ()), tuple(dataset_option or ()))
        return
    missing = [flag for flag, value in (("--encoder", encoder), ("--cache-root", cache_root)) if value is None]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (required unless --dry-run)")
    if dtype not in ("float16", "float32"):
        raise UsageError(f"--dtype must be float16 or float32, got {dtype!r}")
    job_options = None
    if cluster != "local":
        from vqacache.featurize.cluster import JOBQUEUE_CLUSTERS, JobOptions

        if cluster not in JOBQUEUE_CLUSTERS:
            raise UsageError(f"--cluster must be local or one of {', '.join(JOBQUEUE_CLUSTERS)}, got {cluster!r}")
        if scheduler:
            raise UsageError("--cluster and --scheduler exclude each other")
        job_options = JobOptions(cluster, jobs, partition, account, walltime, job_gpus, job_cores, job_memory,
                                 job_retries)
    config = FeaturizeConfig(
        dataset=dataset,
        encoder=encoder,
        cache_root=cache_root,
        data_root=data_root,
        dataset_options=tuple(dataset_option or ()),
        weights=weights,
        splits=tuple(split or ()),
        patches=patches,
        patch_pool=patch_pool,
        patch_fps=patch_fps,
        fps=parse_fps(fps),
        short_side=short_side or None,
        dtype=dtype,
        batch_size=batch_size,
        device=device,
        compute_dtype=compute_dtype,
        imageqa=imageqa,
        imageqa_weights=imageqa_weights,
        imageqa_frames=imageqa_frames,
        imageqa_k=imageqa_k,
        imageqa_tokenizer=imageqa_tokenizer,
        imageqa_score=imageqa_score,
        retry_failed=retry_failed,
        workers=workers,
        scheduler=scheduler,
        jobs=job_options,
        decode_processes=decode_processes,
        decode_timeout_s=decode_timeout,
        lease_ttl_s=lease_ttl,
    )
    reporter = RichReporter()
    result = featurize(config, reporter)
    for video_id, reason in sorted({**result.failures, **{f"image-QA {k}": v for k, v in result.imageqa_failures.items()}}.items()):
        reporter.console.print(f"failed: {video_id}: {reason}", markup=False, highlight=False, soft_wrap=True)
    typer.echo(result.summary_line())
    raise typer.Exit(result.exit_code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
