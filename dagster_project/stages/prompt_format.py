"""How an example becomes the student's prompt and completion, declared per recipe (`train.prompt_format`).

The train stage encodes every example with it and saves it into the student's folder
(`prompt_format.json`, next to the weights); the evaluate stage reads it from there, so a student is
always asked in the format it was trained on, whatever params.yaml says today.

Two styles:
- `plain`: `prompt` and `completion` are templates with `{field}` placeholders, filled from the row
  (the prompt may use `context` and `question`; the completion also `answer`). `{{` and `}}` are a
  literal brace. The default is the format of the first release:

      Context: {context}
      Question: {question}
      Answer: {answer}<eos>

- `chat`: the rendered `prompt` becomes the user message (after an optional `system` message) and the
  tokenizer's chat template makes the prompt text (`apply_chat_template(..., add_generation_prompt=True)`);
  the completion is the rendered `completion` as in `plain`. For pretrained chat models (SmolLM-Instruct,
  Qwen-Instruct, ...): the offline default tokenizer, trained on the data, has no chat template.

The eos token is appended to the completion by the train stage as a token id, never as text.
Rendering is strict and single-pass: the placeholders are checked when the format is made (before any
training), and text from the data is inserted as it is, never read as a template, so braces in a
context or question are safe.
"""

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STYLES = ("plain", "chat")
PROMPT_FIELDS = ("context", "question")  # never the answer: the evaluation prompt must not hold it
COMPLETION_FIELDS = ("context", "question", "answer")
FILE_NAME = "prompt_format.json"  # in the student's folder
PARAMS_KEY = "train.prompt_format"

DEFAULT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"
DEFAULT_COMPLETION = " {answer}"
DEFAULT_PARAMS: dict[str, Any] = {
    "style": "plain",
    "prompt": DEFAULT_PROMPT,
    "completion": DEFAULT_COMPLETION,
    "system": None,
}

_FORMATTER = string.Formatter()


class PromptFormatError(ValueError):
    """A prompt format that cannot be used; the message names the key (`key`) and what is allowed."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def parse_template(template: str, allowed: Sequence[str], key: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, field name or None) pieces; raises on any placeholder that is
    not a bare name from `allowed` (no positional `{}`, attribute, index, conversion or format spec)."""
    if not isinstance(template, str):
        raise PromptFormatError(key, f"expected a template string, got {type(template).__name__}")
    fields = ", ".join(f"{{{f}}}" for f in allowed)
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:  # e.g. a lone "{" or "}"
        raise PromptFormatError(
            key,
            f"not a valid template ({exc}); placeholders are {fields}, and {{{{ / }}}} is a literal brace",
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field == "answer" and "answer" not in allowed:
            raise PromptFormatError(
                key,
                "{answer} is not allowed in the prompt (it is what the student must produce); "
                f"allowed fields: {fields}",
            )
        if field is not None and (field not in allowed or spec or conversion):
            shown = (
                "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise PromptFormatError(
                key, f"unknown placeholder {shown}; allowed fields: {fields} ({{{{ / }}}} is a literal brace)"
            )
        pieces.append((literal, field))
    return pieces


def render(pieces: Sequence[tuple[str, str | None]], row: Mapping[str, Any]) -> str:
    """The parsed template filled from `row` in one pass: inserted values are never parsed again."""
    return "".join(literal + ("" if field is None else str(row[field])) for literal, field in pieces)


@dataclass(frozen=True)
class PromptFormat:
    """A recipe's prompt format (see the module docstring); validated when made."""

    style: str = "plain"
    prompt_template: str = DEFAULT_PROMPT
    completion_template: str = DEFAULT_COMPLETION
    system: str | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            allowed = ", ".join(repr(s) for s in STYLES)
            raise PromptFormatError(
                f"{PARAMS_KEY}.style", f"{self.style!r} is not allowed; allowed values: {allowed}"
            )
        if self.system is not None and not isinstance(self.system, str):
            raise PromptFormatError(f"{PARAMS_KEY}.system", "expected a string or null")
        if self.system is not None and self.style != "chat":
            raise PromptFormatError(
                f"{PARAMS_KEY}.system",
                f"a system message needs style 'chat' (style is {self.style!r}); with style 'plain' "
                "write it into the prompt template",
            )
        # Parsed once, here: a bad placeholder fails before any work.
        prompt = parse_template(self.prompt_template, PROMPT_FIELDS, f"{PARAMS_KEY}.prompt")
        completion = parse_template(self.completion_template, COMPLETION_FIELDS, f"{PARAMS_KEY}.completion")
        object.__setattr__(self, "_prompt", prompt)
        object.__setattr__(self, "_completion", completion)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> "PromptFormat":
        """The format of a `train.prompt_format` block; a missing key (or block) takes the default.

        Every key is read, whichever style uses it (a stage reads all the params it declares).
        """
        params = params if params is not None else {}
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:
            raise PromptFormatError(
                PARAMS_KEY, f"unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(DEFAULT_PARAMS)}"
            )
        value = {k: params[k] if k in params else default for k, default in DEFAULT_PARAMS.items()}
        return cls(value["style"], value["prompt"], value["completion"], value["system"])

    # ----------------------------------------------------------------------------------------- rendering

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise unless `tokenizer` can render this format (style chat needs a chat template)."""
        if self.style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                f"{PARAMS_KEY}.style",
                "'chat' needs a tokenizer with a chat template, and this one has none. Use a pretrained "
                "chat model as train.base_model (e.g. SmolLM2-Instruct, Qwen2.5-Instruct), or style "
                "'plain' (the offline default tokenizer, base_model: null, has no chat template)",
            )

    def messages(self, row: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages of the prompt: the optional system message, then the rendered user prompt."""
        user = {"role": "user", "content": render(self._prompt, row)}  # type: ignore[attr-defined]
        return ([{"role": "system", "content": self.system}] if self.system else []) + [user]

    def prompt(self, row: Mapping[str, Any], tokenizer: Any = None) -> str:
        """The prompt text for `row` (`context`, `question`); style chat needs the `tokenizer`."""
        if self.style == "plain":
            return render(self._prompt, row)  # type: ignore[attr-defined]
        if tokenizer is None:
            raise PromptFormatError(
                f"{PARAMS_KEY}.style", "'chat' renders prompts with a tokenizer; none given"
            )
        self.check_tokenizer(tokenizer)
        return tokenizer.apply_chat_template(self.messages(row), add_generation_prompt=True, tokenize=False)

    def completion(self, row: Mapping[str, Any]) -> str:
        """The completion text the student learns for `row` (the eos token is added as an id, not here)."""
        return render(self._completion, row)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------ (de)serialising

    def to_json(self) -> dict[str, Any]:
        """The format as a `train.prompt_format` block (plain JSON)."""
        return {
            "style": self.style,
            "prompt": self.prompt_template,
            "completion": self.completion_template,
            "system": self.system,
        }

    def save(self, student_dir: str | Path) -> Path:
        """Write `prompt_format.json` into the student's folder; return its path."""
        path = Path(student_dir) / FILE_NAME
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, student_dir: str | Path) -> "PromptFormat":
        """The format a student was trained with; the default for a checkpoint older than the file."""
        path = Path(student_dir) / FILE_NAME
        if not path.exists():
            return cls()
        return cls.from_params(json.loads(path.read_text(encoding="utf-8")))
