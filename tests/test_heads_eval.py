"""vqa-eval scores like NExT-QA's official eval_mc.py (checked on the real val.csv)."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

from vqacache.cli.eval import app
from vqacache.heads.eval import accuracy_by_type, evaluate, format_table


def _rows(annotations):
    with (annotations / "nextqa" / "val.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _independent(rows, preds):
    """Straight from the official script's definition, written independently."""
    hit, cnt = Counter(), Counter()
    for r in rows:
        t = "TN" if r["type"] == "TP" else r["type"]
        p = preds[f"{r['video']}_{r['qid']}"]
        cnt[t] += 1
        hit[t] += p["prediction"] == p["answer"]
    out = {t: 100.0 * hit[t] / cnt[t] for t in cnt}
    for letter in "CTD":
        n = sum(v for t, v in cnt.items() if t.startswith(letter))
        out[letter] = 100.0 * sum(v for t, v in hit.items() if t.startswith(letter)) / n
    out["all"] = 100.0 * sum(hit.values()) / sum(cnt.values())
    return out


@pytest.mark.parametrize("p_correct", [0.0, 0.37, 1.0])
def test_scores_match_official_definition(shared_annotations, tmp_path, p_correct):
    rows = _rows(shared_annotations)
    rng = random.Random(int(p_correct * 100))
    preds = {}
    for r in rows:
        ans = int(r["answer"])
        pred = ans if rng.random() < p_correct else (ans + rng.randint(1, 4)) % 5
        preds[f"{r['video']}_{r['qid']}"] = {"prediction": pred, "answer": ans}
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(preds))
    result = evaluate("nextqa", shared_annotations, "val", path)
    expect = _independent(rows, preds)
    names = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc", "DO": "Other"}
    for t, name in names.items():
        assert result["types"][name]["acc"] == pytest.approx(expect[t])
    for letter in "CTD":
        assert result["groups"][f"Acc_{letter}"]["acc"] == pytest.approx(expect[letter])
    assert result["Acc"] == pytest.approx(expect["all"])
    assert result["count"] == len(rows)
    assert result["answer_mismatches"] == 0
    assert "TP" in {r["type"] for r in rows}  # the fold is exercised


def test_group_means_are_question_weighted():
    recs = [("a", "CW", True)] * 1 + [("b", "CH", False)] * 3  # Why 100, How 0
    r = accuracy_by_type(recs)
    assert r["groups"]["Acc_C"]["acc"] == pytest.approx(25.0)  # not the type mean (50)
    assert r["types"]["Bef&Aft"]["acc"] is None
    assert "Acc: 25.00" in format_table(r)


def test_cli_prints_table_and_refuses_missing_questions(shared_annotations, tmp_path):
    rows = _rows(shared_annotations)
    preds = {f"{r['video']}_{r['qid']}": {"prediction": int(r["answer"]), "answer": int(r["answer"])} for r in rows}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preds))
    runner = CliRunner()
    ok = runner.invoke(app, ["--annotations", str(shared_annotations), "--predictions", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "Acc: 100.00" in ok.output
    del preds[next(iter(preds))]
    path.write_text(json.dumps(preds))
    bad = runner.invoke(app, ["--annotations", str(shared_annotations), "--predictions", str(path)])
    assert bad.exit_code == 2 and "lack question" in bad.output
    other = runner.invoke(app, ["--dataset", "msrvtt", "--annotations", str(shared_annotations), "--predictions", str(path)])
    assert other.exit_code == 2 and "nextqa" in other.output
