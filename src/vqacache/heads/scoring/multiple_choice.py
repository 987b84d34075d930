"""Multiple-choice benchmarks: accuracy of the predicted candidate index.

* ``star``: accuracy per question family (Interaction, Sequence, Prediction, Feasibility:
  the ``question_id`` prefix) and ``Mean``, their unweighted mean, as STAR's leaderboard
  reports (EvalAI; no offline script exists). ``Mean`` is None unless all four families
  have questions.
* ``how2qa``, ``tvqa`` (also its TVQA+ splits), ``vlep``: accuracy, as VALUE's
  ``evaluate_how2qa.py`` / ``evaluate_tvqa.py`` / ``evaluate_vlep.py`` compute it
  (``mean(gt == pred)``; they round to 2 decimals, we round only when printing). TVQA+'s
  grounding metrics and the VALUE leaderboard's meta-average are not computed.

A prediction is an integer candidate index (an integer string is read as VALUE's ``int(v)``
does); anything else, or an index out of range, is an error rather than a silent miss.
"""

from __future__ import annotations

from typing import Any

from vqacache.heads.scoring.predictions import Matched, choice_index
from vqacache.heads.scoring.registry import Extras, register_scorer
from vqacache.heads.scoring.tally import Tally, make_result

STAR_FAMILIES = ("Interaction", "Sequence", "Prediction", "Feasibility")
METRIC = "accuracy (candidate index)"


def is_correct(qid: str, pred: Any, answer: Any, n_candidates: int) -> bool:
    """None (a missing prediction) is wrong."""
    return pred is not None and choice_index(qid, pred, n_candidates) == answer


@register_scorer("star", metric="accuracy per question family and their mean (STAR leaderboard)")
def score_star(matched: Matched, extras: Extras) -> dict[str, Any]:
    families = Tally(STAR_FAMILIES)
    for q, pred in matched.pairs:
        families.add(q.qtype or "", is_correct(q.qid, pred, q.answer, len(q.candidates)))
    table = families.table()
    accs = [table[f]["acc"] for f in STAR_FAMILIES]
    mean = None if any(a is None for a in accs) else sum(accs) / len(accs)
    return make_result("star", METRIC, *families.total(), breakdowns={"family": table}, summary={"Mean": mean},
                       not_computed=["STAR's test split is scored on EvalAI only (no answers released)"])


def _plain(name: str, not_computed: tuple[str, ...] = ()) -> None:
    @register_scorer(name, metric="accuracy (VALUE evaluator)" if name != "vlep" else "accuracy")
    def score(matched: Matched, extras: Extras) -> dict[str, Any]:
        tally = Tally()
        for q, pred in matched.pairs:
            tally.add("all", is_correct(q.qid, pred, q.answer, len(q.candidates)))
        return make_result(name, METRIC, *tally.total(), not_computed=not_computed)


_plain("how2qa")
_plain("tvqa", ("TVQA+ grounding (ASA, temporal mIoU of eval_tvqa_plus.py)",))
_plain("vlep")
