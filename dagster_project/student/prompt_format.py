"""How a row becomes the student's prompt and completion, declared per recipe (`train.prompt_format`).

The train stage encodes every example with it and saves it into the student's folder
(`prompt_format.json`, next to the weights); the evaluate stage reads it from there, so a student is
always asked in the format it was trained on, whatever params.yaml says today.

Rows are tables with named columns: a template's `{placeholder}` is a column name, any column of the
data (`{context}`, `{question}`, `{text}`, `{label}`...). `{{` and `}}` are a literal brace. Placeholders
are checked twice: their syntax when the format is made (params time: a bare column name, no attribute,
index, conversion or format spec), and that each is a column when the data is loaded (`check_columns`,
before any training), naming the missing column, the template key and the columns there are. A column
the completion uses is the student's target, so the prompt may not use it too.

Two styles:
- `plain`: `prompt` and `completion` are templates filled from the row. The default is the format of
  the first release (grounded QA):

      Context: {context}
      Question: {question}
      Answer: {answer}<eos>

  A classification recipe over rows {text, label} might use `prompt: "Text: {text}\\nTopic:"` and
  `completion: " {label}"`.
- `chat`: the rendered `prompt` becomes the user message (after an optional `system` message) and the
  tokenizer's chat template makes the prompt text (`apply_chat_template(..., add_generation_prompt=True)`);
  the completion is the rendered `completion` as in `plain`. For pretrained chat models (SmolLM-Instruct,
  Qwen-Instruct, ...): the offline default tokenizer, trained on the data, has no chat template.

The eos token is appended to the completion by the train stage as a token id, never as text.
Rendering is strict and single-pass: text from the data is inserted as it is, never read as a template,
so braces in a row's values are safe.
"""

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

STYLES = ("plain", "chat")
FILE_NAME = "prompt_format.json"  # in the student's folder
PARAMS_KEY = "train.prompt_format"

DEFAULT_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"
DEFAULT_COMPLETION = " {answer}"

_FORMATTER = string.Formatter()


class PromptFormatError(ValueError):
    """A prompt format that cannot be used; the message names the key (`key`) and what is allowed."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


class FormatBlock(Protocol):
    """What `PromptFormat.from_params` reads: the `train.prompt_format` params model (or alike)."""

    style: str
    prompt: str
    completion: str
    system: str | None


def parse_template(template: str, key: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, column name or None) pieces; raises on a placeholder that is not a
    bare column name (positional `{}`, attribute, index, conversion or format spec)."""
    if not isinstance(template, str):
        raise PromptFormatError(key, f"expected a template string, got {type(template).__name__}")
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:  # e.g. a lone "{" or "}"
        raise PromptFormatError(
            key,
            f"not a valid template ({exc}); a placeholder is a column name in braces, e.g. {{question}}, "
            "and {{ / }} is a literal brace",
        ) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not field.strip() or field.isdigit() or any(c in field for c in ".[]")):
            bad = True
        else:
            bad = field is not None and bool(spec or conversion)
        if bad:
            shown = "{" + str(field) + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise PromptFormatError(
                key,
                f"bad placeholder {shown}: a placeholder is a column name in braces, e.g. {{question}}, "
                "with no attribute, index, conversion or format spec ({{ / }} is a literal brace)",
            )
        pieces.append((literal, field))
    return pieces


def template_columns(pieces: Sequence[tuple[str, str | None]]) -> tuple[str, ...]:
    """The columns a parsed template reads, in order of first use."""
    return tuple(dict.fromkeys(field for _, field in pieces if field is not None))


def render(pieces: Sequence[tuple[str, str | None]], row: Mapping[str, Any]) -> str:
    """The parsed template filled from `row` in one pass: inserted values are never parsed again."""
    return "".join(literal + ("" if field is None else str(row[field])) for literal, field in pieces)


@dataclass(frozen=True)
class PromptFormat:
    """A recipe's prompt format (see the module docstring); its templates are parsed when made."""

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
        prompt = parse_template(self.prompt_template, f"{PARAMS_KEY}.prompt")
        completion = parse_template(self.completion_template, f"{PARAMS_KEY}.completion")
        leaked = [c for c in template_columns(prompt) if c in template_columns(completion)]
        if leaked:
            raise PromptFormatError(
                f"{PARAMS_KEY}.prompt",
                f"{{{leaked[0]}}} is in the completion too: the prompt must not hold what the student must "
                "write (a column is either given in the prompt or learnt in the completion)",
            )
        object.__setattr__(self, "_prompt", prompt)
        object.__setattr__(self, "_completion", completion)

    @classmethod
    def from_params(cls, block: FormatBlock) -> "PromptFormat":
        """The format of a validated `train.prompt_format` block (the params model)."""
        return cls(block.style, block.prompt, block.completion, block.system)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PromptFormat":
        """The format of a saved `prompt_format.json` (missing keys take the default)."""
        return cls(
            data.get("style", "plain"),
            data.get("prompt", DEFAULT_PROMPT),
            data.get("completion", DEFAULT_COMPLETION),
            data.get("system"),
        )

    # ------------------------------------------------------------------------------------------- columns

    @property
    def prompt_columns(self) -> tuple[str, ...]:
        """The columns the prompt reads."""
        return template_columns(self._prompt)  # type: ignore[attr-defined]

    @property
    def completion_columns(self) -> tuple[str, ...]:
        """The columns the completion reads: the student's targets."""
        return template_columns(self._completion)  # type: ignore[attr-defined]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the format reads (prompt first)."""
        return tuple(dict.fromkeys(self.prompt_columns + self.completion_columns))

    def check_columns(
        self, available: Iterable[str], where: str, templates: Sequence[str] = ("prompt", "completion")
    ) -> None:
        """Raise unless every placeholder of `templates` is one of the `available` columns of `where`."""
        available = list(available)
        for name in templates:
            used = self.prompt_columns if name == "prompt" else self.completion_columns
            missing = [c for c in used if c not in available]
            if missing:
                raise PromptFormatError(
                    f"{PARAMS_KEY}.{name}",
                    f"placeholder {{{missing[0]}}} is not a column of {where}; its columns: "
                    f"{', '.join(available) or '(none)'}. Name one of them, or add the column to the data",
                )

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
        """The prompt text for `row`; style chat needs the `tokenizer`."""
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
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def check_student_prompt_columns(
    prompt_format: PromptFormat, student_dir: str | Path, available: Iterable[str], where: str
) -> None:
    """Stop the stage (`SystemExit`, an `error:` line naming the student's `prompt_format.json`) unless
    every placeholder of the student's prompt is one of the `available` columns of `where`: a stage that
    asks a trained student checks its data before loading the weights."""
    try:
        prompt_format.check_columns(available, where, templates=("prompt",))
    except PromptFormatError as exc:
        raise SystemExit(f"error: the student's format ({student_dir}/{FILE_NAME}): {exc}") from None
