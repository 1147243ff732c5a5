"""The datastore kind over generated demo datasets: cells, label names, caps, descriptions; and the
planted copy of a gold test item, carried through a transform, removed by decontamination and listed."""

import json

import polars as pl
import pytest

from dagster_project.stages.datastore import Params, build, card_description
from dagster_project.world.rebase_data import generate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("rebase")
    generate(root / "data", seed=0)
    return root


def test_cells_labels_caps_and_descriptions(demo):
    cells, info = build(Params(folder="data/sources", max_rows_per_dataset=50), demo)
    assert sorted(info) == [
        "harbor_trivia", "harborqa", "kitchen_recipes", "market_tallies", "statement_pairs",
        "sum_problems", "town_gazetteer", "weather_log",
    ]  # fmt: skip
    assert cells.columns == ["dataset", "config", "split", "row_id", "column", "value"]
    per_dataset = cells.group_by("dataset").agg(pl.struct("split", "row_id").n_unique().alias("rows"))
    assert max(per_dataset["rows"]) == 50  # the cap
    labels = set(
        cells.filter((pl.col("dataset") == "statement_pairs") & (pl.col("column") == "label"))["value"]
    )
    assert labels == {"entailment", "neutral", "contradiction"}  # ClassLabel ids became names
    assert info["statement_pairs"]["label_columns"] == ["label"]
    assert info["market_tallies"]["columns"] == ["item", "unit_price", "quantity", "total"]
    assert info["town_gazetteer"]["description"].startswith("Encyclopedia-style passages")
    two_splits = build(Params(folder="data/sources"), demo)[1]["statement_pairs"]["splits"]
    assert two_splits == {"train": {"rows": 120, "kept": 120}, "validation": {"rows": 30, "kept": 30}}


def test_card_description_skips_front_matter_and_headings():
    card = "---\npretty_name: X\n---\n# X\n\nFirst line\nsecond line.\n\n## Columns\n"
    assert card_description(card) == "First line second line."


def test_a_dataset_without_description_is_an_error(tmp_path):
    (tmp_path / "src" / "bare").mkdir(parents=True)
    (tmp_path / "src" / "bare" / "train.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(SystemExit, match="bare has no description"):
        build(Params(folder="src"), tmp_path)


def test_the_planted_gold_copy_is_removed_by_decontamination_and_listed(demo):
    from dagster_project.stages.dedup import Params as DedupParams
    from dagster_project.stages.dedup import dedup, load_eval_sets
    from dagster_project.teacher.offline.rebase import rebase_transform

    cells, _ = build(Params(folder="data/sources"), demo)
    trivia = cells.filter(pl.col("dataset") == "harbor_trivia")
    card = json.loads(json.dumps(__import__("yaml").safe_load((demo / "data/tasks/qa.yaml").read_text())))
    examples = "".join(
        f"<example>\n<input>{e['input']}</input>\n<output>{e['output']}</output>\n</example>\n"
        for e in card["examples"]
    )
    rows = []
    for row_id in sorted(set(trivia["row_id"])):
        row = {
            c: v for c, v in trivia.filter(pl.col("row_id") == row_id).select("column", "value").iter_rows()
        }
        text = f"{examples}<dataset>harbor_trivia</dataset>\n<row>{json.dumps(row)}</row>"
        rows.append({"id": f"r{row_id}", **rebase_transform(text, 0.7, row_id)})
    gold = [demo / "data/gold" / f"{t}_test.jsonl" for t in ("qa", "nli", "math")]
    params = DedupParams(
        key_fields=["input"], split_by=None, filters={"required": ["input", "output"]},
        decontaminate={"ngram": 20, "ngram_fields": ["input"], "near_fields": ["input"]},
    )  # fmt: skip
    _, _, removed, report = dedup(pl.DataFrame(rows), load_eval_sets(gold, ["input"]), params)
    contaminated = removed.filter(pl.col("reason") == "contaminated")
    assert contaminated.select("id", "duplicate_of").rows() == [("r17", "qa-004")]  # the planted row
    assert contaminated["detail"][0].startswith("qa_test.jsonl")
    assert report["removed"]["contaminated"] == 1
