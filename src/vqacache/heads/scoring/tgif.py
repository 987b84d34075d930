"""TGIF-QA: four tasks with their own metrics (YunseokJANG/tgif-qa ``code/gifqa``).

* Action, Transition (5-way multiple choice): accuracy of the candidate index.
* FrameQA (one-word open-ended): accuracy, overall and per FrameQA type (object, number,
  color, location); answers compared after ``strip().lower()`` (the official code compares
  class indices; FORMATS.md states no text normalisation).
* Count: **MSE**, as ``count_base.py``'s ``eval_loss``: the prediction is rounded (half to
  even, ``tf.round``) and clipped to [1, 10], the answer raised to at least 1 (``max(answer,
  1)`` in ``data_util/tgif.py``: the test file holds 918 zeros and no 1), then
  ``mean((pred - answer) ** 2)``; also the
  accuracy of that rounded prediction (the script's ``accuracy``). A prediction is a number
  or a numeric string. With missing predictions allowed, the MSE is over the predicted ones.

The adapter's ``qtype`` names the task (``action``, ``transition``, ``count``,
``frameqa/<type>`` or ``frameqa``). ``Acc`` counts every question of every task present
(count questions by the rounded prediction); TGIF-QA itself reports each task separately.
"""

from __future__ import annotations

from typing import Any

from vqacache.heads.scoring.multiple_choice import is_correct as choice_correct
from vqacache.heads.scoring.open_ended import STRIP_LOWER, strip_lower, text_correct
from vqacache.heads.scoring.predictions import Matched, number
from vqacache.heads.scoring.registry import Extras, register_scorer
from vqacache.heads.scoring.tally import Tally, make_result

TASKS = {"action": "Action", "transition": "Transition", "frameqa": "FrameQA", "count": "Count"}
FRAMEQA_TYPES = ("object", "number", "color", "location")
COUNT_MIN, COUNT_MAX = 1, 10


def count_prediction(qid: str, value: Any) -> int:
    """``clip(round(value), 1, 10)`` (Python's ``round`` is half-to-even, like ``tf.round``)."""
    return min(COUNT_MAX, max(COUNT_MIN, round(number(qid, value))))


def count_answer(qid: str, value: Any) -> int:
    """``max(answer, 1)``, as ``tgif.py``'s ``get_Count_result`` (the files hold 0 for 1)."""
    return max(int(number(qid, value)), COUNT_MIN)


@register_scorer("tgif_qa", metric="accuracy (Action, Transition, FrameQA) and MSE (Count)")
def score_tgif(matched: Matched, extras: Extras) -> dict[str, Any]:
    tasks, frameqa = Tally(), Tally(FRAMEQA_TYPES)
    sq_err, n_count = 0.0, 0
    for q, pred in matched.pairs:
        task, _, sub = (q.qtype or "").partition("/")
        if task == "count":
            ok = False
            if pred is not None:  # a missing prediction is wrong and has no squared error
                p, answer = count_prediction(q.qid, pred), count_answer(q.qid, q.answer)
                sq_err += (p - answer) ** 2
                n_count += 1
                ok = p == answer
        elif q.candidates:
            ok = choice_correct(q.qid, pred, q.answer, len(q.candidates))
        else:
            ok = text_correct(q.qid, pred, [q.answer], strip_lower)
            if sub:
                frameqa.add(sub, ok)
        tasks.add(task, ok)
    order = [t for t in TASKS if t in tasks.counts] + sorted(set(tasks.counts) - set(TASKS))
    table = tasks.table(TASKS)
    breakdowns = {"task": {TASKS.get(t, t): table[TASKS.get(t, t)] for t in order}}
    if any(n for _, n in frameqa.counts.values()):
        breakdowns["frameqa type"] = frameqa.table()
    summary = {"Count MSE": sq_err / n_count} if n_count else {}
    return make_result("tgif_qa", "accuracy per task; Count: MSE of the rounded, clipped count", *tasks.total(),
                       breakdowns=breakdowns, summary=summary, normalisation=f"FrameQA: {STRIP_LOWER}")
