"""Official evaluation of every benchmark: a registry of scorers by dataset name.

:func:`get_scorer` gives a benchmark's :class:`Scorer` (unknown names list the valid ones);
:func:`training_scorer` the one ``vqa-train-head`` reports validation with. Importing this
package registers the built-in scorers, one module per family:

* :mod:`~vqacache.heads.scoring.nextqa`: ``nextqa`` (``eval_mc.py``, via
  :mod:`vqacache.heads.eval`), ``nextgqa``;
* :mod:`~vqacache.heads.scoring.multiple_choice`: ``star``, ``how2qa``, ``tvqa``, ``vlep``;
* :mod:`~vqacache.heads.scoring.open_ended`: ``msvd_qa``, ``msrvtt_qa``, ``activitynet_qa``,
  ``nextqa_oe``, ``agqa``, ``egotaskqa``, ``jsonl``;
* :mod:`~vqacache.heads.scoring.tgif`: ``tgif_qa`` (accuracy and count MSE);
* :mod:`~vqacache.heads.scoring.clevrer`: ``clevrer``;
* :mod:`~vqacache.heads.scoring.demo`: ``demo`` (the generated demo set: accuracy, per type).

Heads never import featurize: scorers take heads' :class:`~vqacache.heads.questions.Question`
records, which the CLI builds from the dataset adapter. ``docs/evaluation.md`` documents
the prediction format, each metric and what is not reproduced.
"""

from vqacache.heads.scoring.predictions import Matched, normalise_predictions, read_prediction_file
from vqacache.heads.scoring.registry import (
    Extras,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    training_scorer,
)
from vqacache.heads.scoring.tally import format_result

# Scorers register themselves on import.
from vqacache.heads.scoring import clevrer, demo, multiple_choice, nextqa, open_ended, tgif  # noqa: E402, F401  isort: skip

__all__ = [
    "Extras",
    "Matched",
    "Scorer",
    "format_result",
    "get_scorer",
    "list_scorers",
    "normalise_predictions",
    "read_prediction_file",
    "register_scorer",
    "training_scorer",
]
