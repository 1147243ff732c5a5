"""The train and evaluate stages on a tiny grounded-QA recipe: a loadable checkpoint, the report files,
typed params (a section of a few keys takes the model's defaults), and errors before any work."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from tiny_recipe import (
    REPO_ROOT,
    TINY_EVALUATE,
    TINY_TRAIN,
    recipe,
    run_stage,
    train_params,
    update_section,
    write_params,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from dagster_project.evaluation.gold import most_frequent_answer
from dagster_project.stages import evaluate, train
from dagster_project.stages.common import read_run_facts
from dagster_project.student.data import load_rows
from dagster_project.student.prompt_format import PromptFormat

__all__ = ["recipe"]  # the fixture

TRAIN_ARGV = ["--params", "params.yaml", "--data", "assets/deduped", "--out", "assets/student"]


def _evaluate_argv(out: str) -> list[str]:
    return [
        "--params",
        "params.yaml",
        "--student",
        "assets/student",
        "--data",
        "assets/deduped",
        "--out",
        out,
    ]


def test_train_then_evaluate(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_stage(train, TRAIN_ARGV, monkeypatch)

    student = recipe / "assets" / "student"
    log = json.loads((student / "train_log.json").read_text())
    assert log["n_train"] == 24 and log["n_val"] == 4 and log["n_params"] > 0
    assert log["loss_history"] and log["val_loss"] is not None and "tokens_per_second" not in log
    assert read_run_facts(student)["train_log.json"]["tokens_per_second"] > 0  # a run fact, beside it
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student)
    assert tokenizer.eos_token is not None and tokenizer.pad_token is not None
    assert model.config.n_layer == 1 and model.config.n_embd == 16
    # The format it was trained in (here the default), for the evaluate stage to ask in.
    assert json.loads((student / "prompt_format.json").read_text()) == PromptFormat().to_json()
    assert not list(recipe.joinpath("assets").glob(".student.tmp-*"))  # the atomic temp folder is gone

    out = recipe / "assets" / "eval_report"
    run_stage(evaluate, _evaluate_argv(str(out)), monkeypatch)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 6
    for system in ("student", "baseline"):
        assert set(metrics[system]) == {"exact_match", "token_f1"}
        assert all(0.0 <= v <= 1.0 for v in metrics[system].values())
    # The breakdown is not a DVC metric: metrics.json keeps the headline, breakdown.json the rest.
    assert "per_category" not in metrics and "details" not in metrics
    breakdown = json.loads((out / "breakdown.json").read_text())
    assert breakdown["task"] == "qa" and breakdown["n_test"] == 6
    assert set(breakdown["per_category"]) <= {"year", "river"}
    assert sum(c["n"] for c in breakdown["per_category"].values()) == 6

    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.columns == [
        "id", "turn", "category", "question", "answer", "prediction", "baseline_prediction", "score",
        "exact_match", "token_f1",
    ]  # fmt: skip
    assert predictions.height == 6
    # The baseline is the most frequent training answer, the same for every question.
    train_answers = pl.read_parquet(recipe / "assets/deduped/train.parquet")["answer"].to_list()
    assert predictions["baseline_prediction"].unique().to_list() == [most_frequent_answer(train_answers)]
    assert "the answer string that occurs most often" in metrics["baseline_definition"]

    report = (out / "report.md").read_text()
    for heading in ("## Headline", "## Per category", "## 10 best", "## 10 worst", "## Training loss"):
        assert heading in report
    assert "data:image/svg+xml;base64," in report
    assert "## Diversity of the training data" in report and "tfidf" in report
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3 and "<script" not in html and "http" not in html.split("<svg")[0]
    assert metrics["diversity"]["backends"]["mean_pairwise_cosine"] == "tfidf"
    for name in ("headline", "per_category", "confusion", "train_loss"):
        lines = (out / "plots" / f"{name}.csv").read_text().splitlines()
        assert len(lines) >= 2, name
    assert (out / "plots/headline.csv").read_text().splitlines()[0] == "metric,system,value"
    shutil.rmtree(recipe / "assets" / "student")


def test_every_default_lives_in_the_params_model() -> None:
    """A section of a few keys takes the model's defaults, and they are the root recipe's values."""
    few = train.Params.model_validate({"epochs": 1})
    assert few.epochs == 1 and few.n_layer == 2 and few.max_length == 160 and few.save_steps == 200
    assert few.prompt_format.prompt == PromptFormat().prompt_template and few.lora.enabled is False
    assert (few.answer_swap.answer_column, few.answer_swap.context_column) == ("answer", "context")
    assert few.answer_swap.prob == 0.0  # augmentation for extractive QA: off unless a recipe asks for it
    root = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    # The root recipe fine-tunes SmolLM2-135M-Instruct (the base_model stage's folder); the model's
    # defaults are the from-config student's
    pretrained = {
        "base_model": "assets/base_model",
        "max_length": 256,
        "epochs": 0.1,
        "learning_rate": 0.0001,
        "prompt_loss_weight": 0.0,
        "prompt_format": {
            "style": "chat",
            "prompt": "Context: {context}\nQuestion: {question}",
            "completion": "{answer}",
        },
    }
    assert train.Params.model_validate(root["train"]) == train.Params.model_validate(
        {"answer_swap": {"prob": 0.8}} | pretrained
    )
    ev = evaluate.Params.model_validate({"gold_test": "g.jsonl"})
    assert ev.task == "qa" and ev.reference_column is None and ev.diversity.embedding == "auto"
    assert ev.zero_shot and not ev.teacher_reference and ev.precision == "auto"
    # The root recipe turns the teacher reference on and generates in bf16 (on CPUs that have it).
    assert ev.model_copy(
        update={"teacher_reference": True, "precision": "bf16"}
    ) == evaluate.Params.model_validate(root["evaluate"] | {"gold_test": "g.jsonl"})


def test_a_section_of_a_few_keys_runs_the_stages(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(
        recipe,
        {"epochs": 1, "n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 300, "save_steps": 0},
        {"gold_test": "data/gold_test.jsonl", "max_new_tokens": 4, "diversity": {"embedding": "tfidf"}},
    )
    run_stage(train, TRAIN_ARGV, monkeypatch)
    log = json.loads((recipe / "assets/student/train_log.json").read_text())
    assert log["max_length"] == 160 and log["n_train"] == 24
    run_stage(evaluate, _evaluate_argv("out"), monkeypatch)
    assert json.loads((recipe / "out/metrics.json").read_text())["task"] == "qa"


def test_a_missing_label_column_fails_before_the_model_loads(
    recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_section(recipe, "evaluate", diversity={"embedding": "tfidf", "label_column": "label"})
    argv = ["--params", "params.yaml", "--student", "nowhere", "--data", "assets/deduped", "--out", "r"]
    with pytest.raises(SystemExit) as exc:
        run_stage(evaluate, argv, monkeypatch)
    message = str(exc.value)
    assert "label_column is 'label'" in message and "passage_id" in message and "question" in message
    assert not (recipe / "r").exists()


def test_a_placeholder_that_is_not_a_column_fails_before_training(
    recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_section(recipe, "train", prompt_format={"prompt": "Q: {query}\nA:"}, answer_swap={"prob": 0.0})
    with pytest.raises(SystemExit) as exc:
        run_stage(train, TRAIN_ARGV, monkeypatch)
    message = str(exc.value)
    assert message.startswith("error: train.prompt_format.prompt: placeholder {query} is not a column")
    for column in ("context", "question", "answer", "passage_id"):
        assert column in message  # the columns there are
    assert not (recipe / "assets/student").exists() and not (recipe / ".cache").exists()
    # The same check on rows handed to train_student directly, before any work.
    rows = pl.read_parquet(recipe / "assets/deduped/train.parquet").to_dicts()
    params = train_params(prompt_format={"prompt": "Q: {query}"}, answer_swap={"prob": 0.0})
    with pytest.raises(ValueError, match=r"\{query\} is not a column of the training rows"):
        train.train_student(rows, [], params, recipe / "out", checkpoint_root=recipe / "ckpt")
    assert not (recipe / "out").exists() and not (recipe / "ckpt").exists()


def test_training_is_deterministic(recipe: Path) -> None:
    rows = load_rows(recipe / "assets/deduped", "train", PromptFormat())
    params = train_params(epochs=1)
    first = train.train_student(rows, [], params, recipe / "a")
    second = train.train_student(rows, [], params, recipe / "b")
    assert first["train_loss"] == second["train_loss"]
    assert (recipe / "a/model.safetensors").read_bytes() == (recipe / "b/model.safetensors").read_bytes()


def test_tiny_sections_are_valid() -> None:
    assert train.Params.model_validate(TINY_TRAIN).answer_swap.prob == 0.5
    assert evaluate.Params.model_validate(TINY_EVALUATE).max_new_tokens == 4
