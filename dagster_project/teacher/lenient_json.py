"""A lenient JSON parser for model answers: repair the usual slips, name every repair, reject the rest.

    parsed = parse_lenient('Sure! ```json\\n{"input": "x", "output": "y",}\\n``` Hope it helps.')
    parsed.value    # {"input": "x", "output": "y"}
    parsed.repairs  # ("code_fence", "prose_around", "trailing_comma")

Models asked for "JSON only" still wrap it in a Markdown fence, put a sentence before or after it, leave
a comma before a closing bracket, or break a line inside a string (a chain of thought often does). Each
of these is repaired, and the repair is named so callers can count how often an answer needed one:

- `code_fence`: the JSON sits inside a ```json ... ``` fence;
- `prose_around`: text before or after the first complete JSON object (found by bracket matching that
  respects strings, not by the first `{` and the last `}`);
- `trailing_comma`: a comma right before `}` or `]` (outside strings);
- `raw_newline_in_string`: a literal line break or tab inside a string, escaped.

Anything else is rejected with `LenientJSONError` and a reason (`no_json_object`, `unbalanced` when the
object never closes, e.g. a truncated answer, `invalid_json: ...` when the repaired text still does not
parse). Single quotes, comments and unquoted keys are NOT repaired: they are rare in answers of models
that were asked for JSON, and guessing there risks changing what the model said.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

REPAIRS = ("code_fence", "prose_around", "trailing_comma", "raw_newline_in_string")
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)


class LenientJSONError(ValueError):
    """No JSON object could be recovered; `reason` says why (for reject counters)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Parsed:
    """A parsed answer and the repairs it needed (empty for clean JSON)."""

    value: Any
    repairs: tuple[str, ...] = ()


def _balanced_object(text: str) -> tuple[int, int] | None:
    """(start, end) of the first complete top-level {...} in `text`, bracket-matched outside strings;
    None when no `{` opens one; (start, -1) when it never closes."""
    start = text.find("{")
    if start == -1:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return start, i + 1
    return start, -1


def _outside_strings(text: str) -> tuple[str, bool, bool]:
    """`text` with trailing commas dropped and raw line breaks inside strings escaped; and whether each
    repair happened."""
    out: list[str] = []
    in_string, escaped = False, False
    trailing, newline = False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            elif ch in "\n\r\t":
                out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
                newline = True
                continue
            out.append(ch)
            continue
        if ch == '"':
            in_string = True
        elif ch == ",":
            rest = text[i + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                trailing = True
                continue
        out.append(ch)
    return "".join(out), trailing, newline


def parse_lenient(text: str) -> Parsed:
    """Parse the JSON object in a model answer, repairing the slips the module doc lists.

    Clean JSON (any JSON value) parses with no repairs. Raises `LenientJSONError` with a reason.
    """
    text = text or ""
    try:
        return Parsed(json.loads(text))
    except json.JSONDecodeError:
        pass
    repairs: list[str] = []
    fence = _FENCE.search(text)
    if fence:
        repairs.append("code_fence")
        if text[: fence.start()].strip() or text[fence.end() :].strip():
            repairs.append("prose_around")
        text = fence.group(1)
        try:
            return Parsed(json.loads(text), tuple(repairs))
        except json.JSONDecodeError:
            pass
    span = _balanced_object(text)
    if span is None:
        raise LenientJSONError("no_json_object")
    start, end = span
    if end == -1:
        raise LenientJSONError("unbalanced")
    if (text[:start].strip() or text[end:].strip()) and "prose_around" not in repairs:
        repairs.append("prose_around")
    body, trailing, newline = _outside_strings(text[start:end])
    if trailing:
        repairs.append("trailing_comma")
    if newline:
        repairs.append("raw_newline_in_string")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise LenientJSONError(f"invalid_json: {exc.msg}") from None
    return Parsed(value, tuple(r for r in REPAIRS if r in repairs))


def repairs_of(text: str) -> tuple[str, ...]:
    """The repairs `text` needs to parse (empty when clean or when it cannot be parsed at all)."""
    try:
        return parse_lenient(text).repairs
    except LenientJSONError:
        return ()
