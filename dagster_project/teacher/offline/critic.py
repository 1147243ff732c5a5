"""Offline handlers for the critic recipe: a humorous paraphrase and a pairwise critic. Stand-ins.

- `humor_paraphrase`: reads the sentence (`<sentence>...</sentence>`) and keeps it whole, adding a
  humorous turn by rule. At temperature 0 it gives its best: a comparison and an exaggeration ("The bus
  was late on Monday, like a sulking cat, and the whole town noticed."). Sampled (temperature > 0, a
  seed per request), it picks one of five forms with fixed odds: comparison and exaggeration (10%), a
  comparison (20%), an exaggeration (20%), a flat laugh-begging tag ("Funny, right?", 30%) or a
  rambling filler frame ("So, um, basically ..., you know.", 20%). Several samples per sentence are
  therefore of mixed quality, as a real teacher's are.
- `pairwise_critic`: a multiple-choice critic of two paraphrases (`<option_a>`, `<option_b>`) of one
  sentence. Its stated, deterministic preference is `humor_score` below: +2 when every content word
  (4+ letters) of the sentence is kept (+1 for 60% or more), +1 for a comparison ("like a", "as if"),
  +1 for an exaggeration ("whole", "entire", "forever", "hundredth", "every single"), -1 for
  laugh-begging ("funny, right", "lol", "haha", "get it"), -1 for filler ("um", "basically", "you
  know"), -1 for rambling (a word three-gram said twice), -1 past 28 words. The higher score wins.
  **Planted position bias:** on equal scores it always answers "A", the option shown first, as an LLM
  judge unsure of itself often does; asked in both orders such a verdict contradicts itself, which is
  what the critique stage's swap filter catches.

Neither is a language model: the rules are what an honest offline run can do, and say so.
"""

import random
import re
from typing import Any

from dagster_project.teacher.offline import handler

_TAG = {
    name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.S) for name in ("sentence", "option_a", "option_b")
}
_WORD = re.compile(r"[A-Za-z']+")

COMPARISONS = (
    "like a sulking cat",
    "like a diva on strike",
    "like a toddler at bedtime",
    "like a sleepy sloth",
    "as if it held a grudge",
    "as if it were on holiday",
)
EXAGGERATIONS = (
    "and the whole town noticed",
    "for what felt like forever",
    "for the hundredth time",
    "and the entire street gasped",
)
LAUGH_TAGS = ("Funny, right?", "lol.", "haha.", "Get it?")
FORMS = ("both", "comparison", "exaggeration", "flat", "filler")
FORM_ODDS = (0.10, 0.20, 0.20, 0.30, 0.20)

_COMPARISON_RE = re.compile(r"\b(like a|like an|as if)\b", re.I)
_EXAGGERATION_RE = re.compile(r"\b(whole|entire|forever|hundredth|every single)\b", re.I)
_LAUGH_RE = re.compile(r"(funny, right|\blol\b|\bhaha\b|\bget it\b)", re.I)
_FILLER_RE = re.compile(r"\b(um|basically|you know)\b", re.I)
MAX_WORDS = 28


def _tag(text: str, name: str) -> str:
    m = _TAG[name].search(text)
    return m.group(1).strip() if m else ""


def paraphrase(sentence: str, form: str, rng: random.Random) -> str:
    """One humorous paraphrase of `sentence` in `form` (one of FORMS), its phrases drawn from `rng`."""
    core = " ".join(sentence.split()).rstrip(".!?")
    if form == "both":
        return f"{core}, {rng.choice(COMPARISONS)}, {rng.choice(EXAGGERATIONS)}."
    if form == "comparison":
        return f"{core}, {rng.choice(COMPARISONS)}."
    if form == "exaggeration":
        return f"{core}, {rng.choice(EXAGGERATIONS)}."
    if form == "flat":
        return f"{core}. {rng.choice(LAUGH_TAGS)}"
    if form == "filler":
        return f"So, um, basically {core[:1].lower() + core[1:]}, you know."
    raise ValueError(f"unknown form {form!r}; one of {FORMS}")


@handler("humor_paraphrase")
def humor_paraphrase(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    sentence = _tag(text, "sentence")
    if not sentence:
        return {"paraphrase": ""}
    rng = random.Random(f"{sentence}\x1f{seed}")
    form = "both" if temperature == 0 else rng.choices(FORMS, weights=FORM_ODDS)[0]
    return {"paraphrase": paraphrase(sentence, form, rng)}


def _content_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if len(w) >= 4]


def humor_score(sentence: str, candidate: str) -> tuple[int, list[str]]:
    """The critic's score of one paraphrase of `sentence` and the rules that gave it (module doc)."""
    wanted = set(_content_words(sentence))
    kept = wanted & set(_content_words(candidate))
    share = len(kept) / len(wanted) if wanted else 1.0
    score, why = 0, []
    if share == 1.0:
        score, why = 2, ["keeps the whole sentence"]
    elif share >= 0.6:
        score, why = 1, [f"keeps {share:.0%} of the sentence"]
    else:
        why = [f"loses the sentence (keeps {share:.0%})"]
    for pattern, delta, rule in (
        (_COMPARISON_RE, 1, "a comparison"),
        (_EXAGGERATION_RE, 1, "an exaggeration"),
        (_LAUGH_RE, -1, "begs for a laugh"),
        (_FILLER_RE, -1, "filler words"),
    ):
        if pattern.search(candidate):
            score += delta
            why.append(rule)
    words = [w.lower() for w in _WORD.findall(candidate)]
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(grams) != len(set(grams)):
        score -= 1
        why.append("repeats itself")
    if len(candidate.split()) > MAX_WORDS:
        score -= 1
        why.append(f"over {MAX_WORDS} words")
    return score, why


def critic_choice(sentence: str, option_a: str, option_b: str) -> tuple[str, str]:
    """("A" or "B", reason): the higher `humor_score` wins; a tie goes to A (the planted position bias)."""
    (score_a, why_a), (score_b, why_b) = humor_score(sentence, option_a), humor_score(sentence, option_b)
    if score_a == score_b:
        return "A", f"both score {score_a}; the first one reads better to me"
    winner, why = ("A", why_a) if score_a > score_b else ("B", why_b)
    return winner, f"{winner} scores {max(score_a, score_b)} vs {min(score_a, score_b)}: {', '.join(why)}"


@handler("pairwise_critic")
def pairwise_critic(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    choice, reason = critic_choice(_tag(text, "sentence"), _tag(text, "option_a"), _tag(text, "option_b"))
    return {"choice": choice, "reason": reason}
