"""A classification recipe through the train and evaluate stages: rows {id, text, label}, templates over
those columns, the gold label as the reference, accuracy and macro-F1 in the report; answer swap (QA only)
is a params error there."""

import json
import random
from pathlib import Path

import polars as pl
import pytest
from tiny_recipe import run_stage, write_params

from dagster_project.params_schema import ParamsError, validate_params
from dagster_project.stages import evaluate, train

LABELS = ["weather", "sport", "music"]
WORDS = {
    "weather": ["storm", "rain", "snow", "wind", "fog"],
    "sport": ["goal", "match", "team", "race", "score"],
    "music": ["song", "band", "drum", "choir", "tune"],
}
TRAIN = {
    "vocab_size": 300,
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "max_length": 48,
    "epochs": 3,
    "batch_size": 8,
    "save_steps": 0,
    "prompt_format": {"prompt": "Text: {text}\nTopic:", "completion": " {label}"},
}
EVALUATE = {
    "gold_test": "data/gold.jsonl",
    "task": "classification",
    "labels": LABELS,
    "reference_column": "label",
    "max_new_tokens": 3,
    "bootstrap_resamples": 100,
    "diversity": {"embedding": "tfidf", "label_column": "label"},
}


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        words = rng.sample(WORDS[label], 3)
        rows.append(
            {"id": f"t{seed}-{i}", "text": f"The {words[0]} and the {words[1]}, {words[2]}.", "label": label}
        )
    return rows


@pytest.fixture
def classification_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_params(tmp_path, TRAIN, EVALUATE)
    data = tmp_path / "assets/deduped"
    data.mkdir(parents=True)
    pl.DataFrame(_rows(30, seed=1)).write_parquet(data / "train.parquet")
    pl.DataFrame(_rows(6, seed=2)).write_parquet(data / "val.parquet")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(9, seed=3)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_classification_recipe_trains_and_reports_accuracy_and_macro_f1(
    classification_recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = classification_recipe
    run_stage(train, ["--params", "params.yaml", "--data", "assets/deduped", "--out", "student"], monkeypatch)
    saved = json.loads((root / "student/prompt_format.json").read_text())
    assert (saved["prompt"], saved["completion"]) == ("Text: {text}\nTopic:", " {label}")
    assert json.loads((root / "student/train_log.json").read_text())["n_train"] == 30

    argv = ["--params", "params.yaml", "--student", "student", "--data", "assets/deduped", "--out", "report"]
    run_stage(evaluate, argv, monkeypatch)
    metrics = json.loads((root / "report/metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["n_test"] == 9
    for system in ("student", "baseline"):
        assert {"accuracy", "macro_f1", "invalid_rate"} <= set(metrics[system])
        assert 0.0 <= metrics[system]["macro_f1"] <= 1.0 and 0.0 <= metrics[system]["accuracy"] <= 1.0
    # The baseline is the most frequent completion of train.parquet: a label (all three tie: the first).
    assert metrics["baseline_answer"] == "weather" and "the label string" in metrics["baseline_definition"]
    assert metrics["baseline"]["accuracy"] == pytest.approx(1 / 3)
    assert set(metrics["diversity"]["labelwise_cosine_per_label"]) == set(LABELS)  # train.parquet's label
    breakdown = json.loads((root / "report/breakdown.json").read_text())
    assert breakdown["details"]["student"]["confusion"]["row_labels"] == LABELS
    predictions = pl.read_parquet(root / "report/predictions.parquet")
    assert predictions["text"].to_list()[0].startswith("The ") and set(predictions["answer"]) == set(LABELS)
    report = (root / "report/report.md").read_text()
    assert "## Confusion matrix (student)" in report and "| student | " in report


def test_answer_swap_needs_the_columns_of_the_templates(classification_recipe: Path) -> None:
    import yaml

    params = yaml.safe_load((classification_recipe / "params.yaml").read_text())
    params["train"]["answer_swap"] = {"prob": 0.8}  # answer/context: not columns of these templates
    with pytest.raises(ParamsError) as err:
        validate_params(params, root=classification_recipe)
    message = str(err.value)
    assert "train: answer_swap.prob is 0.8, but answer_swap.answer_column 'answer'" in message
    assert "(it uses: label)" in message and "set answer_swap.prob: 0" in message
    params["train"]["answer_swap"] = {"prob": 0.8, "answer_column": "label", "context_column": "text"}
    validate_params(params, root=classification_recipe)  # named: valid (if of little use for labels)


def test_classification_needs_labels(classification_recipe: Path) -> None:
    with pytest.raises(ValueError, match="needs labels"):
        evaluate.Params.model_validate(EVALUATE | {"labels": []})
    with pytest.raises(ValueError, match="unknown task; allowed values: qa, multi_turn_qa"):
        evaluate.Params.model_validate(EVALUATE | {"task": "ner"})
