"""Offline handlers for ReBase-style prompts: transform a retrieved row, synthesize from examples alone,
and judge whether an example fits the task. Rule-based stand-ins, weak on purpose, never LLM quality.

Each handler reads the tagged parts of the rendered prompt: `<directions>`, `<example>` blocks with
`<input>`/`<output>`, `<dataset>`, `<row>` (the retrieved row as a JSON object of column -> value), and
`<candidate_input>`/`<candidate_output>` for the judge. The task's FORMAT is inferred from its examples,
never from a task name:

- extractive: example inputs read "Context: ... Question: ..." and outputs are spans of the context;
- label: every example output is one word (the label set is the examples' outputs) and inputs are
  "<Field>: ... <Field>: ..." (e.g. Premise/Hypothesis);
- reasoning: example outputs end with "Answer: <value>" after a calculation "a + b = c.".

`rebase_transform` maps the row into that format with fixed rules (a question/context/answer row is
reused; a passage gets a wh-question from a few English patterns, or a cloze question; a pair of
statements with a label value becomes a labelled pair; a word problem with a `#### n` solution or a row
of numbers where one is the sum/difference/product of two others becomes a calculation) and refuses
(`<<REFUSE>>`) a row it cannot map. `task_synthesis` copies one example and changes its surface (names
and numbers, recomputing a calculation): the low diversity of generation from examples alone.
`fits_task` answers yes/no by format checks (a wh- or yes/no question whose answer is a short span of the
context; a label of the set, a hypothesis that does not merely repeat the premise and, for entailment,
whose words are mostly in the premise; a calculation that is right and ends in its result).
"""

import hashlib
import json
import re
from typing import Any

from dagster_project.teacher.offline import handler
from dagster_project.teacher.offline.grounded_qa import split_sentences

REFUSE = {"input": "<<REFUSE>>", "output": ""}
_SYLLABLES = ["ka", "lor", "ven", "dra", "mi", "tos", "bel", "ur", "an", "ith", "gar", "sel", "mor", "quin"]
_CALC = re.compile(r"(-?\d+)\s*([+\-*x×/])\s*(-?\d+)\s*=\s*(-?\d+)")
_FINAL = re.compile(r"Answer:\s*(\S+?)\.?\s*$")
_NAME = re.compile(r"\b[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})?\b")
_FIELDS = re.compile(r"(?:^|\s)([A-Z][a-z]+):\s")
_WH = re.compile(
    r"(who|whom|whose|what|when|where|which|why|how|in what|on which|in which|is|are|was|were|"
    r"do|does|did|can)\b",
    re.IGNORECASE,
)
_STOP = {"the", "a", "an", "of", "and", "its", "it", "is", "was", "to", "in", "on", "by", "for", "with"}
_NOT_NAMES = {
    "Context",
    "Question",
    "Premise",
    "Hypothesis",
    "Answer",
    "The",
    "Its",
    "Most",
    "Founded",
    "Traders",
    "How",
    "What",
    "Who",
    "Which",
    "In",
    "On",
}


def _tag(text: str, name: str) -> str:
    found = re.findall(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.S)
    return found[-1] if found else ""


def _examples(text: str) -> list[tuple[str, str]]:
    blocks = re.findall(r"<example>(.*?)</example>", text, re.S)
    return [(_tag(b, "input"), _tag(b, "output")) for b in blocks]


def _pick(options: list[Any] | tuple[Any, ...], *key: Any) -> Any:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _number(*key: Any, low: int = 2, high: int = 60) -> int:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


def _name(*key: Any) -> str:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return "".join(_SYLLABLES[b % len(_SYLLABLES)] for b in digest[: 2 + digest[5] % 2]).capitalize()


