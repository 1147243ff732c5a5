"""Check a teacher answer: extract its JSON leniently, validate it against the prompt's schema, and say
why it was rejected when it was.

Reasons: ``truncated`` (finish_reason ``length``), ``html_body`` (an HTML page, e.g. a proxy error),
``refusal`` ("I can't ...", "As an AI ..."), ``malformed_json``, ``schema: <message>``. The SDK hands
all of these back as successes, so every answer goes through here. JSON is read leniently
(`teacher/lenient_json.py`); `teacher.mapping` counts the repairs each accepted answer needed.
"""

import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from dagster_project.teacher.lenient_json import parse_lenient

_HTML = re.compile(r"^\s*(<!doctype\s+html|<html[\s>])|<body[\s>]|</html>", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(i\s+can(?:no|')t|i\s+cannot|i\s+am\s+(?:not\s+able|unable)|i'm\s+(?:not\s+able|unable|sorry)|"
    r"as\s+an\s+ai\b|i\s+won't|i\s+will\s+not)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one answer: `value` when ok, else the `reason` it was rejected."""

    ok: bool
    value: Any = None
    reason: str | None = None

    @property
    def kind(self) -> str | None:
        """The reason without its detail ("schema: 'x' is required" -> "schema"), for counters."""
        return None if self.reason is None else self.reason.split(":", 1)[0]


def extract_json(text: str) -> Any:
    """Parse JSON from a model answer with the lenient parser (`teacher/lenient_json.py`: code fences,
    prose around the object, trailing commas, raw line breaks in strings). Raises ValueError."""
    return parse_lenient(text).value


def _schema_message(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"schema: {where}: {error.message}"[:300]


def validate_answer(
    content: str | None, schema: dict[str, Any] | None, finish_reason: str | None = "stop"
) -> Verdict:
    """Check one answer against `schema` (None: any JSON object) and classify a reject."""
    text = content or ""
    if finish_reason == "length":
        return Verdict(False, reason="truncated")
    if _HTML.search(text[:2000]):
        return Verdict(False, reason="html_body")
    try:
        value = extract_json(text)
    except ValueError:
        # Only an answer without usable JSON counts as a refusal: a valid answer may quote "I cannot".
        if _REFUSAL.search(text[:500]):
            return Verdict(False, reason="refusal")
        return Verdict(False, reason="malformed_json")
    if schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
        )
        if error is not None:
            return Verdict(False, reason=_schema_message(error))
    return Verdict(True, value=value)
