"""What every pass of one featurize run shares: :class:`RunContext`."""

from __future__ import annotations

from dataclasses import dataclass

from vqacache.featurize.config import FeaturizeConfig
from vqacache.featurize.datasets import VideoQADataset
from vqacache.featurize.progress import Reporter
from vqacache.featurize.result import FeaturizeResult
from vqacache.featurize.runners import Runner


@dataclass
class RunContext:
    """One run: what it was asked (``config``), over what (``dataset``, ``splits``), where its
    tasks run (``runner``), who hears of progress (``reporter``), its id (lease owner and run
    log name) and the result the passes add to."""

    config: FeaturizeConfig
    dataset: VideoQADataset
    splits: tuple[str, ...]
    runner: Runner
    reporter: Reporter
    run_id: str
    result: FeaturizeResult
