import json

from dagster_project.teacher.offline import OfflineTeacher, generate_pairs, passage_subject, split_sentences

PASSAGE = (
    "Peven is a kingdom in the southern coast. Peven was founded in 936. Its capital is Vengartir. "
    "It is ruled by Dragaran Yaven. Local people tell a story about a windy winter. "
    "Its population is estimated at 8,917,578."
)


def _messages(passage: str, count: int) -> list[dict]:
    return [
        {"role": "system", "content": "You write reading-comprehension training data. Reply with JSON only."},
        {
            "role": "user",
            "content": f"<passage>\n{passage}\n</passage>\nWrite <count>{count}</count> different pairs.",
        },
    ]


def test_rule_pairs_are_verbatim_spans():
    out = OfflineTeacher().chat(_messages(PASSAGE, 4))
    assert out["finish_reason"] == "stop"
    pairs = json.loads(out["content"])["pairs"]
    assert [p["answer"] for p in pairs] == ["936", "Vengartir", "Dragaran Yaven", "8,917,578"]
    assert pairs[1]["question"] == "What is the capital of Peven?"
    for p in pairs:
        assert p["answer"] in PASSAGE and "Peven" in p["question"]
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] > 0


def test_count_limits_pairs():
    pairs = json.loads(OfflineTeacher().chat(_messages(PASSAGE, 2))["content"])["pairs"]
    assert len(pairs) == 2


def test_deterministic_and_seed_varies_phrasing():
    teacher = OfflineTeacher()
    msgs = _messages(PASSAGE, 4)
    a = teacher.chat(msgs, temperature=0.7, seed=1)
    assert a == teacher.chat(msgs, temperature=0.7, seed=1)
    contents = {teacher.chat(msgs, temperature=0.7, seed=s)["content"] for s in range(6)}
    assert len(contents) > 1  # phrasing varies with the seed
    for content in contents:  # ... but the answers do not
        assert [p["answer"] for p in json.loads(content)["pairs"]] == [
            "936",
            "Vengartir",
            "Dragaran Yaven",
            "8,917,578",
        ]


def test_arbitrary_text_falls_back_to_cloze():
    text = "Python is a programming language first released in 1991. It was designed at CWI in Amsterdam."
    pairs = generate_pairs(text, 5)
    assert 1 <= len(pairs) <= 5
    for p in pairs:
        assert p["answer"] in text
        assert "___" in p["question"] and "Python" in p["question"]
    assert generate_pairs("no facts here at all.", 3) == []


def test_truncation_reports_length():
    out = OfflineTeacher().chat(_messages(PASSAGE, 4), max_tokens=8)
    assert out["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 8
    try:
        json.loads(out["content"])
        raise AssertionError("truncated content should not be valid JSON")
    except json.JSONDecodeError:
        pass


def test_unrecognised_prompt_gets_honest_empty_answer():
    out = OfflineTeacher().chat([{"role": "user", "content": "Tell me a joke."}])
    assert json.loads(out["content"]) == {} and out["finish_reason"] == "stop"
    named = OfflineTeacher().chat([{"role": "user", "content": "Tell me a joke."}], prompt="jokes")
    assert json.loads(named["content"]) == {}


def test_handlers_are_keyed_by_prompt_name():
    from dagster_project.teacher.offline import has_handler

    assert has_handler("grounded_qa") and has_handler("judge_success") and not has_handler("jokes")
    # The name decides, not the text: the grounded-QA tags are not read by the reference-answer handler.
    out = OfflineTeacher().chat(_messages(PASSAGE, 2), prompt="reference_answer")
    assert set(json.loads(out["content"])) == {"answer"}


def test_helpers():
    assert split_sentences("A b. C d! E f?") == ["A b.", "C d!", "E f?"]
    assert passage_subject("The Delash River flows into the Peka Sea.") == "Delash River"
    assert passage_subject("lowercase start") == "this passage"
