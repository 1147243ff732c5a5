"""Teacher prompt files: YAML with Jinja2 message templates and a JSON schema for the answer.

A prompt file holds ``name``, ``description``, ``sampling`` (``max_tokens``, ...), ``messages`` (a list of
``{role, content}`` where content is a Jinja2 template) and ``output_schema``. Templates render strictly:
a variable the template uses but the caller did not pass is an error naming it and the file. Values are
inserted as data; Jinja2 never renders an inserted value as a template, so a passage containing ``{{``
comes through verbatim.
"""

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


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt file, ready to render."""

    path: Path
    name: str
    description: str
    sampling: dict[str, Any]
    messages: list[dict[str, str]]
    output_schema: dict[str, Any]
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
    unknown = set(raw) - {"name", "description", "sampling", "messages", "output_schema"}
    if unknown:
        raise PromptError(f"{path}: unknown keys {sorted(unknown)}.")
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
    return Prompt(
        path=path,
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description") or ""),
        sampling=dict(sampling),
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        output_schema=schema,
        _templates=templates,
    )


def render(prompt: Prompt, **variables: Any) -> list[dict[str, str]]:
    """Render `prompt`'s messages into chat messages; an undefined variable raises PromptError."""
    missing = sorted(prompt.variables - set(variables))
    if missing:
        raise PromptError(
            f"{prompt.path}: undefined variable(s) {', '.join(repr(m) for m in missing)}; "
            f"pass them when rendering (got: {sorted(variables) or 'none'})."
        )
    out = []
    for i, (msg, template) in enumerate(zip(prompt.messages, prompt._templates, strict=True)):
        try:
            content = template.render(**variables)
        except jinja2.UndefinedError as exc:  # e.g. an undefined attribute of a passed value
            raise PromptError(f"{prompt.path}: messages[{i}]: {exc.message}") from None
        out.append({"role": msg["role"], "content": content})
    return out
