import json

import pytest

from dagster_project.teacher.validate import extract_json, validate_answer

SCHEMA = {
    "type": "object",
    "required": ["pairs"],
    "properties": {
        "pairs": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "required": ["question", "answer"]},
        }
    },
}
GOOD = {"pairs": [{"question": "Who?", "answer": "Alice"}]}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Sure! Here you go:\n" + json.dumps(GOOD) + "\nHope that helps.",
    ],
)
def test_lenient_extraction(text):
    assert extract_json(text) == GOOD
    verdict = validate_answer(text, SCHEMA)
    assert verdict.ok and verdict.value == GOOD and verdict.reason is None


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        (json.dumps(GOOD)[:20], "length", "truncated"),
        ("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "stop", "html_body"),
        ("I'm sorry, but I can't help with that.", "stop", "refusal"),
        ("As an AI language model, I cannot do this.", "stop", "refusal"),
        ("{'pairs': [}", "stop", "malformed_json"),
        ("", "stop", "malformed_json"),
    ],
)
def test_reject_reasons(text, finish, reason):
    verdict = validate_answer(text, SCHEMA, finish)
    assert not verdict.ok and verdict.reason == reason and verdict.kind == reason


def test_schema_reject_says_where():
    verdict = validate_answer(json.dumps({"pairs": [{"question": "Who?"}]}), SCHEMA)
    assert verdict.kind == "schema"
    assert (
        verdict.reason.startswith("schema: pairs/0:") and "'answer' is a required property" in verdict.reason
    )


def test_valid_answer_quoting_a_refusal_is_kept():
    value = {"pairs": [{"question": "What did Bob say?", "answer": "I cannot swim"}]}
    assert validate_answer(json.dumps(value), SCHEMA).ok
