"""The OpenAI chat-completions wire format: the request body of a payload, and the parts of an answer.

Shared by the engine's transports and the Batch API path (`batch.py`), so neither imports the other.
"""

import json
from typing import Any


def request_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a chat completion request for `payload` (see `TeacherRequest.payload`)."""
    body: dict[str, Any] = {"model": payload["model"], "messages": payload["messages"]}
    body["temperature"] = payload["temperature"]
    if payload["seed"] is not None:
        body["seed"] = payload["seed"]
    if payload["max_tokens"] is not None:
        body["max_tokens"] = payload["max_tokens"]
    if payload.get("response_format"):
        body["response_format"] = payload["response_format"]
    body.update(payload["extra"])
    if payload.get("prompt"):  # only for the offline teacher's model (served by teacher/server.py)
        body["metadata"] = {"prompt": payload["prompt"]}
    return body


def parse_completion(body: bytes | str) -> dict[str, Any]:
    """content, finish_reason and usage of a chat completion body; a non-JSON body becomes the content."""
    try:
        data = json.loads(body)
        choice = (data.get("choices") or [None])[0] or {}
        usage = data.get("usage") or {}
    except (ValueError, AttributeError, TypeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return {"content": text, "finish_reason": None, "usage": {}}
    message = choice.get("message") or {}
    content = message.get("content")
    if content is None and message.get("refusal"):
        content = message["refusal"]
    return {
        "content": content,
        "finish_reason": choice.get("finish_reason"),
        "usage": {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        },
    }
