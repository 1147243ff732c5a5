"""Offline handlers for the reflections recipe: a reflective-listening response and its judge. Stand-ins.

- `reflection`: reads the client's words (`<utterance>...</utterance>`) and reflects them by rule: first
  person becomes second person; an utterance with "but" becomes a complex, two-sided reflection ("Part of
  you ..., and part of you ..."); "I'm X because ..." links the feeling to its cause (complex); anything
  else is restated after "It sounds like", with the feeling it names ("... and I feel X") (simple).
- `judge_reflection`: reads the utterance and the reflection to judge (`<reflection>...</reflection>`).
  Acceptable when the reflection is a statement (no question mark), gives no advice ("you should",
  "try to", ...), is not a copy of the client's first-person words, has 5-45 words, does not repeat a
  four-word sequence, shares at least two content words (4+ letters) with the utterance, and is
  faithful: at least 60% of its own content words (beyond the scaffolding "it sounds like", "part of
  you", "you're feeling ... because") are the client's. Type: complex when it links two ideas ("part of
  you", "because", "even though", "and yet", "while"), else simple. Its reason names the deciding rule.

Neither is a language model: the rules are what an honest offline run can do, and say so.
"""

import re
from typing import Any

from dagster_project.teacher.offline import handler

_TAG = {name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.S) for name in ("utterance", "reflection")}
_WORD = re.compile(r"[A-Za-z']+")
_SECOND_PERSON = {
    "i": "you",
    "i'm": "you're",
    "i've": "you've",
    "i'll": "you'll",
    "i'd": "you'd",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
}
_AFTER_I = {"am": "are", "was": "were"}  # "I was" -> "you were"; "the baby was" stays
_ADVICE = re.compile(
    r"(^|[.!] )(you should|try |have you (considered|thought)|why don't you|you need to|you must|maybe you)",
    re.I,
)
_LINKS = ("part of you", "because", "even though", "and yet", "while ", "on the one hand")
_FEELING = re.compile(r"\bI feel ([a-z' ]+?)[.!]?$|^(?:Honestly, )?I'm ([a-z' ]+?) because (.+?)[.!]?$", re.I)


def _tag(text: str, name: str) -> str:
    m = _TAG[name].search(text)
    return m.group(1).strip() if m else ""


def second_person(text: str) -> str:
    """First person becomes second person, word by word ("I was" -> "you were", "my" -> "your")."""
    out: list[str] = []
    previous = ""
    for word in text.split():
        core = word.rstrip(".,!?")
        swapped = _SECOND_PERSON.get(core.lower()) or (
            _AFTER_I.get(core.lower()) if previous == "i" else None
        )
        out.append((swapped if swapped else core) + word[len(core) :])
        previous = core.lower()
    return " ".join(out)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != "I " and text[:2] != "I'" else text


def reflect(utterance: str) -> tuple[str, str]:
    """(reflection, type) of one client utterance by the rules in the module doc."""
    text = " ".join(utterance.split()).rstrip(".!")
    if not text:
        return "", "simple"
    if ", but " in text:
        first, second = text.split(", but ", 1)
        return (
            f"Part of you knows {second_person(_lower_first(first))}, and part of you feels "
            f"{second_person(second)}.",
            "complex",
        )
    m = _FEELING.search(text)
    if m and m.group(1):
        situation = text[: m.start()].rstrip(" ,").removesuffix(" and")
        return (
            f"It sounds like {second_person(_lower_first(situation))}, and you feel {m.group(1)}.",
            "simple",
        )
    if m and m.group(2):
        return f"You're feeling {m.group(2)} because {second_person(m.group(3))}.", "complex"
    return f"It sounds like {second_person(_lower_first(text))}.", "simple"


@handler("reflection")
def reflection(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    utterance = _tag(text, "utterance")
    if not utterance:
        return {"reflection": "", "type": "simple"}
    value, kind = reflect(utterance)
    return {"reflection": value, "type": kind}


# The words a reflection is built with, which need not come from the client.
_SCAFFOLD = {
    "sounds",
    "like",
    "feeling",
    "feel",
    "feels",
    "part",
    "knows",
    "know",
    "because",
    "your",
    "you're",
    "you've",
    "you'll",
    "yourself",
    "that",
    "this",
    "with",
    "about",
    "what",
    "things",
    "really",
}


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 4}


def _repeats(text: str, n: int = 4) -> bool:
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def judge(utterance: str, candidate: str) -> tuple[bool, str, str]:
    """(acceptable, type, reason) of one reflection by the rules in the module doc."""
    low = f" {candidate.lower()} "
    kind = "complex" if any(link in low for link in _LINKS) else "simple"
    n_words = len(candidate.split())
    if "?" in candidate:
        return False, kind, "a question, not a reflection"
    if _ADVICE.search(candidate.strip()):
        return False, kind, "gives advice"
    if re.search(r"\b(i|i'm|i've|my)\b", candidate.lower()):
        return False, kind, "repeats the client's first-person words"
    if not 5 <= n_words <= 45:
        return False, kind, f"{n_words} words (5-45 expected)"
    if _repeats(candidate):
        return False, kind, "repeats itself"
    said = _content_words(utterance) | _content_words(second_person(utterance))
    own = _content_words(candidate) - _SCAFFOLD
    shared = own & said
    if len(shared) < 2:
        return False, kind, f"shares {len(shared)} content words with the client's words (2 needed)"
    if len(shared) < 0.6 * len(own):
        invented = ", ".join(sorted(own - said)[:3])
        return False, kind, f"not faithful: words the client did not say ({invented})"
    return True, kind, f"restates the client's words ({len(shared)} shared content words)"


@handler("judge_reflection")
def judge_reflection(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    acceptable, kind, reason = judge(_tag(text, "utterance"), _tag(text, "reflection"))
    return {"acceptable": acceptable, "type": kind, "reason": reason}
