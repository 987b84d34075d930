"""``vqa-cache``: look at a cache root (``ls``), at one store (``info``), check one (``verify``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vqacache.cache_spec import StoreError, UsageError, VerifyReport, delete_corrupt, open_store, verify_store
from vqacache.cache_spec.verify import remove_stale_temporaries
from vqacache.cli._common import err_console, user_errors_exit

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 200)  # no squeezed tables in logs


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("ls", help="List the stores under a cache root.")
@user_errors_exit
def ls(cache_root: Annotated[Path, typer.Option(help="Root of the feature cache.")]) -> None:
    if not cache_root.is_dir():
        raise UsageError(f"--cache-root {cache_root} is not a directory")
    table = Table("dataset", "encoder", "fingerprint", "videos", "failed", "questions", "size", "path")
    for path in sorted(cache_root.glob("*/*.zarr")):
        try:
            s = open_store(path).summary()
        except StoreError as exc:
            table.add_row("?", "?", "?", "", "", "", "", escape(f"{path} ({exc})"))
            continue
        table.add_row(
            escape(s["dataset"]), escape(s["encoder"]), s["fingerprint"][:12], str(s["videos"]), str(s["failed"]),
            str(s["questions"]), _size(s["bytes"]), escape(str(path)),
        )
    console.print(table)


@app.command("info", help="Show one store's spec, counts and failures.")
@user_errors_exit
def info(store: Annotated[str, typer.Argument(help="Path or fsspec URL (s3://, gs://, https://) of a .zarr store.")]) -> None:
    st = open_store(store)
    s = st.summary()
    console.print(f"[bold]{escape(str(st.path))}[/]")
    console.print(f"dataset {s['dataset']}  encoder {s['encoder']}  fingerprint {s['fingerprint']}", markup=False)
    console.print(
        f"videos {s['videos']} complete, {s['incomplete']} incomplete, {s['failed']} failed; "
        f"questions {s['questions']}; {_size(s['bytes'])} on disk; created {s['created']}"
    )
    console.print("spec:")
    console.print_json(json.dumps(_elide_long(st.spec.to_dict())))
    console.print("environment: " + ", ".join(f"{k} {v}" for k, v in st.meta.get("environment", {}).items()),
                  markup=False)
    versions = st.video_versions_summary()
    if versions:
        console.print("videos made with: " + "; ".join(f"{n} videos {v}" for v, n in versions.items()), markup=False)
    teacher = st.teacher_spec()
    if teacher is not None:
        console.print(f"image-QA teacher {teacher.teacher}, fingerprint {teacher.fingerprint()[:12]}:", markup=False)
        console.print_json(teacher.to_json())
    failures = st.failures()
    if failures:
        console.print(f"failures ({len(failures)}):")
        for video_id, reason in sorted(failures.items()):
            console.print(f"  {video_id}: {reason}", markup=False, highlight=False)
    leases = st.leases()
    if leases:
        console.print(f"in progress ({len(leases)} videos claimed by running featurizers):")
        for video_id, lease in sorted(leases.items()):
            console.print(f"  {video_id}: {lease.get('owner')} on {lease.get('host')}", markup=False, highlight=False)
    runs = st.run_logs()
    if runs:
        console.print(f"runs ({len(runs)}, last 5):")
        for run in runs[-5:]:
            console.print(f"  {_run_line(run)}", markup=False, highlight=False)


def _elide_long(value: object, limit: int = 80) -> object:
    """The spec for reading: strings longer than ``limit`` (``vitg``'s LayerNorm gamma and beta,
    base64 of 1408 floats each) shown as their start and length; the store keeps them whole."""
    if isinstance(value, dict):
        return {k: _elide_long(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_elide_long(v, limit) for v in value]
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:24]}... ({len(value)} characters)"
    return value


def _run_line(run: dict) -> str:
    """One run log as a line; every key is optional (see docs/cache-format.md, "Run logs")."""
    counts = ", ".join(f"{run[k]} {k.removeprefix('videos_')}" for k in ("videos_done", "videos_failed", "videos_skipped", "frames") if k in run)
    stages = run.get("stage_seconds") or {}
    timing = " ".join(f"{k} {v:.1f}s" for k, v in stages.items() if isinstance(v, (int, float)))
    total = f"{run['seconds']:.1f}s" if isinstance(run.get("seconds"), (int, float)) else ""
    fields = (str(run.get("run_id")), str(run.get("host", "")), counts, total, timing)
    return "  ".join(x for x in fields if x)


VERIFY_HELP = """Check a store: recompute every complete video's and question bundle's checksum from disk.

