"""Shared fixtures for teacher tests."""

import json
import re

import pytest


class FakeTeacher:
    """Answers the grounded-QA prompt with `count` pairs whose answers are words of the passage."""

    def chat(self, messages, *, model="offline-teacher", temperature=0.0, seed=None, max_tokens=None):
        user = messages[-1]["content"]
        passage = re.search(r"<passage>\s*(.*?)\s*</passage>", user, re.S).group(1)
        count = int(re.search(r"<count>(\d+)</count>", user).group(1))
        words = passage.split()
        pairs = [
            {"question": f"Which word is number {i} in the passage?", "answer": words[i % len(words)]}
            for i in range(count)
        ]
        return {
            "content": json.dumps({"pairs": pairs}),
            "finish_reason": "stop",
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 7 * count},
        }


@pytest.fixture
def fake_teacher() -> FakeTeacher:
    """A tiny deterministic teacher, independent of the real OfflineTeacher."""
    return FakeTeacher()
