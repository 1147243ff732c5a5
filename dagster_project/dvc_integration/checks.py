"""Asset checks declared in dvc.yaml: `meta.dagster.checks` of a stage, evaluated over its JSON outputs.

    meta:
      dagster:
        checks:
          - name: student_beats_baseline
            file: assets/eval_report/metrics.json
            assert: student.token_f1 > baseline.token_f1
            description: optional text
            severity: error            # error (default) | warn

The integration knows no domain: a check is a file and a boolean expression over JSON paths. The
expression language is tiny and safe (parsed here, never `eval`): dotted paths into the JSON
(`a.b.0.c`, a numeric part indexes a list), numbers, 'strings', true/false/null, arithmetic `+ - * /`,
comparisons `< <= > >= == !=`, `and`, `or`, `not` and parentheses. A missing file or path, a type
error or NaN fails the check and says why in its metadata.
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

__all__ = ["CheckDefinition", "CheckError", "check_definitions", "evaluate_assertion", "run_check"]


class CheckError(ValueError):
    """An assertion that does not parse, or that cannot be evaluated on the given JSON."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\))|(?P<path>[A-Za-z_][\w]*(?:\.\w+)*))"
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CheckError(f"cannot parse {text!r} at position {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "path" and value in _KEYWORDS:
            kind = "kw"
        tokens.append((kind, value))
        pos = m.end()
    return tokens


@dataclass
class _Parser:
    """Recursive descent over the tokens, evaluating as it goes against `data`; records paths read."""

    tokens: list[tuple[str, str]]
    data: Any
    read: dict[str, Any] = field(default_factory=dict)
    i: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise CheckError(f"expected {value or 'more input'}, got {tok[1] if tok else 'end'}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_expr()
        if self.peek() is not None:
            raise CheckError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return value

    def or_expr(self) -> Any:
        value = self.and_expr()
        while self.peek() == ("kw", "or"):
            self.take()
            right = self.and_expr()
            value = bool(value) or bool(right)
        return value

    def and_expr(self) -> Any:
        value = self.not_expr()
        while self.peek() == ("kw", "and"):
            self.take()
            right = self.not_expr()
            value = bool(value) and bool(right)
        return value

    def not_expr(self) -> Any:
        if self.peek() == ("kw", "not"):
            self.take()
            return not bool(self.not_expr())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.sum()
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ("<", "<=", ">", ">=", "==", "!="):
            self.take()
            right = self.sum()
            return _compare(tok[1], left, right)
        return left

    def sum(self) -> Any:
        value = self.term()
        while (tok := self.peek()) and tok[1] in ("+", "-") and tok[0] == "op":
            self.take()
            value = _arith(tok[1], value, self.term())
        return value

    def term(self) -> Any:
        value = self.atom()
        while (tok := self.peek()) and tok[1] in ("*", "/") and tok[0] == "op":
            self.take()
            value = _arith(tok[1], value, self.atom())
        return value

    def atom(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return float(value)
        if kind == "str":
            return value[1:-1]
        if kind == "kw":
            if value in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[value]
            raise CheckError(f"unexpected keyword {value!r}")
        if value == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if value == "-":
            return _arith("-", 0.0, self.atom())
        if kind == "path":
            resolved = _resolve(self.data, value)
            self.read[value] = resolved
            return resolved
        raise CheckError(f"unexpected {value!r}")


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise CheckError(f"{v!r} is not a number")
    return float(v)


def _arith(op: str, a: Any, b: Any) -> float:
    x, y = _number(a), _number(b)
    if op == "/" and y == 0:
        raise CheckError("division by zero")
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else math.nan}[op]


def _compare(op: str, a: Any, b: Any) -> bool:
    if op in ("==", "!="):
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            a, b = float(a), float(b)
        return (a == b) if op == "==" else (a != b)
    x, y = _number(a), _number(b)
    if math.isnan(x) or math.isnan(y):
        raise CheckError("comparison with NaN")
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def _resolve(data: Any, path: str) -> Any:
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise CheckError(f"path {path!r} not found (at {part!r})")
    return node


def evaluate_assertion(expression: str, data: Any) -> tuple[bool, dict[str, Any]]:
    """(truth of `expression` over the JSON `data`, the values of the paths it read). Raises CheckError."""
    parser = _Parser(_tokenize(expression), data)
    value = parser.parse()
    return bool(value), parser.read


@dataclass(frozen=True)
class CheckDefinition:
    """One `meta.dagster.checks` entry of a stage."""

    name: str
    file: str
    assertion: str
    description: str | None = None
    severity: str = "error"

    @classmethod
    def from_meta(cls, entry: Mapping[str, Any]) -> "CheckDefinition":
        missing = [k for k in ("name", "file", "assert") if not entry.get(k)]
        if missing:
            raise ValueError(f"meta.dagster.checks entry {dict(entry)!r} lacks {missing}")
        severity = str(entry.get("severity", "error")).lower()
        if severity not in ("error", "warn"):
            raise ValueError(f"check {entry['name']!r}: severity must be error or warn, not {severity!r}")
        _tokenize(str(entry["assert"]))  # fail early on a typo, when the definitions load
        return cls(
            name=str(entry["name"]),
            file=str(entry["file"]),
            assertion=str(entry["assert"]),
            description=entry.get("description"),
            severity=severity,
        )

    @property
    def dagster_severity(self) -> dg.AssetCheckSeverity:
        return dg.AssetCheckSeverity.WARN if self.severity == "warn" else dg.AssetCheckSeverity.ERROR


def check_definitions(dagster_meta: Mapping[str, Any]) -> list[CheckDefinition]:
    """The checks declared in a stage's `meta.dagster` block (none when absent)."""
    return [CheckDefinition.from_meta(e) for e in dagster_meta.get("checks") or []]


def run_check(root: Path, check: CheckDefinition) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata) of one check against the file as it is now under `root`."""
    meta: dict[str, Any] = {"assert": check.assertion, "file": check.file}
    path = root / check.file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        passed, values = evaluate_assertion(check.assertion, data)
    except (OSError, json.JSONDecodeError, CheckError) as exc:
        return False, meta | {"error": f"{type(exc).__name__}: {exc}"}
    for k, v in values.items():
        if isinstance(v, bool) or v is None or isinstance(v, str):
            meta[k] = str(v)
        elif isinstance(v, int | float):
            meta[k] = dg.MetadataValue.float(float(v))
        else:
            meta[k] = dg.MetadataValue.json(v)
    return passed, meta


def check_specs(asset_key: dg.AssetKey, checks: list[CheckDefinition]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            c.name, asset=asset_key, description=c.description or f"`{c.assertion}` in {c.file}"
        )
        for c in checks
    ]


def _evaluate(root: Path, asset_key: dg.AssetKey, checks: list[CheckDefinition], event_type: type) -> list:
    events = []
    for c in checks:
        passed, meta = run_check(root, c)
        events.append(
            event_type(
                asset_key=asset_key,
                check_name=c.name,
                passed=passed,
                metadata=meta,
                severity=c.dagster_severity,
            )
        )
    return events


def check_results(
    root: Path, asset_key: dg.AssetKey, checks: list[CheckDefinition]
) -> list[dg.AssetCheckResult]:
    """One AssetCheckResult per check (yielded by the asset after its materialization)."""
    return _evaluate(root, asset_key, checks, dg.AssetCheckResult)


def check_evaluations(
    root: Path, asset_key: dg.AssetKey, checks: list[CheckDefinition]
) -> list[dg.AssetCheckEvaluation]:
    """The same checks as evaluation events, for runless (sensor-reconciled) materializations."""
    return _evaluate(root, asset_key, checks, dg.AssetCheckEvaluation)
