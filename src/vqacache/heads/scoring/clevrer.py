"""CLEVRER: descriptive questions per question, multiple-choice questions per option and per question.

The adapter gives a descriptive question as one open-ended record (``qid =
<scene>_<question_id>``) and a multiple-choice question (explanatory, predictive,
counterfactual; any number of correct choices) as one record per choice, ``qid =
<scene>_<question_id>_<choice_id>``, answer ``correct`` or ``wrong``. As CLEVRER reports
(``executor/run_oe.py``, ``run_mc.py``; test on EvalAI):

* descriptive: per-question accuracy (answer text after ``strip().lower()``; FORMATS.md
  states no normalisation);
* multiple choice, per question type: **per option** accuracy (each choice's
  correct/wrong label) and **per question** accuracy (every choice of the question right;
  a missing choice prediction makes its question wrong).

``Acc`` is over every record (descriptive questions and options), the unit training
classifies.
"""

from __future__ import annotations

from typing import Any

from vqacache.heads.scoring.open_ended import STRIP_LOWER, strip_lower, text_correct
from vqacache.heads.scoring.predictions import Matched
from vqacache.heads.scoring.registry import Extras, register_scorer
from vqacache.heads.scoring.tally import Tally, make_result

TYPES = ("descriptive", "explanatory", "predictive", "counterfactual")
OPEN = "descriptive"


@register_scorer("clevrer", metric="descriptive: per-question accuracy; multiple choice: per-option and per-question")
def score_clevrer(matched: Matched, extras: Extras) -> dict[str, Any]:
    records, options, per_question = Tally(), Tally(TYPES[1:]), Tally(TYPES)
    questions: dict[tuple[str, str], bool] = {}  # (type, question qid) -> all options right so far
    for q, pred in matched.pairs:
        ok = text_correct(q.qid, pred, [q.answer], strip_lower)
        qtype = q.qtype or ""
        records.add("all", ok)
        if qtype == OPEN:
            per_question.add(qtype, ok)
            continue
        options.add(qtype, ok)
        key = (qtype, q.qid.rsplit("_", 1)[0])
        questions[key] = questions.get(key, True) and ok
    for (qtype, _), ok in questions.items():
        per_question.add(qtype, ok)
    breakdowns = {"per question": per_question.table(), "per option": options.table()}
    return make_result("clevrer", "accuracy (answer text; option labels correct/wrong)", *records.total(),
                       breakdowns=breakdowns, normalisation=STRIP_LOWER)
