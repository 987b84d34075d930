"""Open-ended benchmarks: exact-match accuracy of the answer text, overall and per type.

Answer comparison (``normalisation`` in the result):

* ``activitynet_qa``: none, ``pred == answer`` on the raw strings, as ``evaluation/eval.py``
  does. Types as the script prints them: Motion, Spatial Relation, Temporal Relation, Free
  and, per answer type of Free, Yes/No, Color, Object, Location, Number, Other. Free is
  computed correctly (correct / count over types 3-8); the script's own Free denominator
  depends on the order of types in the GT file and is wrong.
* ``msvd_qa``, ``msrvtt_qa``: no official script (accuracy is computed inside training
  code as class index equality); FORMATS.md states no normalisation, so answers are
  compared after ``strip().lower()``. Per question word (what, who, how, when, where;
  ``color`` with the adapter's ``color_qtype``).
* ``nextqa_oe``: the official metric is WUPS@0 / WUPS@0.9 (WordNet Wu-Palmer similarity
  after pywsd lemmatisation and NExT-OE's stop-word list). NLTK / WordNet / pywsd are not
  available offline here, so WUPS is **not computed**; reported instead: exact-match
  accuracy after ``strip().lower()``, taking the max over the answer and the extra test
  reference, per type (CW, CH, TPN = TN + TP, TC, DB, DC, DL, DO) and C/T/D group. For DB and
  DC the official script also uses exact match, but after lemmatisation and stop-word removal.
* ``agqa``: ``strip().lower()`` (no script; README protocol). Per semantic class, structural
  type, binary vs open (``structural == "query"`` is open, per the README's erratum) and,
  when the CLI passes them, the ``global`` reasoning categories (a question counts toward
  each of its categories). The novel-composition, indirect-reference and more-steps metrics
  are subsets chosen at training time and are not computed.
* ``egotaskqa``: ``strip().lower()`` (the answer vocabulary is lower-cased). Per reasoning
  tag (``qtype`` split on ``$``; a question counts toward each of its tags), as
  ``ReasongingTypeAccCalculator``. An out-of-vocabulary ground truth (``<UNK1>`` in the
  official code, where predicting ``<UNK1>`` scores) only matches identical text here.
* ``jsonl``: a lab's own data: a multiple-choice question (with candidates) by candidate
  index, an open-ended one after ``strip().lower()``; per ``qtype``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vqacache.heads.scoring.multiple_choice import is_correct as choice_correct
from vqacache.heads.scoring.predictions import Matched, answer_text
from vqacache.heads.scoring.registry import Extras, register_scorer
from vqacache.heads.scoring.tally import Tally, cell, make_result

Normaliser = Callable[[str], str]


def exact(text: str) -> str:
    return text


def strip_lower(text: str) -> str:
    return text.strip().lower()


STRIP_LOWER = "exact match after strip() and lower()"
EXACT = "exact string match, no normalisation (as the official script)"


def text_correct(qid: str, pred: Any, answers: Sequence[Any], norm: Normaliser) -> bool:
    """None (a missing prediction) is wrong; else any accepted answer matches."""
    if pred is None:
        return False
    p = norm(answer_text(qid, pred))
    return any(p == norm(str(a)) for a in answers if a is not None)


WH_ORDER = ("what", "who", "how", "when", "where", "color")


def _by_question_word(name: str) -> None:
    @register_scorer(name, metric="accuracy per question word")
    def score(matched: Matched, extras: Extras) -> dict[str, Any]:
        words = Tally()
        for q, pred in matched.pairs:
            words.add(q.qtype or "", text_correct(q.qid, pred, [q.answer], strip_lower))
        order = [w for w in WH_ORDER if w in words.counts] + sorted(set(words.counts) - set(WH_ORDER))
        table = words.table()
        return make_result(name, "accuracy (answer text)", *words.total(),
                           breakdowns={"question word": {w: table[w] for w in order}}, normalisation=STRIP_LOWER)


_by_question_word("msvd_qa")
_by_question_word("msrvtt_qa")

ANET_TYPES = {"motion": "Motion", "spatial": "Spatial Relation", "temporal": "Temporal Relation"}
ANET_FREE = {"free/yes_no": "Yes/No", "free/color": "Color", "free/object": "Object", "free/location": "Location",
             "free/number": "Number", "free/other": "Other"}


@register_scorer("activitynet_qa", metric="accuracy per question type, Free per answer type (evaluation/eval.py)")
def score_activitynet(matched: Matched, extras: Extras) -> dict[str, Any]:
    types = Tally([*ANET_TYPES, *ANET_FREE])
    for q, pred in matched.pairs:
        types.add(q.qtype or "", text_correct(q.qid, pred, [q.answer], exact))
    table = types.table({**ANET_TYPES, **ANET_FREE})
    main = {v: table[v] for v in ANET_TYPES.values()}
    main["Free"] = cell(*types.total(ANET_FREE))
    return make_result("activitynet_qa", "accuracy (answer text)", *types.total(),
                       breakdowns={"type": main, "free": {v: table[v] for v in ANET_FREE.values()}},
                       normalisation=EXACT,
                       not_computed=["WUPS@0 / WUPS@0.9 (in the paper, not in the official script)"])


NEXTOE_TYPES = {"CW": "CW", "CH": "CH", "TN": "TPN", "TC": "TC", "DB": "DB", "DC": "DC", "DL": "DL", "DO": "DO"}


@register_scorer("nextqa_oe", metric="exact-match accuracy per type and C/T/D group (WUPS not computed)",
                 nested=True, uses_references=True)
def score_nextqa_oe(matched: Matched, extras: Extras) -> dict[str, Any]:
    types = Tally(NEXTOE_TYPES)
    for q, pred in matched.pairs:
        qtype = "TN" if q.qtype == "TP" else (q.qtype or "")
        types.add(qtype, text_correct(q.qid, pred, [q.answer, extras.references.get(q.qid)], strip_lower))
    groups = {f"Acc_{g}": cell(*types.total([t for t in types.counts if t.startswith(g)])) for g in "CTD"}
    return make_result(
        "nextqa_oe", "exact-match accuracy (answer text; max over the answer and the extra reference)",
        *types.total(), breakdowns={"type": types.table(NEXTOE_TYPES), "group": groups}, normalisation=STRIP_LOWER,
        not_computed=["WUPS@0 and WUPS@0.9, the official NExT-OE metric (needs NLTK WordNet and pywsd's "
                      "lemmatiser, not installed); lemmatisation and stop-word removal are not applied"],
    )


AGQA_SEMANTIC = ("object", "relation", "action")
AGQA_STRUCTURAL = ("query", "verify", "logic", "choose", "compare")


@register_scorer("agqa", metric="accuracy per reasoning category, semantic, structural and binary/open (README)",
                 tag_field="global")
def score_agqa(matched: Matched, extras: Extras) -> dict[str, Any]:
    semantic, structural, kind, reasoning, overall = (
        Tally(AGQA_SEMANTIC), Tally(AGQA_STRUCTURAL), Tally(("binary", "open")), Tally(), Tally())
    for q, pred in matched.pairs:
        ok = text_correct(q.qid, pred, [q.answer], strip_lower)
        sem, _, struct = (q.qtype or "").partition("/")
        semantic.add(sem, ok)
        structural.add(struct, ok)
        kind.add("open" if struct == "query" else "binary", ok)
        for tag in extras.tags.get(q.qid, ()):
            reasoning.add(str(tag), ok)
        overall.add("all", ok)
    not_computed = ["novel compositions, indirect references (recall/precision) and more compositional steps"]
    if not extras.tags:
        not_computed.insert(0, "reasoning categories ('global'): not passed (vqa-eval reads them from the annotations)")
    return make_result(
        "agqa", "accuracy (answer text)", *overall.total(),
        breakdowns={"reasoning": reasoning.table(), "semantic": semantic.table(), "structural": structural.table(),
                    "answer type": kind.table()},
        normalisation=STRIP_LOWER, not_computed=not_computed,
    )


@register_scorer("egotaskqa", metric="accuracy per reasoning tag (ReasongingTypeAccCalculator)")
def score_egotaskqa(matched: Matched, extras: Extras) -> dict[str, Any]:
    tags, overall = Tally(), Tally()
    for q, pred in matched.pairs:
        ok = text_correct(q.qid, pred, [q.answer], strip_lower)
        for tag in dict.fromkeys(t for t in (q.qtype or "").split("$") if t):
            tags.add(tag, ok)
        overall.add("all", ok)
    return make_result("egotaskqa", "accuracy (answer text)", *overall.total(),
                       breakdowns={"reasoning type": tags.table()},
                       normalisation=STRIP_LOWER,
                       not_computed=["<UNK1> for out-of-vocabulary answers (needs the train vocabulary)"])


@register_scorer("jsonl", metric="accuracy per qtype (candidate index, or answer text)")
def score_jsonl(matched: Matched, extras: Extras) -> dict[str, Any]:
    types = Tally()
    for q, pred in matched.pairs:
        if q.candidates:
            ok = choice_correct(q.qid, pred, q.answer, len(q.candidates))
        else:
            ok = text_correct(q.qid, pred, [q.answer], strip_lower)
        types.add(q.qtype or "-", ok)
    breakdowns = {"qtype": types.table()} if set(types.counts) != {"-"} else {}
    return make_result("jsonl", "accuracy", *types.total(), breakdowns=breakdowns,
                       normalisation=f"open-ended: {STRIP_LOWER}; multiple choice: candidate index")
