"""Offline handler `grounded_qa`: question-answer pairs read off a passage by rules. A stand-in, not an LLM.

It exists so that a fresh machine can run the whole pipeline and the test suite with no network, keys
or GPU. It is NOT a language model and its output is no claim of LLM quality: it reads the passage with
regular expressions, turns sentences of a few familiar shapes ("The capital of X is Y.", "X was founded
in 1234.", "It was founded by A B." ...) into question/answer pairs, and falls back to generic
cloze-style questions ("In the passage about X, what fills the blank in: '... ___ ...'?") for any other
sentence that holds a number or a name. Every answer is a verbatim span of the passage.

The prompt (prompts/grounded_qa.yaml): the last user message holds the passage between `<passage>` and
`</passage>` and the number of pairs wanted in `<count>N</count>`.

Determinism: the answer is a pure function of (messages, temperature, seed, max_tokens). With
temperature 0 the first question template of each rule is used; above 0 the template is picked by a
hash of (seed, temperature, sentence), so different seeds give different but reproducible phrasings.
"""

import hashlib
import re
from dataclasses import dataclass

NAME = r"[A-Z][\w'’-]*(?: [A-Z][\w'’-]*)*"
NUM = r"\d[\d,]*\d|\d"
YEAR = r"\d{3,4}"
PHRASE = r"[a-z][a-z -]*[a-z]"  # a short lowercase phrase ending the sentence


@dataclass(frozen=True)
class Rule:
    """A sentence shape: a regex with an answer group `a` (and maybe a subject group `s`)."""

    category: str
    pattern: re.Pattern[str]
    questions: tuple[str, ...]  # templates with {s} = the subject


def _rule(category: str, patterns: list[str], questions: list[str]) -> list[Rule]:
    return [Rule(category, re.compile(p), tuple(questions)) for p in patterns]


