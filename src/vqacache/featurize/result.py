"""What a ``vqa-featurize`` run did: :class:`FeaturizeResult`, its exit code and summary line."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vqacache.featurize.shard import ShardResult

EXIT_OK = 0
EXIT_SOME_FAILED = 3


@dataclass
class FeaturizeResult:
    store_path: Path
    fingerprint: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0
    """Videos whose lease another run took over mid-way (this run stalled): left to that run."""
    frames: int = 0
    questions: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: dict[str, str] = field(default_factory=dict)
    dashboard: str | None = None
    store_paths: list[Path] = field(default_factory=list)
    """Every store written (``--encoder a,b,c``: one per encoder; ``store_path`` is the first)."""
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """store path -> videos completed in it by this run."""
    imageqa_done: int = 0
    imageqa_failures: dict[str, str] = field(default_factory=dict)
    """``{"<split>/<video id>": reason}``: videos whose questions the teacher could not score."""
    imageqa_lost: int = 0
    """Videos whose image-QA lease another run took over before this one published (left to it)."""
    jobs_lost: int | None = None
    """``--cluster slurm|...``: batch jobs lost (preempted, cancelled) and replaced or not; None: no jobs."""

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed or self.imageqa_failures else EXIT_OK

    def summary_line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        lost = f", {self.lost} lost to another run" if self.lost else ""
        parts = [
            f"{self.done} videos done, {self.skipped} skipped, {self.failed} failed{lost}",
            f"{self.frames} frames in {self.seconds:.1f} s ({fps:.1f} frames/s)",
            f"{self.questions} questions",
        ]
        if self.imageqa_done or self.imageqa_failures or self.imageqa_lost:
            left = f", {self.imageqa_lost} left to another run" if self.imageqa_lost else ""
            parts.append(f"image-QA: {self.imageqa_done} videos scored, {len(self.imageqa_failures)} failed{left}")
        if self.jobs_lost is not None:
            parts.append(f"{self.jobs_lost} jobs lost")
        parts.append(f"store {self.store_path}" if len(self.store_paths) <= 1
                     else f"stores {', '.join(str(p) for p in self.store_paths)}")
        return "; ".join(parts)

    def add(self, shard: ShardResult) -> None:
        """Count one features task's result."""
        self.done += len(shard.done)
        self.frames += sum(shard.done.values())
        self.skipped += len(shard.skipped)
        self.lost += len(shard.lost)
        self.failed += len(shard.failed)
        self.failures.update(shard.failed)
        for name, seconds in shard.timings.items():
            self.timings[name] += seconds
        for path, n in shard.written.items():
            self.written[path] += n
