"""A tiny recipe for the train and evaluate stages: a params.yaml with small train/evaluate sections and
tiny grounded-QA data (fictional towns, their rivers and founding years), in a folder that is the cwd."""

import json
import random
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_TRAIN = {
    "base_model": None,
    "vocab_size": 300,
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "max_length": 96,
    "epochs": 2,
    "batch_size": 4,
    "learning_rate": 0.005,
    "warmup_ratio": 0.1,
    "prompt_loss_weight": 0.1,
    "answer_swap": {"prob": 0.5},
    "seed": 0,
}
TINY_EVALUATE = {
    "gold_test": "data/gold_test.jsonl",
    "task": "qa",
    "max_new_tokens": 4,
    "batch_size": 8,
    "bootstrap_resamples": 200,
    "diversity": {"max_texts": 50, "embedding": "tfidf"},
}


def train_params(**overrides):  # noqa: ANN003, ANN201
    """The tiny `train` section as the validated model, with `overrides`."""
    from dagster_project.stages.train import Params

    return Params.model_validate(TINY_TRAIN | overrides)


def qa_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Fictional towns with a founding year and a river; questions whose answers are context spans."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mir", "zor", "vath", "tel", "ran", "bel", "dor", "fen"]
    rows = []
    for i in range(n):
        town = "".join(rng.choice(syllables) for _ in range(2)).capitalize()
        river = "".join(rng.choice(syllables) for _ in range(2)).capitalize() + " River"
        year = str(rng.randint(900, 1900))
        context = f"{town} is a town on the {river}. It was founded in {year}."
        question, answer, category = rng.choice(
            [(f"When was {town} founded?", year, "year"), (f"Which river flows past {town}?", river, "river")]
        )
        rows.append(
            {"id": f"r{seed}-{i}", "passage_id": f"p{i}", "context": context, "question": question}
            | {"answer": answer, "category": category}
        )
    return rows


def write_params(root: Path, train: dict, evaluate: dict) -> None:
    """`root/params.yaml` with the repo's sections, these train/evaluate ones, and placeholder files."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"], params["evaluate"] = dict(train), dict(evaluate)
    # Files params.yaml must name for validation to pass (their content is irrelevant here).
    params["synthesize"]["prompt"] = str(REPO_ROOT / "prompts" / "grounded_qa.yaml")
    params["retrieve"]["queries"] = "queries.txt"
    params["retrieve"]["sources"] = [{"path": "passages.jsonl", "format": "jsonl", "text_field": "text"}]
    for name in ("queries.txt", "passages.jsonl"):
        (root / name).write_text("")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def update_section(root: Path, section: str, **values) -> None:  # noqa: ANN003
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe folder with a valid params.yaml (tiny train/evaluate sections) and tiny data; cwd = it."""
    write_params(tmp_path, TINY_TRAIN, TINY_EVALUATE)
    data = tmp_path / "assets" / "deduped"
    data.mkdir(parents=True)
    pl.DataFrame(qa_rows(24, seed=1)).drop("category").write_parquet(data / "train.parquet")
    pl.DataFrame(qa_rows(4, seed=2)).drop("category").write_parquet(data / "val.parquet")
    (tmp_path / "data").mkdir()
    gold = [
        {k: r[k] for k in ("id", "context", "question", "answer", "category")} for r in qa_rows(6, seed=3)
    ]
    (tmp_path / "data" / "gold_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gold))
    monkeypatch.setenv("DISTILL_TRAIN_CHECKPOINTS", str(tmp_path / ".cache/train-checkpoints"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(module, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Run a stage's main() in-process with `argv`."""
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    module.main()