RULES: list[Rule] = [
    *_rule(
        "capital",
        [
            rf"[Tt]he capital of (?P<s>{NAME}) is (?P<a>{NAME})",
            rf"\bIts capital is (?P<a>{NAME})",
            rf"^(?P<a>{NAME}) serves as the capital of (?P<s>{NAME})",
        ],
        [
            "What is the capital of {s}?",
            "Which city is the capital of {s}?",
            "Tell me the capital of {s}.",
            "{s} has which city as its capital?",
        ],
    ),
    *_rule(
        "ruler",
        [
            rf"\bruled by (?P<a>{NAME})",
            rf"ruler of (?P<s>{NAME}) is (?P<a>{NAME})",
            rf"^(?P<a>{NAME}) sits on the throne of (?P<s>{NAME})",
        ],
        [
            "Who rules {s}?",
            "Who sits on the throne of {s}?",
            "Name the ruler of {s}.",
            "{s} is ruled by whom?",
        ],
    ),
    *_rule(
        "population",
        [
            rf"population of (?:about )?(?P<a>{NUM})\b",
            rf"population is estimated at (?P<a>{NUM})",
            rf"^About (?P<a>{NUM}) people live in (?P<s>{NAME})",
        ],
        [
            "What is the population of {s}?",
            "About how many people live in {s}?",
            "State the population of {s}.",
            "{s} has how many inhabitants?",
        ],
    ),
    *_rule(
        "founder",
        [rf"\bfounded by (?P<a>{NAME})", rf"^(?P<a>{NAME}) founded the (?P<s>{NAME})"],
        [
            "Who founded {s}?",
            "Who was the founder of {s}?",
            "Name the founder of {s}.",
            "{s} was started by whom?",
        ],
    ),
    *_rule(
        "founded_year",
        [
            rf"\b(?:founded|established) in (?:the year )?(?P<a>{YEAR})\b",
            rf"founding to the year (?P<a>{YEAR})\b",
            rf"\bdates from (?P<a>{YEAR})\b",
            rf"charter was signed in (?P<a>{YEAR})\b",
        ],
        [
            "When was {s} founded?",
            "In what year was {s} founded?",
            "State the year in which {s} was founded.",
            "{s} was founded in which year?",
        ],
    ),
    *_rule(
        "kingdom",
        [rf"kingdom of (?P<a>{NAME})"],
        [
            "In which kingdom is {s}?",
            "Which kingdom does {s} belong to?",
            "Name the kingdom in which {s} lies.",
            "{s} lies in which kingdom?",
        ],
    ),
    *_rule(
        "river",
        [rf"\b(?:lies on|banks of) the (?P<a>{NAME}) river", rf"^The (?P<a>{NAME}) river flows through"],
        [
            "On which river does {s} stand?",
            "Which river flows through {s}?",
            "Name the river that flows through {s}.",
            "{s} stands on which river?",
        ],
    ),
    *_rule(
        "known_for",
        [rf"\b(?:famous|known) for its (?P<a>{PHRASE})\.?$", rf"\bto (?P<s>{NAME}) for its (?P<a>{PHRASE})"],
        [
            "What is {s} famous for?",
            "What is {s} known for?",
            "Name what {s} is famous for.",
            "{s} is known for what?",
        ],
    ),
    *_rule(
        "mouth",
        [rf"\b(?:empties|flows) into the (?P<a>{NAME})"],
        [
            "Into which sea does {s} flow?",
            "Where does {s} end?",
            "Name the sea into which {s} flows.",
            "{s} flows into which sea?",
        ],
    ),
    *_rule(
        "length",
        [rf"\b(?:is|runs for|length is) (?P<a>(?:{NUM}) (?:kilometres|kilometers|km|miles))\b"],
        ["How long is {s}?", "What is the length of {s}?", "State the length of {s}.", "{s} is how long?"],
    ),
    *_rule(
        "source",
        [rf"\b(?:rises on|source on|slopes of) (?P<a>{NAME})"],
        [
            "Where does {s} have its source?",
            "On which mountain does {s} rise?",
            "Name the mountain on which {s} rises.",
            "{s} rises on which mountain?",
        ],
    ),
    *_rule(
        "city",
        [rf"\bpasses the city of (?P<a>{NAME})", rf"^The city of (?P<a>{NAME}) lies on its banks"],
        [
            "Which city lies on {s}?",
            "Which city does {s} pass?",
            "Name a city that {s} passes.",
            "{s} passes which city?",
        ],
    ),
    *_rule(
        "range",
        [rf"\b(?:a mountain in|highest peak of) the (?P<a>{NAME})"],
        [
            "In which range is {s}?",
            "Which range does {s} belong to?",
            "Name the range that {s} is part of.",
            "{s} is in which range?",
        ],
    ),
    *_rule(
        "height",
        [rf"(?P<a>(?:{NUM}) (?:metres|meters|feet))"],
        ["How high is {s}?", "What is the height of {s}?", "State the height of {s}.", "{s} is how high?"],
    ),
    *_rule(
        "first_climber",
        [
            rf"first climbed by (?P<a>{NAME})",
            rf"^(?P<a>{NAME}) made the first ascent of (?P<s>{NAME})",
            rf"reach the summit was (?P<a>{NAME})",
        ],
        [
            "Who first climbed {s}?",
            "Who made the first ascent of {s}?",
            "Name the first climber of {s}.",
            "{s} was first ascended by whom?",
        ],
    ),
    *_rule(
        "ascent_year",
        [rf"first ascent took place in (?P<a>{YEAR})\b", rf"first climbed in (?P<a>{YEAR})\b"],
        [
            "When was {s} first climbed?",
            "In what year was {s} first climbed?",
            "State the year of the first ascent of {s}.",
            "{s} was first climbed in which year?",
        ],
    ),
    *_rule(
        "birthplace",
        [rf"\bborn in (?:the city of )?(?P<a>{NAME})"],
        [
            "Where was {s} born?",
            "In which city was {s} born?",
            "Name the city where {s} was born.",
            "{s} came from which city?",
        ],
    ),
    *_rule(
        "invention",
        [
            rf"\binvented the (?P<a>{PHRASE})\.?$",
            rf"best remembered for the (?P<a>{PHRASE})\.?$",
            rf"^The invention of the (?P<a>{PHRASE}) made (?P<s>{NAME}) famous",
        ],
        [
            "What did {s} invent?",
            "Which invention is {s} remembered for?",
            "Name the invention of {s}.",
            "{s} invented what?",
        ],
    ),
    *_rule(
        "invention_year",
        [rf"first (?:demonstrated|shown) in (?P<a>{YEAR})\b"],
        [
            "When was the invention of {s} first shown?",
            "In what year was the invention of {s} first demonstrated?",
            "State the year the invention of {s} was first demonstrated.",
        ],
    ),
    *_rule(
        "guild",
        [rf"\b(?:member of|belonged to) the (?P<a>{NAME} Guild)"],
        [
            "Which guild was {s} a member of?",
            "Which guild did {s} belong to?",
            "Name the guild that {s} belonged to.",
            "{s} belonged to which guild?",
        ],
    ),
    *_rule(
        "captain",
        [
            rf"commanded by Captain (?P<a>{NAME})",
            rf"^(?P<a>{NAME}) is the captain of (?P<s>{NAME})",
            rf"\bcaptain is (?P<a>{NAME})",
        ],
        [
            "Who is the captain of {s}?",
            "Who commands {s}?",
            "Name the captain of {s}.",
            "{s} is commanded by whom?",
        ],
    ),
    *_rule(
        "launch_year",
        [rf"\blaunched in (?P<a>{YEAR})\b", rf"first put to sea in (?P<a>{YEAR})\b"],
        [
            "When was {s} launched?",
            "In what year was {s} launched?",
            "State the year {s} was launched.",
            "{s} was launched in which year?",
        ],
    ),
    *_rule(
        "home_port",
        [rf"home port is (?P<a>{NAME})", rf"from the port of (?P<a>{NAME})", rf"harbour of (?P<a>{NAME})"],
        [
            "What is the home port of {s}?",
            "From which port does {s} sail?",
            "Name the home port of {s}.",
            "{s} sails from which port?",
        ],
    ),
    *_rule(
        "cargo",
        [rf"\b(?:usually carries|carries cargoes of|trades mainly in) (?P<a>{PHRASE})\.?$"],
        [
            "What does {s} carry?",
            "What cargo does {s} usually carry?",
            "Name the cargo that {s} carries.",
            "{s} usually carries what?",
        ],
    ),
    *_rule(
        "trade",
        [rf"\bguild devoted to (?P<a>{PHRASE})\.?$", rf"\bthe trade of (?P<a>{PHRASE})\.?$"],
        [
            "What trade does {s} practise?",
            "Which craft is {s} devoted to?",
            "Name the trade of {s}.",
            "{s} practises which craft?",
        ],
    ),
    *_rule(
        "seat",
        [
            rf"\bhall stands in (?P<a>{NAME})",
            rf"\bhas its seat in (?P<a>{NAME})",
            rf"meets in the city of (?P<a>{NAME})",
        ],
        [
            "Where does {s} have its seat?",
            "In which city is {s} based?",
            "Name the city where {s} has its seat.",
            "{s} is based in which city?",
        ],
    ),
    *_rule(
        "members",
        [rf"(?:has|counts|Some) (?P<a>{NUM}) (?:members|craftspeople)"],
        [
            "How many members does {s} have?",
            "How many members belong to {s}?",
            "State the number of members of {s}.",
            "{s} counts how many members?",
        ],
    ),
]

