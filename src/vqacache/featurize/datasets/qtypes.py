"""Question types derived from the question text (MSVD-QA, MSRVTT-QA).

Neither release has a type field. The original papers (Xu et al. 2017) report accuracy
per question word: what / who / how / when / where, i.e. the question's first word. just-ask
and GRA add a ``color`` type: any question containing "color" counts as ``color`` before
the first-word rule applies. Both rules are here; adapters default to the first-word one.
"""

from __future__ import annotations

WH_WORDS = ("what", "who", "how", "when", "where")
"""The official MSVD-QA / MSRVTT-QA breakdown."""


def wh_qtype(question: str, *, color: bool = False) -> str:
    """The question's first word, lower-cased (``color`` first when ``color`` is set)."""
    text = question.strip().lower()
    if color and "color" in text:
        return "color"
    words = text.split()
    return words[0] if words else ""
