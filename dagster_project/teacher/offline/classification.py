"""Offline handlers for classification-data prompts: SynthesizRR's task inversion and FewGen. Stand-ins.

Both read the tagged parts of the rendered prompt (`<label>`, `<cues>`, `<passage>`, `<example>` blocks
with `<text>`/`<dispatch>`) and write with fixed rules; they are weak on purpose and never claim LLM
quality.

- `task_inversion` (retrieval-augmented: rewrite a retrieved passage as an example of the target label):
  takes one fact sentence of the passage (chosen by a seeded hash) and frames it with the label's cue
  words; with in-context examples it prefers the cue words the examples use and copies an example's
  dateline-style opening ("Pekorka, Thawmonth 28:") when one has it, so k-shot output looks more like
  the seed set. A passage under 8 words is refused (`<<REFUSE>>`),
  as the prompt allows.
- `fewgen` (few-shot generation from the label alone): 0-shot, a handful of fixed templates over the cue
  words and an invented name (the low diversity FewGen is known for); with examples, it takes an example
  of the label and swaps its names for names of other examples.
"""

import hashlib
import re
from typing import Any

from dagster_project.teacher.offline import handler
from dagster_project.teacher.offline.grounded_qa import split_sentences

REFUSAL = "<<REFUSE>>"
_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")
_SYLLABLES = ["ka", "lor", "ven", "dra", "mi", "tos", "bel", "ur", "an", "ith", "gar", "sel", "mor", "quin"]
_FRAMES = (
    "{Cue} report: {sentence}",
    "News of the {cue}: {sentence}",
    "{sentence} The matter of the {cue} is expected to come up again soon.",
    "From the {cue} desk: {sentence}",
    "{sentence} Anyone who follows the {cue} and the {cue2} will want to know.",
    "This week in {cue} affairs: {sentence}",
)
_FEWGEN = (
    "The {cue} of {Name} made news again this week.",
    "{Name} spoke about the {cue} and the {cue2} on market day.",
    "A new {cue} was reported near {Name}.",
)


def _tag(text: str, name: str, last: bool = False) -> str:
    found = re.findall(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.S)
    return (found[-1] if last else found[0]) if found else ""


def _blocks(text: str) -> list[str]:
    return re.findall(r"<example>(.*?)</example>", text, re.S)


def _pick(options: list[Any] | tuple[Any, ...], *key: Any) -> Any:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _cues(text: str) -> list[str]:
    cues = [c.strip() for c in _tag(text, "cues").split(",") if c.strip()]
    return cues or [_tag(text, "label") or "news"]


def _strip_examples(text: str) -> str:
    return re.sub(r"<example>.*?</example>", "", text, flags=re.S)


@handler("task_inversion")
def task_inversion(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    target = _strip_examples(text)
    passage, label = _tag(target, "passage", last=True), _tag(target, "label")
    if len(passage.split()) < 8:
        return {"text": REFUSAL}
    sentences = [s for s in split_sentences(passage) if len(s.split()) >= 5] or [passage]
    sentence = _pick(sentences[:4], seed, temperature, passage, "sentence")
    cues = _cues(target)
    dispatches = [_tag(b, "dispatch") for b in _blocks(text)]
    used = [c for c in cues if any(c.lower() in d.lower() for d in dispatches)]
    if used:  # k-shot: prefer the cue words the examples actually use
        cues = used
    cue, cue2 = _pick(cues, seed, passage, "cue"), _pick(cues, seed, passage, "cue2")
    out = _pick(_FRAMES, seed, temperature, passage, label).format(
        Cue=cue.capitalize(), cue=cue, cue2=cue2, sentence=sentence
    )
    openings = [m.group(1) for d in dispatches if (m := re.match(r"([A-Z][^:]{2,40}):", d))]
    if openings:  # k-shot: write like the examples' datelines ("Pekorka, Thawmonth 28: ...")
        out = f"{_pick(openings, seed, passage)}: {sentence}"
        if cue.lower() not in out.lower():
            out += f" ({cue})"
    return {"text": out}


def _invented_name(*key: Any) -> str:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return "".join(_SYLLABLES[b % len(_SYLLABLES)] for b in digest[:3]).capitalize()


@handler("fewgen")
def fewgen(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    target = _strip_examples(text)
    label, cues = _tag(target, "label"), _cues(target)
    examples = [(_tag(b, "text"), _tag(b, "label")) for b in _blocks(text)]
    same = [t for t, lab in examples if lab == label and t]
    if same:
        base = _pick(same, seed, temperature, label)
        names = sorted({n for t, _ in examples for n in _NAME.findall(t)} - set(_NAME.findall(base)))
        if names:
            base = _NAME.sub(lambda m: _pick(names, seed, m.group(0)) if m.start() > 0 else m.group(0), base)
        return {"text": base}
    cue, cue2 = _pick(cues, seed, label, "cue"), _pick(cues, seed, label, "cue2")
    name = _invented_name(seed, label)
    return {"text": _pick(_FEWGEN, seed, label).format(cue=cue, cue2=cue2, Name=name)}
