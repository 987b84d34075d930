"""``demo``: the generated demo dataset (``vqa-featurize --dataset demo``), the one a newcomer has.

Multiple choice (five candidates): accuracy of the predicted candidate index overall and per
question type (the generator's four types, e.g. ``colour_at_flash``), with a missing
prediction wrong when ``--allow-missing`` is given. There is no official evaluator to
follow: this is the plain accuracy every multiple-choice scorer here computes, so that the
README's demo run can be scored end to end (``vqa-eval --dataset demo --data-root data/demo
--split val --predictions runs/vd/predictions/val.json``). Training validates with the same
function (:func:`~vqacache.heads.scoring.registry.training_scorer`).
"""

from __future__ import annotations

from typing import Any

from vqacache.heads.scoring.multiple_choice import METRIC, is_correct
from vqacache.heads.scoring.predictions import Matched
from vqacache.heads.scoring.registry import Extras, register_scorer
from vqacache.heads.scoring.tally import Tally, make_result


@register_scorer("demo", metric="accuracy (candidate index), overall and per question type")
def score_demo(matched: Matched, extras: Extras) -> dict[str, Any]:
    types = Tally()
    for q, pred in matched.pairs:
        types.add(q.qtype or "", is_correct(q.qid, pred, q.answer, len(q.candidates)))
    return make_result("demo", METRIC, *types.total(), breakdowns={"qtype": types.table()})
