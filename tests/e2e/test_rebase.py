"""The ReBase recipe end to end, offline, at a small size: a fresh copy builds every task and both arms
(ReBase and synthesis-only) with every figure of the side-by-side reports; the banned benchmark never
reaches a selection and the planted gold copy is removed by decontamination; adding a source dataset
folder reruns the datastore, the selections and what depends on them, nothing else."""

import json
import random
import re
import time

import polars as pl
import pytest
import yaml
from helpers import copy_repo, dvc

from dagster_project.world.rebase_data import Names, _card, _parquet, make_towns, qa_item

pytestmark = pytest.mark.slow

RECIPE = "examples/rebase"
TASKS = ["qa", "nli", "math"]
ARMS = ["rebase", "synthesis"]
FIGURES = {
    "qa": ["student_exact_match", "student_token_f1"],
    "nli": ["student_accuracy", "student_macro_f1", "label_entropy_bits", "labelwise_cosine"],
    "math": ["student_answer_accuracy", "student_cot_words_mean", "student_cot_words_median"],
}
COMMON = ["n_examples", "n_train", "distinct_2", "self_bleu_4", "mean_pairwise_cosine", "mauve_vs_gold",
          "filter_n_in", "filter_kept_share"]  # fmt: skip
TIMEOUT_S = 3600  # a hang guard on a shared CI host, not a speed check (wall time is printed)
SIZE = 120  # rows selected (and synthesized) per task, the planted copy included (rank 98); committed: 200


def ran(output: str) -> set[str]:
    addresses = set(re.findall(r"Running stage '([^']+)'", output))
    prefix = f"{RECIPE}/dvc.yaml:"
    assert all(a.startswith(prefix) for a in addresses), sorted(addresses)
    return {a.removeprefix(prefix) for a in addresses}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("rebase"))
    params_path = root / RECIPE / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["selection"]["top_n"] = SIZE
    for task in TASKS:
        params[f"baseline_{task}"]["samples"] = SIZE  # the same budget as the selection
    params["train"]["epochs"] = 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    print(f"\nReBase recipe (top_n {SIZE}, 1 epoch) built offline in {time.perf_counter() - start:.0f}s")
    return root, out


def test_every_task_and_arm_has_every_figure(built):
    root, out = built
    runs = [f"{t}_{a}" for t in TASKS for a in ARMS]
    stages = {
        "datastore",
        *(f"{k}@{t}" for k in ("selection", "transform", "baseline", "compare") for t in TASKS),
    }
    stages |= {f"{k}@{r}" for k in ("filter", "dedup", "train", "evaluate") for r in runs}
    assert ran(out) == stages
    for task in TASKS:
        metrics = json.loads((root / RECIPE / f"assets/comparison_{task}/metrics.json").read_text())
        assert sorted(metrics["arms"]) == sorted(ARMS)
        for arm in ARMS:
            figures = metrics["arms"][arm]
            missing = [f for f in COMMON + FIGURES[task] if figures.get(f) is None]
            assert not missing, (task, arm, missing)
            assert 0 < figures["filter_kept_share"] <= 1
        report = (root / RECIPE / f"assets/comparison_{task}/report.md").read_text()
        assert "share of rows surviving the filter" in report and "| rebase | synthesis |" in report
    assert json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_banned_benchmark_and_planted_gold_copy(built):
    root, _ = built
    assets = root / RECIPE / "assets"
    for task in TASKS:
        selected = pl.read_parquet(assets / f"selected_{task}/selection.parquet")
        assert "harborqa" not in selected["dataset"].to_list()
        report = json.loads((assets / f"selected_{task}/report.json").read_text())
        assert report["banned"]["datasets"] == {"harborqa": 60}
    selected = pl.read_parquet(assets / "selected_qa/selection.parquet")
    assert "harbor_trivia/default/train/17" in selected["key"].to_list()  # the planted copy of qa-004
    removed = pl.read_parquet(assets / "deduped_qa_rebase/removed.parquet")
    contaminated = removed.filter(pl.col("reason") == "contaminated")
    assert contaminated["duplicate_of"].to_list() == ["qa-004"]
    assert contaminated["detail"][0].startswith("qa_test.jsonl")


def test_adding_a_source_dataset_reruns_only_the_datastore_and_what_depends_on_it(built):
    root, _ = built
    rng = random.Random(7)
    towns = make_towns(rng, Names(rng), 30)
    folder = root / RECIPE / "data/sources/more_trivia"
    rows = [{k: v for k, v in qa_item(t, rng).items() if k != "category"} for t in towns]
    _parquet(folder / "train.parquet", rows)
    _card(folder, "More trivia", "More trivia questions about harbor towns, with passages and answers.",
          {"question": "a question", "context": "the passage", "answer": "the answer"})  # fmt: skip
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    stages = ran(out)
    downstream = {"datastore", *(f"{k}@{t}" for k in ("selection", "transform", "compare") for t in TASKS)}
    downstream |= {f"{k}@{t}_rebase" for k in ("filter", "dedup", "train", "evaluate") for t in TASKS}
    assert {"datastore", "selection@qa", "selection@nli", "selection@math"} <= stages <= downstream
    # the new rows reach the QA selection, so the whole QA ReBase arm and its report are rebuilt
    assert {f"{k}@qa_rebase" for k in ("filter", "dedup", "train", "evaluate")} | {"compare@qa"} <= stages
    selected = pl.read_parquet(root / RECIPE / "assets/selected_qa/selection.parquet")
    assert "more_trivia" in selected["dataset"].to_list()
    assert not any("synthesis" in s or s.startswith("baseline") for s in stages)
