"""The prompt format of a recipe (`train.prompt_format`): the default is the first release's format, a
custom template over any columns reaches both training and evaluation (through the student's folder), bad
templates and styles fail up front, chat style renders through the tokenizer's chat template, and braces
in the data are never read as a template."""

import json
from pathlib import Path

import pytest
import yaml
from tiny_recipe import recipe, run_stage, train_params, update_section
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from dagster_project.evaluation.generate import generate_answers
from dagster_project.evaluation.gold import load_gold
from dagster_project.params_schema import ParamsError, validate_params
from dagster_project.stages import evaluate, train
from dagster_project.student.data import IGNORE_INDEX, encode_example, load_rows
from dagster_project.student.model import build_student, train_tokenizer
from dagster_project.student.prompt_format import (
    FILE_NAME,
    PromptFormat,
    PromptFormatError,
    check_student_prompt_columns,
)

__all__ = ["recipe"]  # the fixture: a recipe folder with tiny data, cwd = it
DEFAULT_PARAMS = train.PromptFormatParams().model_dump()

ROW = {"context": "Kalo lies on the Mir River.", "question": "Which river?", "answer": "Mir River"}
CUSTOM = {
    "style": "plain",
    "prompt": "### Passage\n{context}\n### Q: {question}\n### A:",
    "completion": " {answer}",
    "system": None,
}
# A tiny chat template (roles in angle brackets, one message a line), for a local tokenizer.
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _tokenizer(chat_template: str | None = None):
    texts = [PromptFormat().prompt(ROW) + PromptFormat().completion(ROW), "<user><system><assistant>"] * 4
    tokenizer = train_tokenizer(texts, vocab_size=300)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


