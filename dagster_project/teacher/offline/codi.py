"""Offline handler `codi_turn`: the next turn of a grounded conversation, by rules. A stand-in, not an LLM.

It reads the tagged parts of the prompt (prompts/codi_turn.yaml in examples/codi): `<passage>`,
`<history>` ("Q: ..." / "A: ..." lines), `<turn_type>`, `<phenomena>` (comma-separated) and
`<refusal>`, and writes {question, answer, evidence} for the turn types of the demo graph:

- `factoid`: a fact of the passage not asked yet (the grounded-QA rules: capital, ruler, founded year,
  ...), its subject named; `followup`: another fact, the subject as a pronoun ("What is its capital?");
- `clarification`: the previous turn's fact asked again ("Sorry, what was the capital again?");
- `comparison`: a number of the passage against a threshold, answered "yes"/"no" with its sentence as
  evidence; `summary`: the passage's first sentence (a span);
- `unanswerable`: a fact of the same kind of entity that the passage does not state (or one no demo
  passage states: a motto, a national dish), answered with the refusal.

Phenomena change the question's surface: `coreference` (a pronoun for the subject), `ellipsis` ("And
the population?"), `casual` (a spoken opener, lower case). An unknown turn type, or a factoid when every
fact was asked, gets an empty question, which the schema rejects (the conversation ends there): the
honest answer, never an invented one. Deterministic: a pure function of (messages, temperature, seed).
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from dagster_project.teacher.offline import handler
from dagster_project.teacher.offline.grounded_qa import RULES, passage_subject, split_sentences

TAG = r"<{0}>\s*(.*?)\s*</{0}>"
PEOPLE = {"ruler", "founder", "first_climber", "captain"}
NOUNS = {
    "capital": "capital",
    "ruler": "ruler",
    "population": "population",
    "founder": "founder",
    "founded_year": "founding year",
    "kingdom": "kingdom",
    "river": "river",
    "known_for": "best-known feature",
    "mouth": "sea at its mouth",
    "length": "length",
    "source": "source",
    "city": "city on its banks",
    "range": "mountain range",
    "height": "height",
    "first_climber": "first climber",
    "ascent_year": "year of the first ascent",
    "birthplace": "birthplace",
    "invention": "invention",
    "invention_year": "year of the invention",
    "guild": "guild",
    "captain": "captain",
    "launch_year": "launch year",
    "home_port": "home port",
    "cargo": "usual cargo",
    "trade": "trade",
    "seat": "seat",
    "members": "number of members",
}
YEARS = {"founded_year", "ascent_year", "invention_year", "launch_year"}
NUMBERS = YEARS | {"population", "length", "height", "members"}
# Kinds of entity and the facts a passage about one usually states: an absent one is unanswerable.
KINDS = (
    {"capital", "ruler", "population", "founded_year", "founder", "known_for"},
    {"mouth", "length", "source", "city", "kingdom"},
    {"range", "height", "first_climber", "ascent_year", "kingdom"},
    {"birthplace", "invention", "invention_year", "guild"},
    {"captain", "launch_year", "home_port", "cargo"},
    {"trade", "seat", "members", "founded_year", "founder"},
)
NEVER_STATED = ("motto", "national dish", "oldest building", "favourite colour")  # no demo passage has one


@dataclass(frozen=True)
class Fact:
    """A fact the passage states: its category, the answer span and the sentence holding it."""

    category: str
    answer: str
    sentence: str


def facts_of(passage: str) -> list[Fact]:
    """The facts of a passage in passage order (the first grounded-QA rule matching each sentence)."""
    found, seen = [], set()
    for sentence in split_sentences(passage):
        for rule in RULES:
            m = rule.pattern.search(sentence)
            if m and rule.category in NOUNS and rule.category not in seen:
                answer = m.group("a").strip()
                if answer in passage:
                    found.append(Fact(rule.category, answer, sentence))
                    seen.add(rule.category)
                break
    return found


def absent_categories(passage: str) -> list[str]:
    """Facts an entity of this passage's kind usually has that this passage does not state, then
    facts no demo passage states."""
    present = {f.category for f in facts_of(passage)}
    kind = max(KINDS, key=lambda k: len(k & present))
    return sorted(kind - present) + list(NEVER_STATED)


def parse_history(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of "Q: ..." / "A: ..." lines."""
    pairs, question = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Q:"):
            question = line[2:].strip()
        elif line.startswith("A:") and question is not None:
            pairs.append((question, line[2:].strip()))
            question = None
    return pairs


