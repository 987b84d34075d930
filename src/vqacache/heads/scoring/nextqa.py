"""NExT-QA multiple choice (``eval_mc.py``) and NExT-GQA's question-answering accuracy.

``nextqa``: :mod:`vqacache.heads.eval` unchanged: it reads ``<split>.csv`` itself and, like
the official script, takes the answer from the predictions file.

``nextgqa``: the same arithmetic (Why, How, Bef&Aft with TP folded in, When, Cnt, Loc,
Other; Acc_C / Acc_T / Acc_D question-weighted) over the adapter's questions, with the
answer from the annotations (NExT-GQA's CSVs hold the answer text; the adapter turns it into
the candidate index). Its grounding metrics (mIoP, IoP@0.3/0.5, mIoU, IoU@0.3/0.5, Acc@GQA
of ``eval_ground.py``) need predicted time spans and are not computed.
"""

from __future__ import annotations

from typing import Any

from vqacache.heads.eval import accuracy_by_type, evaluate, format_table
from vqacache.heads.scoring.predictions import Matched, choice_index
from vqacache.heads.scoring.registry import Extras, Scorer, register, register_scorer
from vqacache.heads.scoring.tally import make_result

register(
    Scorer(
        name="nextqa",
        metric="accuracy per type and C/T/D group, TP folded into TN (eval_mc.py)",
        reads_annotations=True,
        evaluate_files=lambda root, split, path: evaluate("nextqa", root, split, path),
        format=format_table,
    )
)


@register_scorer("nextgqa", metric="accuracy per type and C/T/D group, TP folded into TN (NExT-QA's eval_mc.py)")
def score_nextgqa(matched: Matched, extras: Extras) -> dict[str, Any]:
    records = [
        (q.qid, q.qtype or "", pred is not None and choice_index(q.qid, pred, len(q.candidates)) == q.answer)
        for q, pred in matched.pairs
    ]
    r = accuracy_by_type(records)
    return make_result(
        "nextgqa", "accuracy (candidate index)", r["correct"], r["count"],
        breakdowns={"type": r["types"], "group": r["groups"]},
        not_computed=["grounding (mIoP, IoP@0.3/0.5, mIoU, IoU@0.3/0.5, Acc@GQA of eval_ground.py): "
                      "needs predicted time spans"],
    )
