"""Offline handler `reference_answer`: the teacher's own answer to a held-out question. A stand-in.

Two steps, both rules (no LLM):

1. **Which fact is asked for** (`asked_fact`): the question's wh-word and target noun ("which river",
   "name the port", "how many people", "who", "in which year") and its verb ("founded", "first
   climbed", "launched", "reigns") pick one fact kind of the grounded-QA rules (`grounded_qa.RULES`:
   capital, ruler, founded_year, ...). The routing reads how English asks for a fact, not the wording of
   any one question template.
2. **Where it is** (`facts`): the grounded-QA rules read every (fact kind, answer span) the context
   states; the answer is the span of the asked kind (the first when the context states it twice).

An unroutable question, or a context without that fact, gets the old fallback: the grounded-QA pair
whose question shares the most words with the asked one (empty when none shares any).
"""

import re
from typing import Any

from dagster_project.teacher.offline import handler
from dagster_project.teacher.offline.grounded_qa import RULES, generate_pairs, split_sentences
from dagster_project.teacher.offline.judges import _line, _tag

_WH_YEAR = re.compile(r"\b(?:year|when|date)\b")
_WH_PERSON = re.compile(r"\b(?:who|whom|person|man|woman)\b")
_HOW = [
    (re.compile(r"\bhow many (?:people|inhabitants|residents)|\binhabitants\b|\bpopulation\b"), "population"),
    (re.compile(r"\bhow many members\b|\bmembers\b.*\bhow many\b|\bnumber of members\b"), "members"),
    (re.compile(r"\bhow (?:long|far along)\b|\blength\b"), "length"),
    (re.compile(r"\bhow (?:high|tall|far above)\b|\bheight\b|\belevation\b"), "height"),
]
# (verb cue, fact kind) for a question asking "when" / "who"
_YEAR_VERBS = [
    (re.compile(r"\b(?:first )?(?:ascent|climbed|summit)\b"), "ascent_year"),
    (re.compile(r"\binvent|\bshown\b|\bdemonstrat|\bpublic\b"), "invention_year"),
    (re.compile(r"\blaunch|\bto sea\b"), "launch_year"),
    (re.compile(r"\bfound|\bestablish|\bcame into being|\bstarted\b|\bcharter"), "founded_year"),
]
_PERSON_VERBS = [
    (re.compile(r"\bfirst (?:climb|ascent|to (?:stand|reach|climb))|\bsummit|\bon top\b"), "first_climber"),
    (re.compile(r"\bfound|\bstart|\bestablish"), "founder"),
    (re.compile(r"\brul|\breign|\bthrone|\bmonarch|\bgovern"), "ruler"),
    (re.compile(r"\bcaptain|\bcommand|\bsail"), "captain"),
    (re.compile(r"\binvent"), "invention"),
]
# the noun a "which X" / "name the X" question asks for -> fact kind (None: decided by other words)
_NOUNS: dict[str, str | None] = {
    "capital": "capital",
    "kingdom": "kingdom",
    "realm": "kingdom",
    "river": "river",
    "product": "known_for",
    "thing": "known_for",
    "mountain": "source",
    "peak": "source",
    "range": "range",
    "body": "mouth",
    "sea": "mouth",
    "water": "mouth",
    "guild": "guild",
    "birthplace": "birthplace",
    "device": "invention",
    "invention": "invention",
    "machine": "invention",
    "port": "home_port",
    "harbour": "home_port",
    "captain": "captain",
    "monarch": "ruler",
    "ruler": "ruler",
    "king": "ruler",
    "queen": "ruler",
    "goods": "cargo",
    "cargo": "cargo",
    "trade": "trade",
    "craft": "trade",
    "founder": "founder",
    "city": None,
    "town": None,
    "place": None,
    "person": None,
}
_TARGET = re.compile(
    r"\b(?:which|what)\s+(?:\w+\s+)?(?P<n>"
    + "|".join(_NOUNS)
    + r")\b|^(?:name|give|state|tell me) (?:the|a|an)\s+(?:\w+\s+)?(?P<m>"
    + "|".join(_NOUNS)
    + r")\b"
)
_CITY_BY_CUE = [
    (re.compile(r"\bgovern|\bcapital|\bseat of (?:power|government)"), "capital"),
    (re.compile(r"\bborn|\bbirth"), "birthplace"),
    (re.compile(r"\bguild\b.*\b(?:meet|hall|seat|based)|\b(?:meet|hall|seat|based)\b.*\bguild\b"), "seat"),
    (re.compile(r"\briver\b.*\b(?:bank|past|pass|along|flow)|\b(?:bank|along)\b.*\briver\b"), "city"),
    (re.compile(r"\bport\b|\bbased\b"), "home_port"),
    (re.compile(r"\bguild\b"), "seat"),
]


def asked_fact(question: str) -> str | None:
    """The fact kind (a grounded-QA rule category) `question` asks for, or None when no rule applies."""
    q = " ".join(question.lower().split())
    for pattern, kind in _HOW:
        if pattern.search(q):
            return kind
    if _WH_YEAR.search(q):
        return next((kind for pattern, kind in _YEAR_VERBS if pattern.search(q)), None)
    m = _TARGET.search(q)
    noun = (m.group("n") or m.group("m")) if m else None
    if noun in ("city", "town", "place"):
        return next((kind for pattern, kind in _CITY_BY_CUE if pattern.search(q)), None)
    if noun and noun != "person" and _NOUNS[noun] is not None:
        if noun == "river" and re.search(r"\bbanks?\b|\bpast\b", q):
            return "city"
        return _NOUNS[noun]
    if noun == "person" or _WH_PERSON.search(q):
        return next((kind for pattern, kind in _PERSON_VERBS if pattern.search(q)), None)
    if re.search(r"\b(?:famous|known) for\b", q):
        return "invention" if re.search(r"\binvent", q) else "known_for"
    if re.search(r"\bcarr(?:y|ies)\b|\bloaded\b", q):
        return "cargo"
    if re.search(r"\bdevoted\b|\bpractis", q):
        return "trade"
    return None


def facts(context: str) -> list[tuple[str, str]]:
    """Every (fact kind, answer span) the grounded-QA rules read in `context`, in reading order."""
    found: list[tuple[str, str]] = []
    for sentence in split_sentences(context):
        for rule in RULES:
            m = rule.pattern.search(sentence)
            if m and m.group("a"):
                found.append((rule.category, m.group("a")))
    return found


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text)}


def answer_question(context: str, question: str, seed: int | None = None) -> str:
    """The offline teacher's answer to `question` over `context` ("" when it finds none)."""
    kind = asked_fact(question)
    if kind is not None:
        spans = [span for k, span in facts(context) if k == kind]
        if spans:
            return spans[0]
    pairs = generate_pairs(context, 64, 0.0, seed)
    asked = _words(question)
    best = max(pairs, key=lambda p: len(asked & _words(p["question"])), default=None)
    if best is None or not asked & _words(best["question"]):
        return ""
    return best["answer"]


@handler("reference_answer")
def reference_answer(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    """The handler: {"answer": ...} for the `<context>` and `Question:` line of the user message."""
    return {"answer": answer_question(_tag(text, "context"), _line(text, "question"), seed)}
