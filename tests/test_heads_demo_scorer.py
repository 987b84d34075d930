"""The ``demo`` scorer: ``vqa-eval --dataset demo`` scores a run on the generated demo set.

Mutations tried (each fails a test here): ``is_correct`` replaced by ``pred == q.answer`` on
the raw prediction (an index given as the string "2" is then wrong); the per-type tally keyed
by qid instead of qtype (the breakdown has one row a question).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vqacache.cli.eval import app
from vqacache.heads.questions import Question
from vqacache.heads.scoring import get_scorer


def test_demo_scorer_by_hand():
    qs = [Question(qid=f"v_{t}{i}", video_id="v", split="val", question="?", candidates=("a", "b", "c"), answer=i,
                   qtype=t) for t in ("x", "y") for i in range(2)]
    preds = {"v_x0": {"prediction": 0}, "v_x1": {"prediction": 0}, "v_y0": {"prediction": 0}, "v_y1": "1"}
    r = get_scorer("demo").score(qs, preds)
    assert r["Acc"] == pytest.approx(75.0)
    assert r["breakdowns"]["qtype"]["x"]["acc"] == pytest.approx(50.0)
    assert r["breakdowns"]["qtype"]["y"]["acc"] == pytest.approx(100.0)


def test_vqa_eval_scores_the_demo_split(tmp_path):
    from vqacache.featurize.datasets import get_dataset

    root = tmp_path / "demo"
    val = get_dataset("demo", root).questions("val")
    preds = {q.qid: {"prediction": q.answer if i % 4 else (q.answer + 1) % len(q.candidates), "answer": q.answer}
             for i, q in enumerate(val)}  # every fourth wrong
    wrong = sum(1 for i in range(len(val)) if i % 4 == 0)
    (tmp_path / "val.json").write_text(json.dumps(preds))
    res = CliRunner().invoke(app, ["--dataset", "demo", "--data-root", str(root), "--split", "val",
                                   "--predictions", str(tmp_path / "val.json"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["Acc"] == pytest.approx(100.0 * (len(val) - wrong) / len(val))
