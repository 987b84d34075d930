"""Dataset adapters: benchmark annotations -> :class:`VideoRecord` / :class:`QuestionRecord`.

Build an adapter by name with :func:`get_dataset`; :func:`list_datasets` gives the names.
Importing this package registers the built-in adapters (``demo``, ``folder``, ``nextqa``).
"""

from vqacache.featurize.datasets.checks import MissingVideos, check_videos
from vqacache.featurize.datasets.records import QuestionRecord, VideoQADataset, VideoRecord
from vqacache.featurize.datasets.registry import get_dataset, list_datasets, register_dataset

# Adapters register themselves on import.
from vqacache.featurize.datasets import demo, folder, nextqa  # noqa: E402, F401  isort: skip

__all__ = [
    "MissingVideos",
    "QuestionRecord",
    "VideoQADataset",
    "VideoRecord",
    "check_videos",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]
