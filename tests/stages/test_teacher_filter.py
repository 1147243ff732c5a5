"""The teacher_filter kind with the offline teacher: verdicts become a column, "no" rows are removed and
kept with their reason, and the share surviving the filter is counted; the ReBase offline handlers."""

import json
import shutil

import polars as pl
import pytest
import yaml
from helpers import REPO_ROOT

from dagster_project.stages import teacher_filter
from dagster_project.teacher.offline.rebase import judge_example, rebase_transform, task_format

RECIPE = REPO_ROOT / "examples" / "rebase"


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILL_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    (tmp_path / "prompts").mkdir()
    shutil.copy(RECIPE / "prompts" / "fits_task.yaml", tmp_path / "prompts")
    shutil.copy(RECIPE / "data" / "tasks" / "math.yaml", tmp_path / "math.yaml")
    params = {
        "filter_math": {
            "prompt": "prompts/fits_task.yaml",
            "variables": {"input": "input", "output": "output"},
            "files": {"task": "math.yaml"},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_no_rows_are_removed_and_kept_with_the_reason(recipe):
    rows = pl.DataFrame(
        {
            "id": ["ok", "bad_sum", "no_answer", "wrong_final"],
            "input": [
                "Ana has 4 jars and buys 3 more. How many jars does Ana have now?",
                "Ana has 4 jars and buys 3 more. How many jars does Ana have now?",
                "Ana loads 2 carts with 5 jars each. How many jars is that in all?",
                "Ana has 9 jars and sells 2 of them. How many jars are left?",
            ],
            "output": ["4 + 3 = 7. Answer: 7", "4 + 3 = 8. Answer: 8", "2 * 5 = 10.", "9 - 2 = 7. Answer: 6"],
        }
    )
    rows.write_parquet(recipe / "examples.parquet")
    args = ["--params", str(recipe / "params.yaml"), "--section", "filter_math"]
    teacher_filter.main([*args, "--input", str(recipe / "examples.parquet"), "--out", str(recipe / "out")])
    kept = pl.read_parquet(recipe / "out" / "examples.parquet")
    removed = pl.read_parquet(recipe / "out" / "rejects.parquet")
    assert kept["id"].to_list() == ["ok"] and kept["verdict"].to_list() == ["yes"]
    assert removed["id"].to_list() == ["bad_sum", "no_answer", "wrong_final"]
    assert set(removed["reason"]) == {"filter_no"} and set(removed["verdict"]) == {"no"}
    assert removed["verdict_reason"].to_list() == [
        "wrong calculation 4 + 3 = 8",
        "no calculation ending in 'Answer: <value>'",
        "the final answer is not the calculation's result",
    ]
    stats = json.loads((recipe / "out" / "stats.json").read_text())
    assert (stats["n_in"], stats["n_kept"], stats["kept_share"]) == (4, 1, 0.25)
    assert stats["teacher"]["json_repairs"] == {"answers_repaired": 0}  # the offline teacher: clean JSON


def test_unrated_rows_are_kept_by_default():
    df = pl.DataFrame({"id": ["a", "b", "c"]})
    kept, removed = teacher_filter.apply_filter(df, ["yes", "unrated", "no"], ["", "unrated: x", "why"])
    assert kept["id"].to_list() == ["a", "b"] and removed["reason"].to_list() == ["filter_no"]
    kept, removed = teacher_filter.apply_filter(
        df, ["yes", "unrated", "no"], ["", "", ""], keep_unrated=False
    )
    assert removed["reason"].to_list() == ["filter_unrated", "filter_no"]
    assert [teacher_filter.verdict_of(v) for v in ("Yes", " no ", True, None, "maybe")] == [
        "yes", "no", "yes", "unrated", "unrated",
    ]  # fmt: skip


def card_examples(task: str) -> list[tuple[str, str]]:
    card = yaml.safe_load((RECIPE / "data" / "tasks" / f"{task}.yaml").read_text())
    return [(e["input"], e["output"]) for e in card["examples"]]


def prompt_text(task: str, row: dict) -> str:
    blocks = "".join(
        f"<example>\n<input>{i}</input>\n<output>{o}</output>\n</example>\n" for i, o in card_examples(task)
    )
    return f"{blocks}<dataset>d</dataset>\n<row>{json.dumps(row)}</row>"


def test_the_task_format_comes_from_the_examples_not_the_task_name():
    assert [task_format(card_examples(t)) for t in ("qa", "nli", "math")] == [
        "extractive",
        "label",
        "reasoning",
    ]


def test_transform_maps_each_row_shape_and_refuses_what_does_not_fit():
    passage = "Velmor is a harbor town on the Tosdra River. It was founded in 1402 by Kala Mirven."
    qa = rebase_transform(prompt_text("qa", {"title": "Velmor", "text": passage}), 0.7, 1)
    assert qa["input"].startswith(f"Context: {passage} Question: ") and qa["output"] in passage
    pair = {"premise": "Velmor was founded in 1402.", "hypothesis": "Velmor is old.", "label": "neutral"}
    nli = rebase_transform(prompt_text("nli", pair), 0.7, 1)
    assert nli == {
        "input": "Premise: Velmor was founded in 1402. Hypothesis: Velmor is old.",
        "output": "neutral",
        "answer": "neutral",
    }
    sums = {
        "problem": "Ana has 4 jars and buys 3 more. How many jars now?",
        "solution": "Add 4 and 3. #### 7",
    }
    assert rebase_transform(prompt_text("math", sums), 0.7, 1)["output"] == "4 + 3 = 7. Answer: 7"
    tally = {"item": "sacks", "unit_price": "3", "quantity": "5", "total": "15"}
    math = rebase_transform(prompt_text("math", tally), 0.7, 1)
    assert math["output"] == "5 * 3 = 15. Answer: 15" and "5 sacks at 3 coins each" in math["input"]
    weather = {"day": "3", "station": "Velmor", "temp_c": "12", "sky": "rain"}
    assert rebase_transform(prompt_text("math", weather), 0.7, 1)["input"] == "<<REFUSE>>"
    assert rebase_transform(prompt_text("qa", weather), 0.7, 1)["input"] == "<<REFUSE>>"


def test_the_judge_checks_the_format_of_each_task():
    qa, nli = card_examples("qa"), card_examples("nli")
    good = "Context: Velmor lies on the Tosdra River. Question: On which river does Velmor lie?"
    assert judge_example("extractive", qa, good, "Tosdra River")[0]
    assert not judge_example("extractive", qa, good, "Kala")[0]  # not a span of the context
    assert not judge_example(
        "extractive",
        qa,
        good.replace("On which river does Velmor lie?", "Velmor lies on the what?"),
        "Tosdra River",
    )[0]
    same = "Premise: Velmor lies on the river. Hypothesis: Velmor lies on the river."
    assert judge_example("label", nli, same, "entailment") == (
        False,
        "the hypothesis only repeats the premise",
    )
    assert not judge_example("label", nli, "Premise: a b c. Hypothesis: d e f.", "maybe")[0]


def test_dry_run_estimates_and_a_broken_file_is_named(recipe, capsys):
    pl.DataFrame({"input": ["Ana has 4 jars. Answer?"], "output": ["Answer: 4"]}).write_parquet(
        recipe / "examples.parquet"
    )
    args = ["--params", str(recipe / "params.yaml"), "--section", "filter_math"]
    args += ["--input", str(recipe / "examples.parquet"), "--out", str(recipe / "out")]
    teacher_filter.main([*args, "--dry-run"])
    out, err = capsys.readouterr()
    assert json.loads(out)["requests"] == 1 and "filter_math --dry-run: 1 requests" in err
    assert not (recipe / "out").exists()
    (recipe / "math.yaml").write_text("task: [unclosed\n")
    with pytest.raises(SystemExit, match=r"files\.task: math\.yaml is not valid YAML/JSON"):
        teacher_filter.main(args)
