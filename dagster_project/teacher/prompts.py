"""Teacher prompt files: YAML with Jinja2 message templates and a JSON schema for the answer.

A prompt file holds ``name`` (required: the offline teacher's handler is keyed by it), ``description``,
``sampling`` (``max_tokens``, ...), ``messages`` (a list of ``{role, content}`` where content is a
Jinja2 template), ``output_schema`` and an optional ``output`` block that says how an answer becomes rows
and what each row must satisfy (see `OutputSpec`; applied by `teacher.mapping.map_prompt`):

    output:
      explode: pairs            # the answer's list whose items become rows (omit: the answer is one row)
      checks:
        - {check: span, column: answer, of: passage}   # a verbatim span (up to whitespace) of variable/column
        - {check: unique, columns: [passage_id, question]}
        - {check: not_matching, column: text, pattern: "^<<REFUSE>>", reason: refusal}
        - {check: min_words, column: text, value: 5}

Templates render strictly:
a variable the template uses but the caller did not pass is an error naming it and the file. Values are
inserted as data; Jinja2 never renders an inserted value as a template, so a passage containing ``{{``
comes through verbatim.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import yaml
from jinja2 import meta

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ROLES = {"system", "user", "assistant", "developer"}


class PromptError(ValueError):
    """A prompt file is missing or invalid, or rendering it failed; the message names the file."""


CHECKS = {
    "span": {"column", "of"},
    "unique": {"columns"},
    "not_matching": {"column", "pattern"},
    "min_words": {"column", "value"},
    "max_words": {"column", "value"},
}


@dataclass(frozen=True)
class OutputSpec:
    """How an answer becomes rows (`explode`) and the checks every row must pass (in order)."""

    explode: str | None = None
    checks: tuple[dict[str, Any], ...] = ()


def _output_spec(path: Path, raw: Any) -> OutputSpec:
    if raw is None:
        return OutputSpec()
    if not isinstance(raw, dict) or set(raw) - {"explode", "checks"}:
        raise PromptError(f"{path}: 'output' must be a mapping with 'explode' and/or 'checks'.")
    explode = raw.get("explode")
    if explode is not None and not isinstance(explode, str):
        raise PromptError(f"{path}: output.explode must be the name of a list in the answer.")
    checks = []
    for i, check in enumerate(raw.get("checks") or []):
        kind = check.get("check") if isinstance(check, dict) else None
        if kind not in CHECKS:
            raise PromptError(f"{path}: output.checks[{i}]: 'check' must be one of {sorted(CHECKS)}.")
        keys = set(check) - {"check", "reason"}
        if keys != CHECKS[kind]:
            raise PromptError(
                f"{path}: output.checks[{i}] ({kind}) takes {sorted(CHECKS[kind])} (and an optional "
                f"reason), got {sorted(keys)}."
            )
        if kind == "unique" and not (
            isinstance(check["columns"], list)
            and check["columns"]
            and all(isinstance(c, str) for c in check["columns"])
        ):
            raise PromptError(f"{path}: output.checks[{i}] (unique): columns must be a list of column names.")
        if kind in ("min_words", "max_words") and not isinstance(check["value"], int):
            raise PromptError(f"{path}: output.checks[{i}] ({kind}): value must be a whole number of words.")
        if kind == "not_matching":
            try:
                re.compile(check["pattern"])
            except re.error as exc:
                raise PromptError(f"{path}: output.checks[{i}]: pattern is not a regex: {exc}") from None
        checks.append(dict(check))
    return OutputSpec(explode, tuple(checks))


def _check_explode(path: Path, explode: str | None, schema: dict[str, Any]) -> None:
    """`output.explode` must name an array of objects the output schema declares."""
    if explode is None:
        return
    prop = (schema.get("properties") or {}).get(explode)
    if not isinstance(prop, dict) or prop.get("type") != "array":
        raise PromptError(
            f"{path}: output.explode: '{explode}' is not an array property of output_schema; name the list "
            "whose items become rows, or drop explode (one row per answer)."
        )
    items = prop.get("items") or {}
    if items.get("type") not in (None, "object"):
        raise PromptError(f"{path}: output.explode: the items of '{explode}' must be objects (rows).")


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt file, ready to render."""

    path: Path
    name: str
    description: str
    sampling: dict[str, Any]
    messages: list[dict[str, str]]
    output_schema: dict[str, Any]
    output: OutputSpec = OutputSpec()
    _templates: list[jinja2.Template] = field(repr=False, compare=False, default_factory=list)

    @property
    def variables(self) -> set[str]:
        """The names the message templates use."""
        names: set[str] = set()
        for msg in self.messages:
            names |= meta.find_undeclared_variables(_ENV.parse(msg["content"]))
        return names

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Render the messages with `variables`; see `render`."""
        return render(self, **variables)


def load_prompt(path: str | Path) -> Prompt:
    """Read and check a prompt file; raise PromptError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"{path}: prompt file not found.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PromptError(f"{path}: expected a mapping with name, messages and output_schema.")
    unknown = set(raw) - {"name", "description", "sampling", "messages", "output_schema", "output"}
    if unknown:
        raise PromptError(f"{path}: unknown keys {sorted(unknown)}.")
    if not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise PromptError(
            f"{path}: 'name' is missing; give the prompt a name (e.g. name: {path.stem}): it keys the "
            "offline teacher's handler and the reports."
        )
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise PromptError(f"{path}: 'messages' must be a non-empty list of {{role, content}}.")
    templates = []
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in _ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise PromptError(
                f"{path}: messages[{i}] must have a role in {sorted(_ROLES)} and a string content."
            )
        try:
            templates.append(_ENV.from_string(msg["content"]))
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(
                f"{path}: messages[{i}]: template syntax error, line {exc.lineno}: {exc}"
            ) from None
    sampling = raw.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise PromptError(f"{path}: 'sampling' must be a mapping (max_tokens, ...).")
    schema = raw.get("output_schema")
    if not isinstance(schema, dict):
        raise PromptError(f"{path}: 'output_schema' must be a JSON schema (a mapping).")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PromptError(f"{path}: 'output_schema' is not a valid JSON schema: {exc.message}") from None
    output = _output_spec(path, raw.get("output"))
    _check_explode(path, output.explode, schema)
    return Prompt(
        path=path,
        name=raw["name"].strip(),
        description=str(raw.get("description") or ""),
        sampling=dict(sampling),
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        output_schema=schema,
        output=output,
        _templates=templates,
    )


def render(prompt: Prompt, **variables: Any) -> list[dict[str, str]]:
    """Render `prompt`'s messages into chat messages; an undefined variable raises PromptError."""
    missing = sorted(prompt.variables - set(variables))
    if missing:
        raise PromptError(
            f"{prompt.path}: the prompt uses variable(s) {', '.join(repr(m) for m in missing)} that "
            f"its stage does not provide (it provides: {', '.join(sorted(variables)) or 'none'}); "
            "rename them in the prompt to provided ones, or provide them (synthesize: `variables` maps "
            "a prompt variable to an input column, `constants` gives a fixed value)."
        )
    out = []
    for i, (msg, template) in enumerate(zip(prompt.messages, prompt._templates, strict=True)):
        try:
            content = template.render(**variables)
        except jinja2.UndefinedError as exc:  # e.g. an undefined attribute of a passed value
            raise PromptError(f"{prompt.path}: messages[{i}]: {exc.message}") from None
        out.append({"role": msg["role"], "content": content})
    return out
