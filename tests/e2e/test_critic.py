"""The teacher-as-critic recipe end to end, offline: a fresh copy builds round 0 (the teacher's
paraphrases, SFT) and one critic round (candidates, critique in both orders, DPO, the round's answers
against the SFT student and the teacher) and the report; the DPO round raises the chosen-over-rejected
log-probability margin on held-out pairs; adding a round in params builds only that round and the report.
The recipe's own sizes (a few minutes): with half the sentences and 3 candidates per sentence one DPO
round had too few pairs (about 10 steps) to move the held-out margin, so the data are not cut here."""

import json
import time

import polars as pl
import pytest
from helpers import copy_repo, dvc, stages_ran

pytestmark = pytest.mark.slow

RECIPE = "examples/critic"
TIMEOUT_S = 1800  # a hang guard on a shared CI host, not a speed check
ROUND_STAGES = ("sample", "critique", "dpo", "answer", "versus")


def _edit_params(root, old: str, new: str) -> None:
    params = root / RECIPE / "params.yaml"
    text = params.read_text()
    assert old in text, old
    params.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("critic"))
    _edit_params(root, "  r2: {start: r1}\n", "")
    start = time.perf_counter()
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    print(f"\ncritic recipe (1 round) built offline in {time.perf_counter() - start:.0f}s")
    return root, out


def test_a_fresh_copy_builds_round_0_one_round_and_the_report(built):
    root, out = built
    expected = {"paraphrase", "dedup", "sft", "answer_sft", "paraphrase_heldout", "versus_teacher", "report"}
    assert stages_ran(out, RECIPE) == expected | {f"{s}@r1" for s in ROUND_STAGES}
    assets = root / RECIPE / "assets"
    stats = json.loads((assets / "critiques/r1/stats.json").read_text())
    assert stats["n_consistent"] + stats["n_inconsistent"] + stats["n_unanswered"] == stats["n_pairs"]
    assert stats["n_inconsistent"] > 0 and stats["first_position_rate"] > 0.5  # the planted position bias
    prefs = pl.read_parquet(assets / "critiques/r1/preferences.parquet")
    assert prefs.height == stats["n_preferences"] and (prefs["chosen"] != prefs["rejected"]).all()
    metrics = json.loads((assets / "report/metrics.json").read_text())
    assert metrics["rounds"] == ["r1"]
    r1 = metrics["per_round"]["r1"]
    for against in ("vs_sft", "vs_teacher"):
        assert r1[against]["ci_low"] <= r1[against]["win_rate"] <= r1[against]["ci_high"]
    assert metrics["teacher_vs_sft"]["win_rate"] > 0.5
    assert r1["dpo"]["train_reward_margin"] is not None
    assert (assets / "students/r1/dvclive/plots/metrics/train/rewards/margins.tsv").exists()
    report = (assets / "report/report.md").read_text()
    for text in ("Win rates", "position bias", "gap closed", "DPO reward margins"):
        assert text in report
    print(report.split("![")[0])
    assert json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_one_dpo_round_raises_the_heldout_margin(built):
    root, _ = built
    margins = json.loads((root / RECIPE / "assets/students/r1/margins.json").read_text())
    assert margins["n_pairs"] >= 10
    print(f"held-out log p(chosen) - log p(rejected): {margins['mean_margin_before']:.2f} -> "
          f"{margins['mean_margin_after']:.2f}")  # fmt: skip
    assert margins["mean_margin_after"] > margins["mean_margin_before"]
    assert margins["positive_after"] >= margins["positive_before"]


def test_adding_a_round_builds_only_that_round_and_the_report(built):
    root, _ = built
    _edit_params(root, "  r1: {start: sft}\n", "  r1: {start: sft}\n  r2: {start: r1}\n")
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    assert stages_ran(out, RECIPE) == {f"{s}@r2" for s in ROUND_STAGES} | {"report"}
    metrics = json.loads((root / RECIPE / "assets/report/metrics.json").read_text())
    assert metrics["rounds"] == ["r1", "r2"] and metrics["per_round"]["r2"]["start"] == "r1"