Reports corrupt groups (checksum mismatch, missing array or chunk/shard file, unreadable data), incomplete ones (no completion marker), and, given the dataset (--data-root, and --dataset unless it is the store's own), videos and question bundles that are missing. Videos recorded as failed are listed but count as problems only with --strict.

Exit codes: 0 clean; 1 something is corrupt, incomplete or missing (or failed, with --strict); 2 usage error (no such store, unknown dataset, bad data root).
"""


@app.command("verify", help=VERIFY_HELP)
@user_errors_exit
def verify(
    store: Annotated[str, typer.Argument(help="Path or fsspec URL (s3://, gs://, https://) of a .zarr store.")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset whose videos must all be in the store (default: the store's, when --data-root is given).")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Dataset root, to list the expected videos and questions.")] = None,
    split: Annotated[list[str] | None, typer.Option(help="Only expect these splits (repeatable; default all).")] = None,
    strict: Annotated[bool, typer.Option(help="Count recorded failures as problems too.")] = False,
    delete_corrupt_groups: Annotated[
        bool, typer.Option("--delete-corrupt", help="Remove corrupt groups so the next featurize run recomputes them.")
    ] = False,
    remove_temporaries: Annotated[
        bool, typer.Option("--remove-temporaries", help="Delete temporary groups left by killed writers (no live lease, untouched for --min-age).")
    ] = False,
    min_age: Annotated[float, typer.Option(min=0, help="Seconds a temporary must be untouched before --remove-temporaries deletes it.")] = 600.0,
) -> None:
    st = open_store(store, "a" if delete_corrupt_groups or remove_temporaries else "r")
    expected_ids = expected_questions = None
    if dataset is not None or data_root is not None:
        expected_ids, expected_questions = _expected(st.dataset, dataset, data_root, split)
    with Progress(
        TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TextColumn("groups"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)

        def progress(checked: int, total: int, name: str) -> None:
            bar.update(task, completed=checked, total=total)

        report = verify_store(st, expected_ids, progress, expected_questions=expected_questions, strict=strict)
    _print_report(report)
    if remove_temporaries:
        removed = remove_stale_temporaries(st, min_age)
        console.print(f"removed {len(removed)} stale temporaries of {report.temporaries}", highlight=False)
    if delete_corrupt_groups and report.corrupt:
        removed = delete_corrupt(st, report)
        console.print(f"deleted {len(removed)} corrupt groups; rerun vqa-featurize to recompute them", highlight=False)
    raise typer.Exit(report.exit_code)


def _expected(
    store_dataset: str, dataset: str | None, data_root: Path | None, splits: list[str] | None
) -> tuple[set[str], set[tuple[str, str]]]:
    from vqacache.featurize.datasets import get_dataset  # heavy: only when asked for

    name = dataset or store_dataset
    if name != store_dataset:
        raise UsageError(f"the store holds dataset {store_dataset!r}, not {name!r}")
    ds = get_dataset(name, data_root)
    chosen = tuple(splits) if splits else ds.splits()
    ids = {v.video_id for s in chosen for v in ds.videos(s)}
    bundles = {(s, q.video_id) for s in chosen for q in ds.questions(s)}
    return ids, bundles


def _print_report(report: VerifyReport, limit: int = 100) -> None:
    rows = report.corrupt + report.incomplete + report.missing + report.failed
    if rows:
        table = Table("problem", "what", "id", "detail")
        for p in rows[:limit]:
            style = "yellow" if p.kind == "failed" and not report.strict else "red"
            table.add_row(f"[{style}]{p.kind}[/]", escape(p.what), escape(p.id), escape(p.detail))
        console.print(table)
        if len(rows) > limit:
            console.print(f"... and {len(rows) - limit} more", highlight=False)
    style = "green" if report.clean else "bold red"
    console.print(f"[{style}]{escape(report.summary_line())}[/]", highlight=False)


EXPORT_HELP = """Write a store's features as an HDF5 file other VideoQA code reads (docs/hdf5.md).

Layouts: nextqa (app_mot_{split}.h5: ids, feat (N, 16, D)), hcrn ({ds}_appearance_feat.h5: ids, resnet_features (N, 8, 16, D)), vgt (frame_feat/app_feat_{split}.h5: ids as strings, resnet_features (N, 8, 4, D)). Slots are filled from the store's frames by HCRN's clip-centre rule; a pts dataset gives each slot's time; failed videos get all-zero rows.
"""


@app.command("export", help=EXPORT_HELP)
@user_errors_exit
def export(
    store: Annotated[Path, typer.Argument(help="Path of a .zarr store.")],
    layout: Annotated[str, typer.Option(help="nextqa, hcrn or vgt.")],
    out: Annotated[Path, typer.Option(help="The .h5 file to write (never replaced).")],
    split: Annotated[str | None, typer.Option(help="Only the videos of this split's questions (default: every video).")] = None,
) -> None:
    from vqacache.cache_spec.hdf5 import export_store, get_layout

    get_layout(layout)  # a bad --layout fails before the store is opened
    report = export_store(open_store(store), layout, out, split)
    console.print(f"wrote {report.path}: {report.videos} videos, {len(report.failed)} failed (zero rows), "
                  f"features {report.shape}", markup=False, highlight=False)


IMPORT_HELP = """Turn an HDF5 feature file (nextqa, hcrn or vgt layout) into a read-only store of --dataset under --cache-root.

The store's spec records the file's sha256 and layout; rows that are all zeros are recorded as failed videos. Stage two trains from it (take the question text from a featurized store of the same dataset: vqa-train-head --store text=PATH).
"""


@app.command("import", help=IMPORT_HELP)
@user_errors_exit
def import_(
    file: Annotated[Path, typer.Argument(help="The .h5 file.")],
    layout: Annotated[str, typer.Option(help="nextqa, hcrn or vgt.")],
    dataset: Annotated[str, typer.Option(help="The dataset the file's videos belong to.")],
    cache_root: Annotated[Path, typer.Option(help="Root of the feature cache.")],
) -> None:
    from vqacache.cache_spec.hdf5 import get_layout, import_file

    get_layout(layout)
    store_, report = import_file(file, layout, dataset, cache_root)
    what = "already imported" if report.already else "imported"
    console.print(f"{what}: {store_.path} ({report.videos} videos, {len(report.failed)} failed: all-zero rows)",
                  markup=False, highlight=False)


GC_HELP = """List, then with --yes remove, what no reader needs under a cache root (or in one store).

Removable: abandoned temporaries (no live lease, untouched for --min-age), expired leases and the leftovers of lease operations, failure records of videos completed since, run logs finished more than --run-log-days ago. Never a complete video, a question bundle, or anything a live lease holds. Dry run by default.
"""


@app.command("gc", help=GC_HELP)
@user_errors_exit
def gc(
    root: Annotated[Path, typer.Argument(help="A cache root, or one .zarr store.")],
    yes: Annotated[bool, typer.Option("--yes", help="Remove what is listed (default: only list it).")] = False,
    min_age: Annotated[float, typer.Option(min=0, help="Seconds a temporary or lease leftover must be untouched.")] = 600.0,
    run_log_days: Annotated[float, typer.Option(min=0, help="Remove run logs finished more than this many days ago.")] = 90.0,
) -> None:
    from vqacache.cache_spec.gc import apply_gc, plan_gc

    plan = plan_gc(root, min_age_s=min_age, run_log_days=run_log_days)
    table = Table("kind", "size", "path", "why")
    for item in plan.items:
        table.add_row(item.kind, _size(item.bytes), escape(str(item.path)), escape(item.reason))
    if plan.items:
        console.print(table)
    for line in plan.kept:
        console.print(f"kept: {line}", markup=False, highlight=False)
    if not yes:
        console.print(f"dry run: {len(plan.items)} items, {_size(plan.bytes)} ({plan.bytes} bytes) would be freed; "
                      "rerun with --yes to remove them", highlight=False)
        return
    result = apply_gc(plan, min_age_s=min_age)
    for line in result.skipped:
        console.print(f"skipped: {line}", markup=False, highlight=False)
    console.print(f"removed {len(result.removed)} items, freed {_size(result.bytes_freed)} ({result.bytes_freed} bytes)",
                  highlight=False)


DIFF_HELP = """Compare two stores: spec fields, videos in one only, and for videos in both the largest absolute and relative feature difference.

Exit codes: 0 equal (same spec, same videos and frames, every value equal within float16 rounding); 1 different; 2 usage error.
"""


@app.command("diff", help=DIFF_HELP)
@user_errors_exit
def diff(
    a: Annotated[str, typer.Argument(help="First store (path or fsspec URL).")],
    b: Annotated[str, typer.Argument(help="Second store (path or fsspec URL).")],
    sample: Annotated[int, typer.Option(min=0, help="Compare only this many shared videos, evenly spread (0: all).")] = 0,
) -> None:
    from vqacache.cache_spec.diff import diff_stores

    d = diff_stores(open_store(a), open_store(b), sample or None)
    for line in d.spec:
        shown = line if len(line) <= 240 else f"{line[:200]}... ({len(line)} characters)"
        console.print(f"spec: {shown}", markup=False, highlight=False)
    for label, ids in (("only in A", d.only_a), ("only in B", d.only_b)):
        if ids:
            shown = ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
            console.print(f"{label}: {shown}", markup=False, highlight=False)
    for line in d.mismatched[:20]:
        console.print(f"mismatch: {line}", markup=False, highlight=False)
    for name, ad in sorted(d.arrays.items()):
        verdict = "within fp16 rounding" if ad.within_fp16 else "DIFFERENT"
        where = f" (video {ad.worst_video})" if ad.worst_video else ""
        console.print(f"{name}: max abs {ad.max_abs:.3g}{where}, max rel {ad.max_rel:.3g}: {verdict}",
                      markup=False, highlight=False)
    console.print(f"compared {len(d.compared)} of {d.common} shared videos: {'EQUAL' if d.equal else 'DIFFERENT'}",
                  markup=False, highlight=False)
    raise typer.Exit(0 if d.equal else 1)


@app.command("du", help="Bytes per dataset, encoder and kind of output under a cache root; with --data-root, the projection for each dataset's full video list.")
@user_errors_exit
def du(
    root: Annotated[Path, typer.Argument(help="A cache root, or one .zarr store.")],
    data_root: Annotated[Path | None, typer.Option(help="Dataset root, to project each store to its dataset's full video list.")] = None,
    split: Annotated[list[str] | None, typer.Option(help="Only these splits' videos for the projection (repeatable).")] = None,
) -> None:
    from vqacache.cache_spec.du import store_usage
    from vqacache.cache_spec.gc import find_stores

    usages = [store_usage(p) for p in find_stores(root)]
    kinds = sorted({k for u in usages for k in u.by_kind})
    table = Table("dataset", "encoder", "fingerprint", "videos", *kinds, "total", "projected")
    expected: dict[str, int] = {}
    per_dataset: dict[str, int] = {}
    for u in usages:
        projected = ""
        if data_root is not None:
            if u.dataset not in expected:
                ids, _ = _expected(u.dataset, None, data_root, split)
                expected[u.dataset] = len(ids)
            p = u.projection(expected[u.dataset])
            projected = "" if p is None else f"{_size(p)} ({expected[u.dataset]} videos)"
        per_dataset[u.dataset] = per_dataset.get(u.dataset, 0) + u.total
        table.add_row(escape(u.dataset), escape(u.encoder), u.fingerprint[:12], str(u.complete),
                      *[_size(u.by_kind.get(k, 0)) for k in kinds], _size(u.total), escape(projected))
    console.print(table)
    for name, total in sorted(per_dataset.items()):
        console.print(f"dataset {name}: {_size(total)} ({total} bytes)", markup=False, highlight=False)
    console.print(f"all: {_size(sum(per_dataset.values()))} ({sum(per_dataset.values())} bytes) in {len(usages)} stores",
                  markup=False, highlight=False)


SYNC_HELP = """Copy a store between a local folder and an object-store URL (s3://, gs://, ...), either way.

Copies complete videos, failure records, question bundles and the image-QA teacher record; checks each group's checksum at the destination before publishing it (local: rename; object store: the group's zarr.json, its completion marker, uploaded last); skips what is already there and complete; a rerun resumes an interrupted sync. Credentials follow fsspec's conventions (for S3: AWS_* variables or ~/.aws; AWS_ENDPOINT_URL for other S3-compatible servers).
"""


@app.command("sync", help=SYNC_HELP)
@user_errors_exit
def sync(
    src: Annotated[str, typer.Argument(help="Source store: local path or URL.")],
    dst: Annotated[str, typer.Argument(help="Destination: local path or URL (empty, or the same store).")],
) -> None:
    from vqacache.cache_spec.sync import sync_stores

    r = sync_stores(src, dst)
    console.print(
        f"{'created' if r.created else 'updated'} {dst}: {len(r.videos_copied)} videos copied, {r.videos_skipped} "
        f"already there; {r.bundles_copied} question bundles copied, {r.bundles_skipped} already there; "
        f"{r.failures_copied} failure records; {r.files_uploaded} files ({_size(r.bytes_copied)}) written, "
        f"{r.files_resumed} kept from an interrupted sync"
        + (f"; {r.videos_waited} videos waited for (held by another process at the destination)" if r.videos_waited else ""),
        markup=False, highlight=False)


@app.command("plot", help="A PNG timeline of one video: thumbnails (--video-file), the teacher's per-frame probability of each candidate (--question), the frames a trained run's model picks for the question (--run: VideoDistill's top-K, VLAP's per-segment choice, SpARC's causal set).")
@user_errors_exit
def plot(
    store: Annotated[str, typer.Argument(help="Path or URL of a .zarr store.")],
    video: Annotated[str, typer.Option(help="The video's id.")],
    out: Annotated[Path, typer.Option(help="The PNG to write.")],
    question: Annotated[str | None, typer.Option(help="A question id of that video.")] = None,
    run: Annotated[Path | None, typer.Option(help="A training run's folder (vqa-train-head --out); its picks are recomputed from its checkpoint.")] = None,
    video_file: Annotated[Path | None, typer.Option(help="The video file, for a strip of thumbnails.")] = None,
    thumbnails: Annotated[int, typer.Option(min=1, max=32, help="Thumbnails in the strip.")] = 8,
) -> None:
    from vqacache.cli.plot import render, timeline

    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} must end in .png")
    t = timeline(open_store(store), video, question, run, video_file, thumbnails)
    render(t, out)
    console.print(f"wrote {out}" + "".join(f"; {n}" for n in t.notes), markup=False, highlight=False)


@app.callback()
def _options(
    umask: Annotated[str | None, typer.Option(help="Umask for files and folders this run creates (e.g. 002: group-writable; default: yours).")] = None,
) -> None:
    from vqacache.cache_spec.permissions import apply_umask

    try:
        apply_umask(umask)
    except UsageError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def main() -> None:
    app()
