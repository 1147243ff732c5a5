"""The lenient JSON parser on a battery of malformed answers: what is repaired (and named), what is
rejected (and why), and how the teacher primitive counts the repairs."""

import json

import pytest

from dagster_project.teacher.lenient_json import LenientJSONError, parse_lenient
from dagster_project.teacher.mapping import count_repairs
from dagster_project.teacher.validate import validate_answer

GOOD = {"input": "What is 2 + 3?", "output": "2 + 3 = 5. Answer: 5"}

REPAIRED = [
    (json.dumps(GOOD), ()),
    ("```json\n" + json.dumps(GOOD) + "\n```", ("code_fence",)),
    ("Here you go:\n```\n" + json.dumps(GOOD) + "\n```\nHope this helps!", ("code_fence", "prose_around")),
    ("Sure! " + json.dumps(GOOD) + " Let me know.", ("prose_around",)),
    ('{"input": "What is 2 + 3?", "output": "2 + 3 = 5. Answer: 5",}', ("trailing_comma",)),
    ('{"input": "What is 2 + 3?", "output": "2 + 3 = 5.\nAnswer: 5"}', ("raw_newline_in_string",)),
    # a brace inside a string does not end the object; prose after it with another brace is ignored
    (
        'Answer: {"input": "What is 2 + 3? {x}", "output": "5",} (note: {not json})',
        ("prose_around", "trailing_comma"),
    ),
]

REJECTED = [
    ("I cannot help with that.", "no_json_object"),
    ('{"input": "What is 2 + 3?", "output": "2 + 3 =', "unbalanced"),
    ("{'input': 'x', 'output': 'y'}", "invalid_json"),
    ('{"input": "x" "output": "y"}', "invalid_json"),
    ("", "no_json_object"),
]


@pytest.mark.parametrize(("text", "repairs"), REPAIRED)
def test_repaired_answers_parse_and_name_their_repairs(text, repairs):
    parsed = parse_lenient(text)
    assert parsed.repairs == repairs
    assert set(parsed.value) == {"input", "output"}


def test_repairs_keep_the_values():
    assert parse_lenient(REPAIRED[4][0]).value == GOOD
    assert parse_lenient(REPAIRED[5][0]).value["output"] == "2 + 3 = 5.\nAnswer: 5"


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_unrepairable_answers_are_rejected_with_a_reason(text, reason):
    with pytest.raises(LenientJSONError) as exc:
        parse_lenient(text)
    assert exc.value.reason.startswith(reason)
    assert validate_answer(text, None).reason in ("malformed_json", "refusal")


def test_the_primitive_counts_repairs_of_accepted_answers_only():
    class Result:  # the fields of TeacherResult that count_repairs reads
        def __init__(self, raw, ok):
            self.raw, self.ok = raw, ok

    results = [Result(t, True) for t, _ in REPAIRED] + [Result(t, False) for t, _ in REJECTED]
    counts = count_repairs(results)
    assert counts == {
        "answers_repaired": 6,
        "code_fence": 2,
        "prose_around": 3,
        "raw_newline_in_string": 1,
        "trailing_comma": 2,
    }
