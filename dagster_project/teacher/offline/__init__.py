"""The offline teacher: a deterministic, rule-based stand-in for an LLM. It is weak, and says so.

It exists so that a fresh machine can run every recipe and the test suite with no network, keys or GPU.
It is NOT a language model and its output is no claim of LLM quality. It answers with one **handler per
prompt**, keyed by the prompt file's `name` (the engine passes the name with each in-process request):
each handler reads the rendered messages the way an LLM would see them (tagged parts such as
`<passage>...</passage>`) and returns the JSON answer the prompt's schema asks for.

A recipe whose prompt has no handler fails before any work (params validation names the prompt), so an
offline run never turns into silent empty rejects. A request without a prompt name (e.g. over the HTTP
server) is answered by the grounded-QA handler when it carries its tags, else with `{}`, which a
schema-validating caller rejects with its reason.

Add a handler: a function `(text, temperature, seed) -> dict` where `text` is the last user message,
registered with `@handler("<prompt name>")` in a module of this package that `_HANDLER_MODULES` lists.
Determinism: every answer is a pure function of (messages, temperature, seed, max_tokens).
"""

import hashlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster_project.teacher.offline.grounded_qa import (  # noqa: F401  (re-exported)
    COUNT_RE,
    PASSAGE_RE,
    RULES,
    generate_pairs,
    passage_subject,
    split_sentences,
)


def _source_revision() -> str:
    """A hash of this package's source: part of every offline request's cache key, so editing a handler
    never replays answers the old rules gave (the offline teacher is free to ask again)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


OFFLINE_TEACHER_REVISION = _source_revision()

Handler = Callable[[str, float, int | None], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}
# Modules whose import registers handlers (kept explicit: a handler is found without scanning files).
_HANDLER_MODULES = ("judges", "reference", "classification", "reflections", "rebase", "codi", "critic")


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register `fn` as the offline answer to prompts named `name`."""

    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


def _grounded_qa(text: str, temperature: float, seed: int | None) -> dict[str, Any]:
    from dagster_project.teacher.offline import grounded_qa

    return grounded_qa.answer(text, temperature, seed)


handler("grounded_qa")(_grounded_qa)


def _load_all() -> None:
    for module in _HANDLER_MODULES:
        importlib.import_module(f"dagster_project.teacher.offline.{module}")


def handlers() -> dict[str, Handler]:
    """Every registered handler by prompt name."""
    _load_all()
    return dict(_HANDLERS)


def has_handler(prompt_name: str) -> bool:
    """Whether the offline teacher can answer prompts named `prompt_name`."""
    return prompt_name in handlers()


def _words(text: str) -> int:
    return len(text.split())


class OfflineTeacher:
    """A deterministic rule-based teacher with the chat interface of the real one (see module doc)."""

    model_name = "offline-teacher"

    def chat(
        self,
        messages: list[dict],
        *,
        model: str = "offline-teacher",
        temperature: float = 0.0,
        seed: int | None = None,
        max_tokens: int | None = None,
        prompt: str | None = None,
    ) -> dict:
        """Answer one chat request: {"content", "finish_reason", "usage"} like an OpenAI-style server."""
        prompt_tokens = sum(_words(str(m.get("content", ""))) for m in messages)
        user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = str(user.get("content", "")) if user else ""
        table = handlers()
        if prompt is not None and prompt in table:
            value = table[prompt](text, temperature, seed)
        elif prompt is None and PASSAGE_RE.search(text) and COUNT_RE.search(text):
            value = table["grounded_qa"](text, temperature, seed)
        else:
            value = {}  # a prompt it has no handler for: the honest empty answer, never invented data
        content = json.dumps(value, ensure_ascii=False)
        finish_reason = "stop"
        words = content.split(" ")
        if max_tokens is not None and len(words) > max_tokens:
            content = " ".join(words[:max_tokens])
            finish_reason = "length"
        return {
            "content": content,
            "finish_reason": finish_reason,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": _words(content)},
        }