def _pick(options: list[Any], *key: Any) -> Any:
    digest = hashlib.sha256("\x1f".join(str(k) for k in key).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _the(subject: str) -> str:
    return f"the {subject}" if subject.split()[-1] in {"River", "Guild", "Range", "Sea"} else subject


def ask(category: str, subject: str, phenomena: set[str], has_history: bool, key: tuple) -> str:
    """A question about `category` of `subject` with the phenomena applied (see the module doc)."""
    noun = NOUNS.get(category, category)
    wh = "Who" if category in PEOPLE else "What"
    if "ellipsis" in phenomena and has_history:
        question = _pick([f"And the {noun}?", f"What about the {noun}?", f"And its {noun}?"], *key)
    elif "coreference" in phenomena and has_history:
        question = _pick(
            [f"{wh} is its {noun}?", f"Do you know its {noun}?", f"And {wh.lower()} is its {noun}?"], *key
        )
    else:
        question = _pick(
            [f"{wh} is the {noun} of {_the(subject)}?", f"Tell me the {noun} of {_the(subject)}."], *key
        )
    if "casual" in phenomena:
        question = _pick(["Hmm, ", "Okay, ", "Oh, "], *key, "casual") + question[0].lower() + question[1:]
    return question


def _number(text: str) -> int | None:
    m = re.match(r"\d[\d,]*", text)
    return int(m.group().replace(",", "")) if m else None


def next_turn(
    passage: str,
    history: list[tuple[str, str]],
    turn_type: str,
    phenomena: set[str],
    refusal: str,
    key: tuple,
) -> dict[str, str]:
    """The stand-in's next turn; an empty question when it has nothing honest to ask."""
    subject = passage_subject(passage)
    facts = facts_of(passage)
    answered = {a for _, a in history}
    unused = [f for f in facts if f.answer not in answered]
    last = next((f for f in facts if history and f.answer == history[-1][1]), None)
    nothing = {"question": "", "answer": refusal, "evidence": ""}
    has_history = bool(history)
    if turn_type == "clarification" and last is not None:
        noun = NOUNS[last.category]
        question = _pick([f"Sorry, what was the {noun} again?", f"Wait, which {noun} did you say?"], *key)
        return {"question": question, "answer": last.answer, "evidence": last.sentence}
    if turn_type == "summary":
        first = split_sentences(passage)[0].rstrip(".")
        question = _pick(
            [f"What is the passage about {_the(subject)} mostly about?", "Can you sum up the passage?"], *key
        )
        if has_history:
            question = _pick(["Can you sum up what it says?", "So what is it, in short?"], *key)
        return {"question": question, "answer": first, "evidence": first}
    if turn_type == "comparison":
        numeric = [f for f in facts if f.category in NUMBERS and _number(f.answer) is not None]
        if not numeric:
            return nothing
        fact = _pick(numeric, *key, "fact")
        value = _number(fact.answer) or 0
        bigger = _pick([True, False], *key, "side")
        threshold = value - max(1, value // 4) if bigger else value + max(1, value // 4)
        threshold = round(threshold, -1) if threshold > 100 else threshold
        later = "later than" if fact.category in YEARS else "more than"
        noun = NOUNS[fact.category]
        target = (
            f"its {noun}"
            if (has_history and "coreference" in phenomena)
            else f"the {noun} of {_the(subject)}"
        )
        number = f"{threshold:,}" if fact.category not in YEARS else str(threshold)
        return {
            "question": f"Is {target} {later} {number}?",
            "answer": "yes" if value > threshold else "no",
            "evidence": fact.sentence,
        }
    if turn_type == "unanswerable":
        category = _pick(absent_categories(passage), *key, "absent")
        return {
            "question": ask(category, subject, phenomena, has_history, key),
            "answer": refusal,
            "evidence": "",
        }
    if turn_type in ("factoid", "followup", "clarification"):
        if not unused:
            return nothing
        fact = _pick(unused, *key, "fact") if turn_type != "factoid" else unused[0]
        applied = set(phenomena) | ({"coreference"} if turn_type == "followup" else set())
        return {
            "question": ask(fact.category, subject, applied, has_history, key),
            "answer": fact.answer,
            "evidence": fact.sentence,
        }
    return nothing


def _tag(name: str, text: str) -> str | None:
    m = re.search(TAG.format(name), text, re.S)
    return m.group(1) if m else None


@handler("codi_turn")
def codi_turn(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    """The handler: {question, answer, evidence} for the tagged passage, history, turn type, phenomena."""
    passage, turn_type = _tag("passage", text), _tag("turn_type", text)
    if not passage or not turn_type:
        return {}
    history = parse_history(_tag("history", text) or "")
    phenomena = {p.strip() for p in (_tag("phenomena", text) or "").split(",") if p.strip()}
    refusal = _tag("refusal", text) or "unknown"
    key = (seed, temperature, passage[:80], len(history), turn_type)
    return next_turn(" ".join(passage.split()), history, turn_type, phenomena, refusal, key)
