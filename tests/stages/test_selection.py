"""ReBase's selection: the scoring against hand-computed examples (max-then-mean and rank-average), the
banned dataset never reaching the selection, and the report of what fed it."""

import numpy as np
import polars as pl
import pytest

from dagster_project.stages.selection import Params, combine, rank01, score_cells, select

# Two datasets, three rows, five cells; per cell its cosine to the example inputs and to the outputs.
CELLS = pl.DataFrame(
    {
        "dataset": ["d1", "d1", "d2", "d2", "d2"],
        "config": ["default"] * 5,
        "split": ["train"] * 5,
        "row_id": [0, 0, 0, 1, 1],
        "column": ["q", "a", "text", "text", "label"],
        "value": ["a1", "a2", "b1", "c1", "c2"],
    }
)
CELL_INPUT = np.array([0.2, 0.8, 0.6, 0.1, 0.3])
CELL_OUTPUT = np.array([0.9, 0.1, 0.3, 0.95, 0.2])
DESCRIPTION = {"d1": 0.5, "d2": 0.9}


def test_max_per_row_then_mean_by_hand():
    scored = score_cells(CELLS, CELL_INPUT, CELL_OUTPUT, DESCRIPTION, "mean")
    by_row = {(d, r): s for d, r, s in scored.select("dataset", "row_id", "score").iter_rows()}
    # row d1/0: max input 0.8 (cell a2), max output 0.9 (cell a1), description 0.5
    assert by_row[("d1", 0)] == pytest.approx((0.8 + 0.9 + 0.5) / 3)
    assert by_row[("d2", 0)] == pytest.approx((0.6 + 0.3 + 0.9) / 3)
    assert by_row[("d2", 1)] == pytest.approx((0.3 + 0.95 + 0.9) / 3)
    first = scored.row(0, named=True)
    assert (first["best_input_column"], first["best_output_column"]) == ("a", "q")


def test_rank_average_by_hand():
    # per-row values: input [0.8, 0.6, 0.3], output [0.9, 0.3, 0.95], description [0.5, 0.9, 0.9]
    # ranks scaled to [0, 1]: input [1, 0.5, 0], output [0.5, 0, 1], description [0, 0.75, 0.75] (a tie)
    scored = score_cells(CELLS, CELL_INPUT, CELL_OUTPUT, DESCRIPTION, "rank_average")
    assert scored["score"].to_list() == pytest.approx([1.5 / 3, 1.25 / 3, 1.75 / 3])
    # the two scorings disagree on the best row: the mean favours d1/0, the rank average d2/1
    mean = score_cells(CELLS, CELL_INPUT, CELL_OUTPUT, DESCRIPTION, "mean")["score"].to_numpy()
    assert np.argmax(mean) == 0 and np.argmax(scored["score"].to_numpy()) == 2


def test_rank01_and_combine_edges():
    assert rank01(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert rank01(np.array([1.0, 1.0])).tolist() == [0.5, 0.5]
    assert rank01(np.array([7.0])).tolist() == [1.0]
    with pytest.raises(ValueError, match="rank_average"):
        combine(np.zeros(1), np.zeros(1), np.zeros(1), "median")


class KeywordEmbedder:
    """Unit vectors by keyword: 'answer' texts point at axis 0, 'question' texts at axis 1, else axis 2."""

    name = "keyword"

    def encode(self, texts):
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0 if "answer" in t else (1 if "question" in t else 2)] = 1.0
        return out


def store(rows: dict[str, list[dict[str, str]]]) -> tuple[pl.DataFrame, dict]:
    cells = [
        {"dataset": d, "config": "default", "split": "train", "row_id": i, "column": c, "value": v}
        for d, table in rows.items()
        for i, row in enumerate(table)
        for c, v in row.items()
    ]
    info = {d: {"description": f"{d} question answer", "rows_kept": len(t)} for d, t in rows.items()}
    return pl.DataFrame(cells), info


def test_the_banned_dataset_never_reaches_the_selection():
    # the benchmark is the best match of all (same shape as the examples): banned, it is never selected
    cells, info = store(
        {
            "benchmark": [{"q": "question 1", "a": "answer 1"}, {"q": "question 2", "a": "answer 2"}],
            "trivia": [{"q": "question 3", "a": "answer 3"}, {"q": "weather", "a": "rain"}],
            "recipes": [{"dish": "stew", "steps": "simmer"}],
        }
    )
    examples = pl.DataFrame({"input": ["question x"], "output": ["answer x"]})
    params = Params(top_n=10, banned=["benchmark", "not_a_dataset"])
    top, report = select(cells, info, "question answer task", examples, params, KeywordEmbedder())
    assert "benchmark" not in top["dataset"].to_list()
    assert top.height == 3 and top["dataset"].to_list()[0] == "trivia"
    assert report["banned"] == {"datasets": {"benchmark": 2}, "not_in_datastore": ["not_a_dataset"]}
    assert report["selected_per_dataset"] == {"recipes": 1, "trivia": 2}
    assert report["best_input_column"]["trivia.q"] >= 1 and report["best_output_column"]["trivia.a"] >= 1
    assert top.row(0, named=True)["row"] == '{"q": "question 3", "a": "answer 3"}'
    unbanned, _ = select(cells, info, "question answer task", examples, Params(top_n=2), KeywordEmbedder())
    assert set(unbanned["dataset"]) == {"benchmark"}  # without the ban it would have won
