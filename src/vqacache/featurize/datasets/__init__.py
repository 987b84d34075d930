"""Dataset adapters: benchmark annotations -> :class:`VideoRecord` / :class:`QuestionRecord`.

Build an adapter by name with :func:`get_dataset`; :func:`list_datasets` gives the names.
Importing this package registers the built-in adapters: ``demo``, ``folder``, ``jsonl``
and the benchmarks (``nextqa``, ``nextqa_oe``, ``msrvtt_qa``, ``msvd_qa``,
``activitynet_qa``, ``tgif_qa``, ``agqa``, ``star``, ``how2qa``, ``tvqa``, ``vlep``,
``clevrer``, ``egotaskqa``, ``nextgqa``); ``docs/datasets.md`` documents each one.
"""

from vqacache.featurize.datasets.checks import MissingVideos, check_videos
from vqacache.featurize.datasets.records import (
    QuestionRecord,
    VideoQADataset,
    VideoRecord,
    answer_vocab_of,
)
from vqacache.featurize.datasets.registry import get_dataset, list_datasets, parse_dataset_options, register_dataset
from vqacache.featurize.datasets.summary import SplitSummary, dry_run_report

# Adapters register themselves on import.
from vqacache.featurize.datasets import demo, folder, jsonl, nextqa  # noqa: E402, F401  isort: skip
from vqacache.featurize.datasets import (  # noqa: E402, F401  isort: skip
    activitynet_qa,
    agqa,
    clevrer,
    egotaskqa,
    how2qa,
    msrvtt_qa,
    msvd_qa,
    nextgqa,
    nextqa_oe,
    star,
    tgif_qa,
    tvqa,
    vlep,
)

__all__ = [
    "MissingVideos",
    "QuestionRecord",
    "SplitSummary",
    "VideoQADataset",
    "VideoRecord",
    "answer_vocab_of",
    "check_videos",
    "dry_run_report",
    "get_dataset",
    "parse_dataset_options",
    "list_datasets",
    "register_dataset",
]
