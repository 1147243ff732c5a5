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
registered with `@handler("<prompt name>")` in a new module of this package (found by name).
Determinism: every answer is a pure function of (messages, temperature, seed, max_tokens).
"""

import functools
import hashlib
import importlib
import json
import pkgutil
import re
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

_PACKAGE = Path(__file__).parent
_IMPORT_RE = re.compile(r"^from dagster_project\.teacher\.offline\.(\w+) import", re.M)
# The answers of every handler go through this file's dispatch and the shared rules of grounded_qa.py.
_CORE_MODULES = ("__init__", "grounded_qa")


def _module_closure(module: str) -> list[str]:
    """`module` and the modules of this package it imports, transitively (sorted, core included)."""
    seen, todo = set(_CORE_MODULES), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = (_PACKAGE / f"{name}.py").read_text(encoding="utf-8")
        todo += _IMPORT_RE.findall(source)
    return sorted(seen)


@functools.cache
def revision(prompt_name: str | None = None) -> str:
    """A hash of the source that answers prompts named `prompt_name`: part of every offline request's cache
    key, so editing a handler never replays answers its old rules gave (the offline teacher is free to ask
    again). Only the handler's own module, the modules it imports from this package and the shared core
    count: adding or editing another recipe's handler leaves this prompt's answers (and every output made
    from them) as they are."""
    module = "__init__"
    if prompt_name is not None:
        fn = handlers().get(prompt_name)
        if fn is not None and fn.__module__ != __name__:
            module = fn.__module__.rsplit(".", 1)[-1]
    digest = hashlib.sha256()
    for name in _module_closure(module):
        digest.update(name.encode() + b"\0" + (_PACKAGE / f"{name}.py").read_bytes())
    return digest.hexdigest()[:12]


Handler = Callable[[str, float, int | None], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}
# Modules whose import registers handlers: every module of this package but the core (found by name, so a
# recipe's new handler module edits no shared file and changes no other prompt's revision).
_HANDLER_MODULES = tuple(
    sorted(m.name for m in pkgutil.iter_modules([str(_PACKAGE)]) if m.name not in _CORE_MODULES)
)


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