class _Spy:
    """Records every prompt PromptFormat renders (in the train and the evaluate stage alike)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prompts: list[str] = []
        original = PromptFormat.prompt

        def prompt(fmt: PromptFormat, row, tokenizer=None) -> str:  # noqa: ANN001
            text = original(fmt, row, tokenizer)
            self.prompts.append(text)
            return text

        monkeypatch.setattr(PromptFormat, "prompt", prompt)


# --- the default ----------------------------------------------------------------------------------------


def test_the_default_is_the_first_release_format() -> None:
    fmt = PromptFormat()
    assert fmt.prompt(ROW) == f"Context: {ROW['context']}\nQuestion: {ROW['question']}\nAnswer:"
    assert fmt.completion(ROW) == f" {ROW['answer']}"
    assert (
        PromptFormat.from_params(train.PromptFormatParams()) == PromptFormat.from_json(DEFAULT_PARAMS) == fmt
    )
    assert PromptFormat.from_json({}) == fmt  # every key optional
    assert fmt.to_json() == DEFAULT_PARAMS
    assert (fmt.prompt_columns, fmt.completion_columns) == (("context", "question"), ("answer",))
    # The training example is exactly the old one: prompt tokens, then " answer" and eos as targets.
    tokenizer = _tokenizer()
    ex = encode_example(tokenizer, ROW, max_length=96)
    old = tokenizer(
        f"Context: {ROW['context']}\nQuestion: {ROW['question']}\nAnswer:", add_special_tokens=False
    )
    assert ex["input_ids"][: ex["n_prompt"]] == old["input_ids"]
    targets = [t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(targets) == f" {ROW['answer']}" + tokenizer.eos_token


def test_a_student_without_the_file_is_asked_in_the_default_format(tmp_path: Path) -> None:
    assert PromptFormat.load(tmp_path) == PromptFormat()  # a checkpoint older than prompt_format.json
    custom = PromptFormat.from_json(CUSTOM)
    custom.save(tmp_path)
    assert PromptFormat.load(tmp_path) == custom
    assert json.loads((tmp_path / FILE_NAME).read_text()) == CUSTOM


# --- a custom template in training and evaluation -----------------------------------------------------


def test_a_custom_template_is_used_in_training_and_evaluation(
    recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_section(recipe, "train", epochs=1, prompt_format=CUSTOM)
    spy = _Spy(monkeypatch)
    argv = ["--params", "params.yaml", "--data", "assets/deduped", "--out", "assets/student"]
    run_stage(train, argv, monkeypatch)

    student = recipe / "assets/student"
    assert json.loads((student / FILE_NAME).read_text()) == CUSTOM
    train_rows = load_rows(recipe / "assets/deduped", "train", PromptFormat.from_json(CUSTOM))
    asked = list(spy.prompts)
    assert {PromptFormat.from_json(CUSTOM).prompt(r) for r in train_rows} <= set(asked)
    assert all(p.startswith("### Passage\n") for p in asked)
    # The training examples are in the custom format (prompt tokens, then the completion).
    tokenizer = AutoTokenizer.from_pretrained(student)
    ex = encode_example(tokenizer, train_rows[0], 96, PromptFormat.load(student))
    assert tokenizer.decode(ex["input_ids"][: ex["n_prompt"]]).startswith("### Passage\n")

    # Evaluate asks in the student's format, whatever params.yaml says now (it reads only `evaluate`).
    update_section(recipe, "train", prompt_format=DEFAULT_PARAMS)
    spy.prompts.clear()
    argv = [
        "--params",
        "params.yaml",
        "--student",
        "assets/student",
        "--data",
        "assets/deduped",
        "--out",
        "out",
    ]
    run_stage(evaluate, argv, monkeypatch)
    asked = list(spy.prompts)
    gold = load_gold(recipe / "data/gold_test.jsonl")
    assert len(asked) == len(gold) == 6
    assert sorted(asked) == sorted(PromptFormat.from_json(CUSTOM).prompt(r) for r in gold)


# --- errors up front ------------------------------------------------------------------------------------


def _validate(recipe: Path, **train_overrides) -> None:  # noqa: ANN003
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["train"].update(train_overrides)
    validate_params(params, root=recipe)


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"prompt": "{context} {answer}"}, "{answer}"),  # the completion's column
        ({"completion": " {answer.upper}"}, "{answer.upper}"),
        ({"prompt": "{context} {}"}, "{}"),
        ({"prompt": "{context:>10} {question}"}, "{context:>10}"),
    ],
)
def test_a_bad_placeholder_is_named_up_front(recipe: Path, block: dict, named: str) -> None:
    key = "train.prompt_format." + next(iter(block))
    with pytest.raises(PromptFormatError) as err:
        PromptFormat.from_json(block)
    assert str(err.value).startswith(f"{key}: ") and named in str(err.value)
    with pytest.raises(ParamsError) as err:  # the stage's params check, before any work
        _validate(recipe, prompt_format=block)
    assert key in str(err.value) and named in str(err.value)


def test_any_column_is_a_placeholder_and_a_missing_one_is_named_with_the_columns_there_are() -> None:
    fmt = PromptFormat.from_json({"prompt": "Text: {text}\nTopic:", "completion": " {label}"})
    assert fmt.columns == ("text", "label")
    assert fmt.prompt({"text": "A storm hit.", "label": "weather"}) == "Text: A storm hit.\nTopic:"
    fmt.check_columns(["id", "text", "label"], "train.parquet")
    with pytest.raises(PromptFormatError) as err:
        fmt.check_columns(["id", "text", "topic"], "train.parquet")
    assert str(err.value).startswith("train.prompt_format.completion: placeholder {label} is not a column")
    assert "its columns: id, text, topic" in str(err.value)
    with pytest.raises(PromptFormatError, match="not a valid template"):
        PromptFormat.from_json({"prompt": "a lone { brace"})


def test_a_bad_style_names_the_key_and_the_allowed_values(recipe: Path) -> None:
    with pytest.raises(PromptFormatError) as err:
        PromptFormat.from_json({"style": "chatml"})
    assert (
        str(err.value)
        == "train.prompt_format.style: 'chatml' is not allowed; allowed values: 'plain', 'chat'"
    )
    with pytest.raises(ParamsError) as err:
        _validate(recipe, prompt_format={"style": "chatml"})
    assert "train.prompt_format.style: 'chatml' is not allowed" in str(err.value) and "'chat'" in str(
        err.value
    )
    with pytest.raises(ParamsError, match="prompt_format.promt: unknown key"):
        _validate(recipe, prompt_format={"promt": "{context}"})
    with pytest.raises(PromptFormatError, match="system"):
        PromptFormat.from_json({"system": "Be brief."})  # a system message is for style chat only
    with pytest.raises(ParamsError, match="system"):
        _validate(recipe, prompt_format={"system": "Be brief."})


# --- chat style ----------------------------------------------------------------------------------------


def test_chat_style_renders_through_the_chat_template() -> None:
    fmt = PromptFormat.from_json(
        {"style": "chat", "prompt": "{context}\n{question}", "completion": "{answer}"}
    )
    tokenizer = _tokenizer(CHAT_TEMPLATE)
    assert fmt.prompt(ROW, tokenizer) == f"<user>{ROW['context']}\n{ROW['question']}\n<assistant>"
    assert fmt.completion(ROW) == ROW["answer"]
    with_system = PromptFormat("chat", "{question}", "{answer}", system="Answer from the passage.")
    assert (
        with_system.prompt(ROW, tokenizer)
        == f"<system>Answer from the passage.\n<user>{ROW['question']}\n<assistant>"
    )
    ex = encode_example(tokenizer, ROW, 96, fmt)
    assert tokenizer.decode(ex["input_ids"][: ex["n_prompt"]]).endswith("<assistant>")
    targets = [t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(targets) == ROW["answer"] + tokenizer.eos_token


def test_chat_style_without_a_chat_template_is_a_clear_error(recipe: Path) -> None:
    fmt = PromptFormat.from_json({"style": "chat"})
    with pytest.raises(PromptFormatError, match="chat template"):
        fmt.prompt(ROW, _tokenizer())
    with pytest.raises(PromptFormatError, match="chat template"):  # the offline default tokenizer
        build_student(train_params(), [ROW], fmt)
    with pytest.raises(ParamsError, match="base_model"):
        _validate(recipe, prompt_format={"style": "chat"})  # base_model: null


def test_chat_style_trains_and_evaluates_a_local_chat_model(
    recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = recipe / "base"
    tokenizer = _tokenizer(CHAT_TEMPLATE)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1, n_head=2)
    ).save_pretrained(base)
    tokenizer.save_pretrained(base)
    block = {
        "style": "chat",
        "prompt": "{context}\n{question}",
        "completion": "{answer}",
        "system": "Be brief.",
    }
    _validate(recipe, base_model=str(base), prompt_format=block)
    rows = load_rows(recipe / "assets/deduped", "train", PromptFormat.from_json(block))
    params = train_params(base_model=str(base), epochs=1, prompt_loss_weight=0.0, prompt_format=block)
    train.train_student(rows, [], params, recipe / "student")

    fmt = PromptFormat.load(recipe / "student")
    assert fmt.to_json() == block
    student_tokenizer = AutoTokenizer.from_pretrained(recipe / "student")
    assert student_tokenizer.chat_template  # saved with the student
    spy = _Spy(monkeypatch)
    model = AutoModelForCausalLM.from_pretrained(recipe / "student")
    answers = generate_answers(model, student_tokenizer, rows[:3], 2, 2, fmt)
    assert len(answers) == 3
    assert spy.prompts == [
        f"<system>Be brief.\n<user>{r['context']}\n{r['question']}\n<assistant>" for r in rows[:3]
    ]


# --- braces in the data ----------------------------------------------------------------------------------


def test_braces_in_the_data_are_never_read_as_a_template() -> None:
    row = {"context": "a {question} b {{c}} {0} {answer!r} {", "question": "}{x}", "answer": "{context}"}
    fmt = PromptFormat()
    assert fmt.prompt(row) == f"Context: {row['context']}\nQuestion: {row['question']}\nAnswer:"
    assert fmt.completion(row) == " {context}"
    literal = PromptFormat.from_json({"prompt": "{{braces}} {context}", "completion": "{{{answer}}}"})
    assert literal.prompt(row) == "{braces} " + row["context"]
    assert literal.completion(row) == "{{context}}"
    chat = PromptFormat("chat", "{question}", "{answer}")
    jinja_row = {"context": "c", "question": "{{ 7 * 7 }} {% if true %}x{% endif %}", "answer": "a"}
    assert chat.prompt(jinja_row, _tokenizer(CHAT_TEMPLATE)) == f"<user>{jinja_row['question']}\n<assistant>"


def test_a_stage_stops_when_the_data_lacks_a_column_of_the_students_prompt():
    fmt = PromptFormat.from_json(CUSTOM)
    check_student_prompt_columns(fmt, "students/s", list(fmt.prompt_columns), "rows.parquet")
    with pytest.raises(SystemExit) as exc:
        check_student_prompt_columns(fmt, "students/s", ["id"], "rows.parquet")
    message = str(exc.value.code)
    assert message.startswith(
        f"error: the student's format (students/s/{FILE_NAME}): train.prompt_format.prompt"
    )
    assert "is not a column of rows.parquet; its columns: id" in message
