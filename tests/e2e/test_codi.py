"""The CoDi recipe end to end, offline: a fresh copy builds the conversations, the single-turn arm, both
students and the side-by-side report; changing one node of the conversation graph reruns the
conversation synthesis and what follows it only, never the single-turn arm. Small sizes here (40
conversations, 1 epoch) so it runs in a few minutes on 2 cores."""

import json
import time

import pytest
import yaml
from helpers import copy_repo, dvc, stages_ran

pytestmark = pytest.mark.slow

RECIPE = "examples/codi"
TIMEOUT_S = 1800  # a hang guard on a shared CI host, not a speed check
CODI_SIDE = {"converse", "train@codi", "evaluate@codi", "report"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("codi"))
    params_path = root / RECIPE / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["converse"]["conversations"] = 40
    params["synthesize_single"]["limit"] = 40  # the same passages and about the same number of answers
    for arm in ("train_single", "train_codi"):
        params[arm]["epochs"] = 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    print(f"\ncodi recipe (40 conversations, 1 epoch) built offline in {time.perf_counter() - start:.0f}s")
    return root, out


def test_a_fresh_copy_builds_both_arms_and_the_report_with_every_figure(built):
    root, out = built
    expected = {
        "retrieve",
        "synthesize_single",
        "dedup_single",
        "train@single",
        "evaluate@single",
        *CODI_SIDE,
    }
    assert stages_ran(out, RECIPE) == expected
    metrics = json.loads((root / RECIPE / "assets/report/metrics.json").read_text())
    assert set(metrics["arms"]) == {"single", "codi"}
    for arm, figures in metrics["arms"].items():
        assert figures["n_turns"] == metrics["n_gold_turns"] == 200, arm
        assert set(figures["by_depth"]) == {"1", "2", "3", "4", "5"}, arm
        assert set(figures["by_type"]) == {
            "factoid",
            "followup",
            "clarification",
            "comparison",
            "unanswerable",
            "summary",
        }
        assert {"precision", "recall", "f1"} <= set(figures["unanswerable"]), arm
        assert figures["n_train_answers"] > 0 and "distinct_2" in figures["diversity"], arm
    cov = metrics["coverage"]
    assert cov["nodes_visited"] == cov["nodes"] == 6
    assert 0 < cov["edges_visited"] <= cov["edges"] and 0 < cov["distinct_paths"] <= cov["possible_paths"]
    assert sum(metrics["turn_types"].values()) == metrics["n_conversation_turns"]
    assert set(metrics["phenomena"]) == {"coreference", "ellipsis", "casual"}
    report = (root / RECIPE / "assets/report/report.md").read_text()
    for text in ("F1 by turn depth", "F1 by turn type", "Graph coverage", "unanswerable recall"):
        assert text in report
    print(report)
    assert json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_changing_one_node_reruns_the_conversations_and_what_follows_only(built):
    root, _ = built
    graph = root / RECIPE / "prompts/graph.yaml"
    spec = yaml.safe_load(graph.read_text())
    spec["nodes"]["comparison"]["next"] = {"followup": 0.2, "factoid": 0.3, "unanswerable": 0.15, "end": 0.35}
    graph.write_text(yaml.safe_dump(spec, sort_keys=False))
    status = json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout)
    assert {k.split(":")[-1] for k in status} == {"converse", "report"}  # the two stages reading the spec
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    assert stages_ran(out, RECIPE) == CODI_SIDE  # the single-turn arm is untouched