PASSAGE_RE = re.compile(r"<passage>\s*(.*?)\s*</passage>", re.S)
COUNT_RE = re.compile(r"<count>\s*(\d+)\s*</count>")
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
SUBJECT_RE = re.compile(rf"^(?:The |A |An )?({NAME})")
CLOZE_RE = re.compile(
    rf"(?P<a>(?:{NUM})(?: (?:kilometres|metres|km|miles|feet|years|people))?|(?<=\w )(?:{NAME}))"
)


def _words(text: str) -> int:
    return len(text.split())


def _pick(options: tuple[str, ...], key: str, temperature: float, seed: int | None) -> str:
    """Template 0 at temperature 0; otherwise one chosen by a stable hash of (seed, temperature, key)."""
    if temperature <= 0 or len(options) == 1:
        return options[0]
    digest = hashlib.sha256(f"{seed}|{temperature}|{key}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def split_sentences(passage: str) -> list[str]:
    """Split a passage into sentences (a simple punctuation rule; good enough for the stand-in)."""
    return [s.strip() for s in SENTENCE_RE.split(" ".join(passage.split())) if s.strip()]


def passage_subject(passage: str) -> str:
    """The passage's topic: the leading capitalised name of its first sentence, else 'this passage'."""
    m = SUBJECT_RE.match(passage.strip())
    return m.group(1) if m else "this passage"


def _with_article(subject: str) -> str:
    """'Delash River' -> 'the Delash River' (rivers, guilds, ranges read with 'the')."""
    if subject.split()[-1] in {"River", "Guild", "Range", "Sea"} and not subject.startswith("the "):
        return f"the {subject}"
    return subject


def generate_pairs(passage: str, count: int, temperature: float = 0.0, seed: int | None = None) -> list[dict]:
    """Up to `count` question/answer pairs from `passage`; answers are verbatim spans of it.

    Rule-matched pairs come first (in passage order), then cloze questions for other sentences.
    """
    subject = passage_subject(passage)
    ruled: list[dict] = []
    cloze: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for sentence in split_sentences(passage):
        matched = False
        for rule in RULES:
            m = rule.pattern.search(sentence)
            if not m:
                continue
            answer = m.group("a").strip()
            subj = m.groupdict().get("s") or subject
            if subj == answer or subj == "this passage":
                continue
            tpl = _pick(rule.questions, sentence, temperature, seed)
            question = tpl.format(s=_with_article(subj))
            question = question[0].upper() + question[1:]
            if (question, answer) not in seen and answer in passage:
                seen.add((question, answer))
                ruled.append({"question": question, "answer": answer})
                matched = True
            break
        if matched:
            continue
        for m in CLOZE_RE.finditer(sentence):
            answer = m.group("a")
            if answer == subject or len(answer) > 80:
                continue
            blanked = sentence[: m.start()] + "___" + sentence[m.end() :]
            about = (
                f"the passage about {_with_article(subject)}" if subject != "this passage" else "the passage"
            )
            tpl = _pick(
                ('In {a}, what fills the blank in: "{b}"?', 'According to {a}, what completes: "{b}"?'),
                sentence,
                temperature,
                seed,
            )
            question = tpl.format(a=about, b=blanked)
            if (question, answer) not in seen:
                seen.add((question, answer))
                cloze.append({"question": question, "answer": answer})
            break  # one cloze question per sentence
    return (ruled + cloze)[: max(count, 0)]


def answer(text: str, temperature: float, seed: int | None) -> dict:
    """The handler: {"pairs": [...]} for the passage and count tagged in the user message."""
    passage_m, count_m = PASSAGE_RE.search(text), COUNT_RE.search(text)
    if not (passage_m and count_m):
        return {"pairs": []}  # not the shape this handler reads: the honest empty answer
    return {"pairs": generate_pairs(passage_m.group(1), int(count_m.group(1)), temperature, seed)}