def task_format(examples: list[tuple[str, str]]) -> str:
    """extractive | label | reasoning | unknown, from the examples' shape (see the module doc)."""
    if not examples:
        return "unknown"
    if all(_FINAL.search(o) and _CALC.search(o) for _, o in examples):
        return "reasoning"
    if all("Context:" in i and "Question:" in i and o and o in i for i, o in examples):
        return "extractive"
    if all(len(o.split()) == 1 and len(_FIELDS.findall(i)) >= 2 for i, o in examples):
        return "label"
    return "unknown"


def _fields(examples: list[tuple[str, str]]) -> list[str]:
    return _FIELDS.findall(examples[0][0])[:2]


def _calc(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


# ------------------------------------------------------------------------------------------- transform


def _texts(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in row.items() if isinstance(v, str) and not re.fullmatch(r"-?[\d.,]+", v)]


def _wh_question(passage: str, seed: Any) -> tuple[str, str] | None:
    """A wh-question about a passage and its answer span, from a few English patterns; else a cloze."""
    names = [n for n in _NAME.findall(passage) if n.split()[0] not in _NOT_NAMES]
    subject = names[0] if names else None
    rules = []
    if subject:
        if m := re.search(r"by ([A-Z][a-z]+ [A-Z][a-z]+)|([A-Z][a-z]+ [A-Z][a-z]+) founded", passage):
            rules.append((f"Who founded {subject}?", m.group(1) or m.group(2)))
        if m := re.search(r"\b(1\d{3})\b", passage):
            rules.append((f"In what year was {subject} founded?", m.group(1)))
        if m := re.search(r"on the ([A-Z][a-z]+ River)", passage):
            rules.append((f"On which river does {subject} lie?", m.group(1)))
        if m := re.search(r"ships carry (\w+)", passage):
            rules.append((f"What do the ships of {subject} carry?", m.group(1)))
    if rules:
        return _pick(rules, seed, passage)
    sentences = [s for s in split_sentences(passage) if _NAME.search(s)]
    if not sentences:
        return None
    sentence = _pick(sentences, seed, "cloze")
    answer = _pick(_NAME.findall(sentence), seed, sentence)
    return sentence.replace(answer, "what", 1).rstrip(".") + "?", answer


def _transform_extractive(row: dict[str, Any], seed: Any) -> dict[str, str]:
    texts = _texts(row)
    question = next((v for _, v in texts if v.endswith("?")), None)
    long = sorted((v for _, v in texts if len(v.split()) >= 12), key=len, reverse=True)
    if question and long:
        context = long[0]
        answer = next((v for _, v in texts if v not in (question, context) and v in context), None)
        if answer:
            return {"input": f"Context: {context} Question: {question}", "output": answer, "answer": answer}
    if long:
        qa = _wh_question(long[0], seed)
        if qa:
            return {"input": f"Context: {long[0]} Question: {qa[0]}", "output": qa[1], "answer": qa[1]}
    return REFUSE


def _contradict(sentence: str, seed: Any) -> str:
    if m := re.search(r"\b(\d{3,4})\b", sentence):
        return sentence.replace(m.group(1), str(int(m.group(1)) + _number(seed, sentence, low=3, high=90)), 1)
    return re.sub(r"\b(is|was|are|were)\b", r"\1 not", sentence, count=1)


def _transform_label(row: dict[str, Any], examples: list[tuple[str, str]], seed: Any) -> dict[str, str]:
    labels = sorted({o for _, o in examples})
    fields = _fields(examples)
    texts = [(k, v) for k, v in _texts(row) if len(v.split()) >= 3]
    label = next((str(v) for v in row.values() if str(v) in labels), None)
    if len(texts) >= 2 and label:
        a, b = texts[0][1], texts[1][1]
        return {"input": f"{fields[0]}: {a} {fields[1]}: {b}", "output": label, "answer": label}
    passages = [v for _, v in texts if len(split_sentences(v)) >= 1 and len(v.split()) >= 8]
    if not passages:
        return REFUSE
    sentences = split_sentences(passages[0])
    premise = sentences[0]
    label = _pick(labels, seed, premise)
    names = [n for n in _NAME.findall(premise) if n.split()[0] not in _NOT_NAMES] or ["It"]
    if label == "entailment":
        hypothesis = re.split(r",| and ", premise)[0].rstrip(".") + "."
    elif label == "contradiction":
        hypothesis = _contradict(premise, seed)
    else:
        hypothesis = f"{names[0]} is {_pick(_UNKNOWABLE, seed, premise)}."
    return {"input": f"{fields[0]}: {premise} {fields[1]}: {hypothesis}", "output": label, "answer": label}


_UNKNOWABLE = ["famous for its festivals", "older than its neighbours", "visited by many travellers"]
_VERBS = {"add": "+", "plus": "+", "sum": "+", "subtract": "-", "minus": "-", "multiply": "*", "times": "*"}


def _transform_reasoning(row: dict[str, Any], seed: Any) -> dict[str, str]:
    texts = _texts(row)
    problem = next((v for _, v in texts if v.rstrip().endswith("?") and re.search(r"\d", v)), None)
    solution = next((v for _, v in texts if re.search(r"####\s*-?\d", v)), None)
    if problem and solution:
        nums = [int(n) for n in re.findall(r"\b\d+\b", problem)][:2]
        final = int(re.search(r"####\s*(-?\d+)", solution).group(1))  # type: ignore[union-attr]
        op = next((s for w, s in _VERBS.items() if w in solution.lower()), None)
        if len(nums) == 2 and op and _calc(nums[0], op, nums[1]) == final:
            out = f"{nums[0]} {op} {nums[1]} = {final}. Answer: {final}"
            return {"input": problem, "output": out, "answer": str(final)}
        return REFUSE
    numbers = {k: int(v) for k, v in row.items() if re.fullmatch(r"-?\d+", str(v))}
    thing = next((v for _, v in texts), "items")
    keys = list(numbers)
    for i, x in enumerate(keys):
        for y in keys[i + 1 :]:
            for z in keys:
                if z in (x, y):
                    continue
                for op, word in (("*", "each"), ("+", "more")):
                    if _calc(numbers[x], op, numbers[y]) != numbers[z]:
                        continue
                    a, b, c = numbers[x], numbers[y], numbers[z]
                    who = _name(seed, json.dumps(row, sort_keys=True))
                    if op == "*":
                        problem = (
                            f"{who} buys {b} {thing} at {a} coins {word}. How many coins does {who} pay?"
                        )
                        calc = f"{b} * {a} = {c}"
                    else:
                        problem = f"{who} has {a} {thing} and gets {b} {word}. How many {thing} is that?"
                        calc = f"{a} + {b} = {c}"
                    return {"input": problem, "output": f"{calc}. Answer: {c}", "answer": str(c)}
    return REFUSE


@handler("rebase_transform")
def rebase_transform(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    examples = _examples(text)
    try:
        row = json.loads(_tag(text, "row"))
    except json.JSONDecodeError:
        return REFUSE
    if not isinstance(row, dict):
        return REFUSE
    key = (seed, temperature, _tag(text, "dataset"))
    kind = task_format(examples)
    if kind == "extractive":
        return _transform_extractive(row, key)
    if kind == "label":
        return _transform_label(row, examples, key)
    if kind == "reasoning":
        return _transform_reasoning(row, key)
    return REFUSE


# ------------------------------------------------------------------------------- synthesis from examples


def _swap_surface(text: str, names: dict[str, str], numbers: dict[str, str]) -> str:
    text = re.sub(r"\b\d+\b", lambda m: numbers.get(m.group(0), m.group(0)), text)
    return _NAME.sub(lambda m: names.get(m.group(0), m.group(0)), text)


@handler("task_synthesis")
def task_synthesis(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    examples = _examples(text)
    kind = task_format(examples)
    if not examples:
        return REFUSE
    source_in, source_out = _pick(examples, seed, temperature, "example")
    if kind == "reasoning":
        m = _CALC.search(source_out)
        assert m is not None
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        if op == "-":
            a2 = _number(seed, "a", low=20, high=90)
            b2 = _number(seed, "b", low=2, high=a2 - 1)
        elif op == "*":
            a2, b2 = _number(seed, "a", low=2, high=9), _number(seed, "b", low=2, high=12)
        else:
            a2, b2 = _number(seed, "a", low=2, high=60), _number(seed, "b", low=2, high=40)
        c2 = _calc(a2, op, b2)
        names = {n: _name(seed, n) for n in _NAME.findall(source_in) if n.split()[0] not in _NOT_NAMES}
        new_in = _swap_surface(source_in, names, {str(a): str(a2), str(b): str(b2)})
        return {"input": new_in, "output": f"{a2} {op} {b2} = {c2}. Answer: {c2}", "answer": str(c2)}
    names = {
        n: " ".join(_name(seed, part) for part in n.split())
        for n in _NAME.findall(source_in)
        if n.split()[0] not in _NOT_NAMES
    }
    numbers = {
        n: str(int(n) + _number(seed, n, low=-40, high=40)) for n in re.findall(r"\b\d{3,4}\b", source_in)
    }
    new_in = _swap_surface(source_in, names, numbers)
    new_out = source_out if kind == "label" else _swap_surface(source_out, names, numbers)
    return {"input": new_in, "output": new_out, "answer": new_out}


# ---------------------------------------------------------------------------------------------- judge


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def judge_example(
    kind: str, examples: list[tuple[str, str]], given_in: str, given_out: str
) -> tuple[bool, str]:
    """(fits, why) by the format checks of the module doc."""
    if kind == "extractive":
        m = re.match(r"Context:\s*(.*?)\s*Question:\s*(.*)$", given_in, re.S)
        if not m:
            return False, "input is not 'Context: ... Question: ...'"
        question = m.group(2).strip()
        if not question.endswith("?") or not _WH.match(question):
            return False, "the question is not a wh- or yes/no question"
        if not given_out or given_out not in m.group(1):
            return False, "the answer is not a span of the context"
        if len(given_out.split()) > 8:
            return False, "the answer span is too long"
        return True, "answer is a span of the context"
    if kind == "label":
        labels = {o for _, o in examples}
        if given_out.strip().lower() not in labels:
            return False, f"output is not one of {sorted(labels)}"
        fields = _fields(examples)
        parts = re.split(rf"\s*(?:{'|'.join(fields)}):\s*", given_in)
        if len(fields) < 2 or len(parts) != 3:
            return False, f"input is not '{': ... '.join(fields)}: ...'"
        premise, hypothesis = parts[1], parts[2]
        if _content_words(hypothesis) == _content_words(premise):
            return False, "the hypothesis only repeats the premise"
        if given_out.strip().lower() == "entailment":
            words = _content_words(hypothesis)
            if words and len(words & _content_words(premise)) / len(words) < 0.6:
                return False, "entailment, but the hypothesis is mostly not in the premise"
        return True, "a labelled pair of the task's format"
    if kind == "reasoning":
        final = _FINAL.search(given_out)
        calcs = _CALC.findall(given_out)
        if not final or not calcs:
            return False, "no calculation ending in 'Answer: <value>'"
        for a, op, b, c in calcs:
            if op in "+-*" and _calc(int(a), op, int(b)) != int(c):
                return False, f"wrong calculation {a} {op} {b} = {c}"
        if final.group(1) != calcs[-1][3]:
            return False, "the final answer is not the calculation's result"
        numbers = set(re.findall(r"\b\d+\b", given_in))
        if not {calcs[0][0], calcs[0][2]} <= numbers:
            return False, "the calculation uses numbers that are not in the problem"
        return True, "a correct calculation and final answer"
    return False, "the task's format is not recognised"


@handler("fits_task")
def fits_task(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    examples = _examples(text)
    ok, why = judge_example(
        task_format(examples), examples, _tag(text, "candidate_input"), _tag(text, "candidate_output")
    )
    return {"verdict": "yes" if ok else "no", "reason": why}
