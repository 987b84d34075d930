"""The proof: concurrent writers on one cache root, stalled past their leases and killed.

A torture run of ``vqa-featurize`` on the shared real videos (``../shared/data/videos``,
linked under 12 ids ``v00 .. v11`` cycling through the files, in a temporary ``folder``
dataset), with a tiny open_clip ViT (random weights; registered in every process through
``$VQACACHE_OPEN_CLIP_CONFIGS``) so that the run is dominated by the store's protocol, not by
the encoder. Patch tokens are kept, so sharded arrays are written too.

1. **Reference**: one undisturbed ``vqa-featurize`` run into its own cache root.
2. **Torture**: ``--writers`` (3) ``vqa-featurize`` processes into one cache root, each with
   ``--lease-ttl 2`` (the lease is renewed by its heartbeat thread every 0.67 s; others may
   take it over ``ttl + grace`` = 4 s after the last renewal, or at once when its holder's
   pid is gone). Each writer is a process group of its own (it has a decode child). Every
   round (2-3.5 s), each running writer's fate is drawn (seeded ``--seed``): left alone
   (40 %), *stalled* (35 %: ``SIGSTOP`` to its process group for 2.5-5 s, past its lease
   and often past ``ttl + grace``, then ``SIGCONT``: it must notice the lost lease and
   publish nothing), or *killed* (25 %: ``SIGKILL`` to its group, then restarted at once).
   Writers that exit are restarted at the next round while the store is not complete, so
   the work gets done whatever the faults. After every round the store is verified in this
   process (``verify_store``: every published video's checksum recomputed, while the
   writers keep writing); a round whose store is not clean counts in ``verify_failures``.
   Meanwhile the videos folder is polled every 0.2 s: a published video whose group is
   replaced (another inode, another ``started``) counts in ``duplicates``, one that
   disappears in ``lost``.
3. **End of a generation** (store complete, every writer exited): ``vqa-cache verify STORE
   --data-root DATA --strict --remove-temporaries --min-age 0`` (the CLI) must exit 0; the
   temporaries killed writers left are counted (``temporaries_left``) and must all be gone
   after; every one of the 12 ids must be complete exactly once (one published group per
   id; the runs' logs may not claim more than 12 publications) and equal to the reference:
   ``pts``, ``src_index``, ``is_repeat`` and frame counts exactly, ``cls`` and ``patch`` to
   fp16 rounding (``rtol = atol = 2**-10``: the batching across videos differs between the
   runs, which may move a float32 result by a last bit before the cast to float16).

Every round is a round of faults on a store that is still being written (or whose last
writers are finishing): on the 2-core CPU a store takes about 65 rounds to complete, a writer
spending most of its ~15-20 s start-up (imports) being killed or stalled. Should a store
complete before ``--min-rounds`` (24) rounds (a fast machine), a new *generation* starts on a
fresh cache root (same videos, same checks, the reference reused) until that many rounds
were played. Faults stop after ``--max-fault-rounds`` (120) rounds or ``--max-seconds``
(calm rounds then let the last generation finish; counted in ``calm_rounds``, normally 0).
About 6-7 minutes on the 2-core CPU, the reference run included.

    uv run --no-sync python benchmarks/faults.py [--seed 0] [--min-rounds 24] [--keep]

Writers' output goes to ``<tmp>/logs/g<gen>-w<slot>-<n>.log``; a writer that exits other than
0 (done) or by our SIGKILL is counted in ``writer_errors`` and its log's tail printed. The
last line is one JSON object: rounds, kills, stalls, corrupt, lost, duplicates,
verify_failures (the last four must be 0), and seconds, generations, writer_restarts,
writer_errors, temporaries_left, max_abs_diff, ...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqacache.cache_spec import open_store
from vqacache.cache_spec.keys import id_to_key
from vqacache.cache_spec.lease import lease_dir
from vqacache.cache_spec.publish import is_temporary
from vqacache.cache_spec.verify import verify_store

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = (ROOT.parent / "shared" / "data" / "videos").resolve()
TINY = "vqacache-faults-tiny"
TINY_CFG = {  # tests/conftest.py's tiny_clip: ViT-B/16's code path, 2 narrow layers
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2},
}
FP16_TOL = 2.0**-10
POLL_S = 0.2


def build_dataset(tmp: Path, n_ids: int) -> tuple[Path, list[str]]:
    """``tmp/data/vNN.<ext>`` -> the shared videos in turn (symlinks; copies where impossible)."""
    sources = sorted(p for p in SHARED_VIDEOS.iterdir() if p.suffix.lower() in (".mp4", ".avi"))
    if not sources:
        sys.exit(f"no shared videos in {SHARED_VIDEOS}")
    data = tmp / "data"
    data.mkdir()
    ids = []
    for i in range(n_ids):
        src = sources[i % len(sources)]
        dst = data / f"v{i:02d}{src.suffix}"
        try:
            dst.symlink_to(src)
        except OSError:
            shutil.copyfile(src, dst)
        ids.append(dst.stem)
    return data, ids


def writer_command(data: Path, cache_root: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "vqacache.cli.featurize", "--dataset", "folder", "--data-root", str(data),
        "--encoder", f"open_clip:{TINY}", "--weights", "random", "--cache-root", str(cache_root),
        "--workers", "0", "--lease-ttl", str(args.lease_ttl), "--batch-size", str(args.batch_size),
    ]


@dataclass
class Slot:
    """One of the concurrent writers, restarted as often as needed."""

    index: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    started: int = 0
    resume_at: float | None = None  # stalled until then

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Totals:
    rounds: int = 0
    calm_rounds: int = 0
    kills: int = 0
    stalls: int = 0
    stall_seconds: float = 0.0
    corrupt: int = 0
    lost: int = 0
    duplicates: int = 0
    verify_failures: int = 0
    writer_restarts: int = 0
    writer_errors: int = 0
    writer_exits: dict[str, int] = field(default_factory=dict)
    temporaries_left: int = 0
    temporaries_seen_max: int = 0
    leases_left: int = 0
    max_abs_diff: float = 0.0
    exact_videos: int = 0
    compared_videos: int = 0
    logged_writes: int = 0
    handed_over: int = 0
    """Videos writers report as "lost to another run" (a stalled writer's lease taken over)."""
    problems: list[str] = field(default_factory=list)


class Generation:
    """One cache root the writers fill, round after round, until it is complete."""

    def __init__(self, number: int, tmp: Path, data: Path, ids: list[str], store_rel: Path,
                 args: argparse.Namespace, env: dict[str, str], totals: Totals) -> None:
        self.number, self.data, self.ids, self.args, self.env, self.totals = number, data, ids, args, env, totals
        self.root = tmp / f"cache-g{number}"
        self.store_path = self.root / store_rel  # the reference's spec: the same fingerprint
        self.logs = tmp / "logs"
        self.slots = [Slot(i) for i in range(args.writers)]
        self.seen: dict[str, tuple[int, str]] = {}  # key -> (inode, started) of the published group

    # -- writers -----------------------------------------------------------------------------
    def start(self, slot: Slot) -> None:
        slot.started += 1
        slot.log = self.logs / f"g{self.number}-w{slot.index}-{slot.started}.log"
        with open(slot.log, "wb") as log:
            slot.proc = subprocess.Popen(
                writer_command(self.data, self.root, self.args), stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=ROOT, start_new_session=True,
            )
        slot.resume_at = None
        if slot.started > 1:
            self.totals.writer_restarts += 1

    def reap(self, slot: Slot, killed: bool) -> None:
        """Account for a writer that is gone (``killed``: by our SIGKILL)."""
        assert slot.proc is not None
        rc = slot.proc.wait()
        label = "killed" if killed else str(rc)
        if not killed and slot.log is not None:
            for line in slot.log.read_text(errors="replace").splitlines():
                if " lost to another run" in line and "videos done" in line:
                    self.totals.handed_over += int(line.split(" lost to another run")[0].rsplit(", ", 1)[-1])
        self.totals.writer_exits[label] = self.totals.writer_exits.get(label, 0) + 1
        if not killed and rc not in (0,):
            self.totals.writer_errors += 1
            tail = slot.log.read_text(errors="replace").splitlines()[-15:] if slot.log else []
            self.totals.problems.append(f"writer {slot.log.name} exited {rc}:\n    " + "\n    ".join(tail))
            print(f"  ! writer {slot.log.name} exited with {rc}; log tail:\n    " + "\n    ".join(tail), flush=True)
        slot.proc = None

    def signal(self, slot: Slot, sig: int) -> None:
        try:
            os.killpg(slot.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, slot: Slot) -> None:
        if slot.resume_at is not None:
            slot.resume_at = None
        self.signal(slot, signal.SIGKILL)
        self.reap(slot, killed=True)
        self.totals.kills += 1

    def any_running(self) -> bool:
        return any(s.proc is not None for s in self.slots)

    # -- watching the store --------------------------------------------------------------------
    def complete_count(self) -> int:
        if not (self.store_path / "zarr.json").exists():
            others = [p for p in self.root.glob("*/*.zarr") if p != self.store_path]
            if others:  # writers with another spec than the reference's would never finish
                self.stop_all()
                sys.exit(f"the writers created {others}, not {self.store_path} (the reference's spec)")
            return 0
        return sum(1 for vid in self.ids if _marked_complete(self.store_path / "videos" / id_to_key(vid)))

    def poll_published(self) -> None:
        """A published video group must never change or disappear once seen."""
        videos = self.store_path / "videos"
        if not videos.is_dir():
            return
        for vid in self.ids:
            key = id_to_key(vid)
            group = videos / key
            try:
                ident = (group.stat().st_ino, _started(group))
            except (FileNotFoundError, NotADirectoryError):
                ident = None
            before = self.seen.get(key)
            if ident is None or ident[1] is None:
                if before is not None:
                    self.totals.lost += 1
                    self.totals.problems.append(f"gen {self.number}: published video {vid} disappeared")
                    del self.seen[key]
                continue
            if before is None:
                self.seen[key] = ident
            elif before != ident:
                self.totals.duplicates += 1
                self.totals.problems.append(f"gen {self.number}: video {vid} published again ({before} -> {ident})")
                self.seen[key] = ident

    def verify_round(self) -> str:
        if not (self.store_path / "zarr.json").exists():
            return "no store yet"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = verify_store(open_store(self.store_path))
        except Exception as exc:  # noqa: BLE001 - verify itself failing mid-run is a finding
            self.totals.verify_failures += 1
            self.totals.problems.append(f"gen {self.number}: verify_store raised {type(exc).__name__}: {exc}")
            return f"RAISED {type(exc).__name__}: {str(exc)[:80]}"
        self.totals.temporaries_seen_max = max(self.totals.temporaries_seen_max, report.temporaries)
        if not report.clean:
            self.totals.verify_failures += 1
            self.totals.corrupt += len(report.corrupt)
            self.totals.problems += [f"gen {self.number}: verify: {p.kind} {p.id}: {p.detail}" for p in report.problems]
            return "NOT CLEAN " + report.summary_line()
        return f"clean ({report.ok} ok, {report.temporaries} tmp)"

    # -- one round -----------------------------------------------------------------------------
    def play_round(self, rng: random.Random, faults: bool) -> None:
        t = self.totals
        t.rounds += 1
        if not faults:
            t.calm_rounds += 1
        done = self.complete_count() == len(self.ids)
        for slot in self.slots:  # writers that exited: gone for good once the work is done
            if slot.proc is not None and slot.proc.poll() is not None:
                self.reap(slot, killed=False)
            if slot.proc is None and not done:
                self.start(slot)
        now = time.monotonic()
        end = now + rng.uniform(2.0, 3.5)
        fates = []
        for slot in self.slots:
            if not slot.running():
                fates.append("   -   ")
                continue
            draw = rng.random() if faults else 0.0
            if draw < 0.40:
                fates.append("  run  ")
            elif draw < 0.75:
                stall = rng.uniform(2.5, 5.0)
                self.signal(slot, signal.SIGSTOP)
                slot.resume_at = now + stall
                end = max(end, slot.resume_at + 0.1)
                t.stalls += 1
                t.stall_seconds += stall
                fates.append(f"stop{stall:3.1f}")
            else:
                self.kill(slot)
                if not done:
                    self.start(slot)
                fates.append(" KILL  ")
        while time.monotonic() < end:
            time.sleep(POLL_S)
            self.poll_published()
            for slot in self.slots:
                if slot.resume_at is not None and time.monotonic() >= slot.resume_at:
                    self.signal(slot, signal.SIGCONT)
                    slot.resume_at = None
        verdict = self.verify_round()
        n_done = self.complete_count()
        leases = len(list(lease_dir(self.store_path).glob("*.json"))) if lease_dir(self.store_path).is_dir() else 0
        print(f"{t.rounds:5d} {self.number:4d}  {' '.join(fates)}  {n_done:3d}/{len(self.ids)}  {leases:6d}  {verdict}",
              flush=True)

    def finished(self) -> bool:
        for slot in self.slots:
            if slot.proc is not None and slot.resume_at is None and slot.proc.poll() is not None:
                self.reap(slot, killed=False)
        return self.complete_count() == len(self.ids) and not self.any_running()

    def stop_all(self) -> None:
        for slot in self.slots:
            if slot.proc is not None:
                self.signal(slot, signal.SIGCONT)
                self.kill(slot)
                self.totals.kills -= 1  # teardown, not a fault

    # -- the end -------------------------------------------------------------------------------
    def final_checks(self, reference: Path) -> None:
        t = self.totals
        self.poll_published()
        cli = [str(Path(sys.executable).parent / "vqa-cache"), "verify", str(self.store_path), "--data-root",
               str(self.data), "--dataset", "folder", "--strict", "--remove-temporaries", "--min-age", "0"]
        out = subprocess.run(cli, capture_output=True, text=True, env=self.env, cwd=ROOT)
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        summary = next((line for line in lines if line.startswith(("OK:", "PROBLEMS:"))), "")
        removed = next((line for line in lines if line.startswith("removed ")), "")
        print(f"  gen {self.number}: vqa-cache verify exit {out.returncode}: {summary}; {removed}", flush=True)
        if out.returncode != 0:
            t.verify_failures += 1
            t.problems.append(f"gen {self.number}: vqa-cache verify exited {out.returncode}:\n    " + "\n    ".join(lines[-20:]))
        if removed:
            t.temporaries_left += int(removed.split()[1])
        store = open_store(self.store_path)
        still = store.temporaries()
        if still:
            t.problems.append(f"gen {self.number}: temporaries left after --remove-temporaries: {[p.name for p in still]}")
            t.temporaries_left += len(still)
        if lease_dir(self.store_path).is_dir():
            t.leases_left += len(list(lease_dir(self.store_path).glob("*.json")))

        report = verify_store(store, expected_ids=self.ids, strict=True)
        t.corrupt += len(report.corrupt)
        if not report.clean:
            t.verify_failures += 1
            t.problems += [f"gen {self.number}: final verify: {p.kind} {p.id}: {p.detail}" for p in report.problems]
        complete = set(store.complete_videos())
        failures = store.failures()
        missing = [vid for vid in self.ids if vid not in complete]
        t.lost += len(set(missing) | (set(failures) & set(self.ids)))
        if missing or failures:
            t.problems.append(f"gen {self.number}: not complete: {missing}; failures recorded: {failures}")

        groups: dict[str, int] = {}
        for entry in (self.store_path / "videos").iterdir():
            if entry.is_dir() and not is_temporary(entry.name):
                vid = _video_id(entry) or entry.name
                groups[vid] = groups.get(vid, 0) + 1
        extra = sum(n - 1 for n in groups.values() if n > 1) + len(set(groups) - set(self.ids))
        if extra:
            t.duplicates += extra
            t.problems.append(f"gen {self.number}: video groups per id: {groups}")
        logs = store.run_logs()
        written = sum(int(r.get("videos_written_here", 0)) for r in logs)
        t.logged_writes += written
        if written > len(self.ids):
            t.duplicates += written - len(self.ids)
            t.problems.append(f"gen {self.number}: run logs claim {written} publications of {len(self.ids)} videos")

        ref = open_store(reference)
        if ref.fingerprint != store.fingerprint:
            t.corrupt += 1
            t.problems.append(f"gen {self.number}: fingerprint {store.fingerprint[:12]} != reference {ref.fingerprint[:12]}")
            return
        for vid in sorted(complete & set(self.ids)):
            t.compared_videos += 1
            mismatch = compare(ref.read_video(vid), store.read_video(vid))
            if isinstance(mismatch, str):
                t.corrupt += 1
                t.problems.append(f"gen {self.number}: {vid} differs from the reference: {mismatch}")
            else:
                t.max_abs_diff = max(t.max_abs_diff, mismatch)
                t.exact_videos += mismatch == 0.0


def compare(ref, got) -> float | str:  # noqa: ANN001
    """Max abs difference of the features, or what differs beyond fp16 rounding."""
    for name in ("pts", "src_index", "is_repeat"):
        if not np.array_equal(ref[name], got[name]):
            return f"{name} differs (shapes {ref[name].shape} vs {got[name].shape})"
    diff = 0.0
    for name in ("cls", "cls_hidden", "patch"):
        a, b = ref[name], got[name]
        if a is None and b is None:
            continue
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
            return f"{name}: {None if a is None else (a.shape, a.dtype)} vs {None if b is None else (b.shape, b.dtype)}"
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        if not np.allclose(a32, b32, rtol=FP16_TOL, atol=FP16_TOL):
            return f"{name}: max abs diff {float(np.abs(a32 - b32).max()):.3g}"
        diff = max(diff, float(np.abs(a32 - b32).max()))
    return diff


def _group_attrs(group: Path) -> dict | None:
    try:
        return json.loads((group / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError):
        return None


def _marked_complete(group: Path) -> bool:
    attrs = _group_attrs(group)
    return bool(attrs) and attrs.get("complete") is True


def _started(group: Path) -> str | None:
    attrs = _group_attrs(group)
    return None if not attrs or attrs.get("complete") is not True else str(attrs.get("started"))


def _video_id(group: Path) -> str | None:
    attrs = _group_attrs(group)
    return None if attrs is None else attrs.get("video_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--ids", type=int, default=12)
    parser.add_argument("--min-rounds", type=int, default=24)
    parser.add_argument("--max-fault-rounds", type=int, default=120)
    parser.add_argument("--max-seconds", type=float, default=1800, help="no faults after this; give up 300 s later")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reference", type=Path, default=None, help="reuse a reference cache root (same settings)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # run the writers' teardown

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vqacache-faults-"))
    (tmp / "logs").mkdir()
    cfg = tmp / "open_clip_configs"
    cfg.mkdir()
    (cfg / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    env = {**os.environ, "VQACACHE_OPEN_CLIP_CONFIGS": str(cfg), "PYTHONUNBUFFERED": "1"}
    data, ids = build_dataset(tmp, args.ids)
    print(f"work folder {tmp}; {len(ids)} ids over {len(list(SHARED_VIDEOS.iterdir()))} shared videos; "
          f"{args.writers} writers, lease ttl {args.lease_ttl} s, seed {args.seed}", flush=True)

    ref_root = args.reference or tmp / "reference"
    if args.reference is None:
        t_ref = time.perf_counter()
        with open(tmp / "logs" / "reference.log", "wb") as log:
            rc = subprocess.run(writer_command(data, ref_root, args), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT).returncode
        if rc != 0:
            sys.exit(f"the reference run failed ({rc}); see {tmp / 'logs' / 'reference.log'}")
        print(f"reference run: {time.perf_counter() - t_ref:.1f} s", flush=True)
    refs = sorted(ref_root.glob("folder/*.zarr"))
    if len(refs) != 1:
        sys.exit(f"expected one reference store under {ref_root}/folder, found {refs}")
    reference = refs[0]
    ref_store = open_store(reference)
    if set(ref_store.complete_videos()) != set(ids):
        sys.exit(f"the reference store {reference} lacks videos: {sorted(set(ids) - set(ref_store.complete_videos()))}")
    store_rel = reference.relative_to(ref_root)

    rng = random.Random(args.seed)
    totals = Totals()
    print("round  gen  " + " ".join(f"  w{i}   " for i in range(args.writers)) + "  done  leases  verify", flush=True)
    gen_number = 0
    while True:
        gen_number += 1
        gen = Generation(gen_number, tmp, data, ids, store_rel, args, env, totals)
        try:
            while not gen.finished():
                elapsed = time.perf_counter() - t0
                if elapsed > args.max_seconds + 300:  # not done 5 minutes after the faults stopped
                    totals.problems.append(f"gen {gen_number}: not finished after {elapsed:.0f} s; writers stopped")
                    break
                gen.play_round(rng, faults=totals.rounds < args.max_fault_rounds and elapsed < args.max_seconds)
        finally:
            gen.stop_all()
        gen.final_checks(reference)
        if totals.rounds >= args.min_rounds:
            break

    logs = sorted((tmp / "logs").glob("*.log"))
    tracebacks = [p for p in logs if "Traceback" in p.read_text(errors="replace")]
    for p in tracebacks:
        text = p.read_text(errors="replace").splitlines()
        start = next(i for i, line in enumerate(text) if "Traceback" in line)
        totals.problems.append(f"traceback in {p.name}:\n    " + "\n    ".join(text[start : start + 30]))
    if totals.problems:
        print("problems:")
        for problem in totals.problems:
            print(f"  {problem}")
    seconds = time.perf_counter() - t0
    print(f"{totals.rounds} rounds ({totals.calm_rounds} calm) in {gen_number} generations, {totals.kills} kills, "
          f"{totals.stalls} stalls ({totals.stall_seconds:.0f} s stopped), {totals.writer_restarts} restarts; "
          f"{totals.compared_videos} videos compared with the reference ({totals.exact_videos} bit-identical, "
          f"max abs diff {totals.max_abs_diff:.3g}); {totals.temporaries_left} temporaries left by killed writers "
          f"(removed); {seconds:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "rounds": totals.rounds, "kills": totals.kills, "stalls": totals.stalls, "corrupt": totals.corrupt,
        "lost": totals.lost, "duplicates": totals.duplicates, "verify_failures": totals.verify_failures,
        "seconds": round(seconds, 1), "generations": gen_number, "calm_rounds": totals.calm_rounds,
        "writer_restarts": totals.writer_restarts, "writer_errors": totals.writer_errors,
        "writer_tracebacks": len(tracebacks), "writer_exits": totals.writer_exits,
        "temporaries_left": totals.temporaries_left, "temporaries_seen_max": totals.temporaries_seen_max,
        "leases_left": totals.leases_left, "handed_over": totals.handed_over, "logged_writes": totals.logged_writes,
        "videos_compared": totals.compared_videos, "bit_identical": totals.exact_videos,
        "max_abs_diff": totals.max_abs_diff, "seed": args.seed, "lease_ttl": args.lease_ttl,
        "writers": args.writers, "stall_seconds": round(totals.stall_seconds, 1),
    }))


if __name__ == "__main__":
    main()
