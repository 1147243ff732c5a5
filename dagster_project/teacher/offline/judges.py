"""Offline handlers for the evaluation prompts: reference answers and judges. Stand-ins, not LLMs.

- `reference_answer`: in `reference.py` (routes the question to the fact it asks for, then reads it off
  the context with the grounded-QA rules).
- `judge_success`: success when the answer's tokens overlap the reference's (token F1 >= 0.5), or, with no
  reference, when the answer is a non-empty span of the context. Its reason says which rule decided.
- `judge_quality`: 5 when the answer is a verbatim span of the passage and the question ends with '?'
  or names the blank, 1 otherwise.
"""

import re
from collections import Counter
from typing import Any

from dagster_project.teacher.offline import handler

_TAG = {
    name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.S)
    for name in ("context", "passage", "question", "answer")
}
_LINE = {
    name: re.compile(rf"^{label}:[ \t]*(.*)$", re.M)
    for name, label in (
        ("question", "Question"),
        ("request", "Request"),
        ("reference", "Reference answer \\(may be empty\\)"),
        ("answer", "Answer to judge"),
    )
}
_WORD = re.compile(r"\w+")


def _tag(text: str, name: str) -> str:
    m = _TAG[name].search(text)
    return m.group(1) if m else ""


def _line(text: str, name: str) -> str:
    m = _LINE[name].search(text)
    return m.group(1).strip() if m else ""


def _tokens(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _f1(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    common = sum((Counter(ta) & Counter(tb)).values())
    if not ta or not tb or not common:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def _squash(text: str) -> str:
    return " ".join(text.split())


@handler("judge_success")
def judge_success(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    context, reference, answer = _tag(text, "context"), _line(text, "reference"), _line(text, "answer")
    if reference:
        score = _f1(answer, reference)
        return {"success": score >= 0.5, "reason": f"offline rule: token F1 with the reference {score:.2f}"}
    ok = bool(answer.strip()) and _squash(answer) in _squash(context)
    return {
        "success": ok,
        "reason": "offline rule: the answer is " + ("" if ok else "not ") + "a context span",
    }


@handler("judge_quality")
def judge_quality(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    passage, question, answer = _tag(text, "passage"), _tag(text, "question"), _tag(text, "answer")
    ok = (
        bool(answer.strip()) and _squash(answer) in _squash(passage) and question.strip().endswith(("?", "."))
    )
    return {"score": 5 if ok else 1, "reason": "offline rule: answer span of the passage and a question"}
