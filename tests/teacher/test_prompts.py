from pathlib import Path

import pytest

from dagster_project.teacher.prompts import PromptError, load_prompt, render

REPO = Path(__file__).resolve().parents[2]
GROUNDED = REPO / "prompts" / "grounded_qa.yaml"


def test_renders_grounded_qa():
    prompt = load_prompt(GROUNDED)
    messages = render(prompt, passage="Paris is the capital of France.", count=3)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<passage>\nParis is the capital of France.\n</passage>" in messages[1]["content"]
    assert "<count>3</count>" in messages[1]["content"]
    assert prompt.output_schema["required"] == ["pairs"]
    assert prompt.sampling["max_tokens"] == 600


def test_undefined_variable_names_it_and_the_file():
    prompt = load_prompt(GROUNDED)
    with pytest.raises(PromptError) as err:
        render(prompt, passage="x")
    assert "'count'" in str(err.value) and "grounded_qa.yaml" in str(err.value)


def test_inserted_values_are_data_not_templates():
    messages = load_prompt(GROUNDED).render(passage="{{ count }} {% if x %}raw{% endif %}", count=2)
    assert "{{ count }} {% if x %}raw{% endif %}" in messages[1]["content"]


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="nope.yaml: prompt file not found"):
        load_prompt(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: [1,", "not valid YAML"),
        ("name: x\nmessages: []\noutput_schema: {}", "messages"),
        ("name: x\nmessages: [{role: user, content: '{{ x'}]\noutput_schema: {}", "syntax error"),
        (
            "name: x\nmessages: [{role: user, content: hi}]\noutput_schema: {type: 3}",
            "not a valid JSON schema",
        ),
        ("name: x\nmessages: [{role: user, content: hi}]", "output_schema"),
        ("messages: [{role: user, content: hi}]\noutput_schema: {}", "'name' is missing"),
        (
            "name: x\nmessages: [{role: user, content: hi}]\noutput_schema: {}\n"
            "output: {checks: [{check: spam}]}",
            "'check' must be one of",
        ),
        (
            "name: x\nmessages: [{role: user, content: hi}]\noutput_schema: {}\noutput: {explode: pairs}",
            "'pairs' is not an array property of output_schema",
        ),
        (
            "name: x\nmessages: [{role: user, content: hi}]\noutput_schema: {}\n"
            "output: {checks: [{check: unique, columns: text}]}",
            "columns must be a list",
        ),
        (
            "name: x\nmessages: [{role: user, content: hi}]\noutput_schema: {}\n"
            "output: {checks: [{check: span}]}",
            "takes \\['column', 'of'\\]",
        ),
    ],
)
def test_invalid_file_names_it(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PromptError, match=match) as err:
        load_prompt(path)
    assert "bad.yaml" in str(err.value)
