"""The reflections recipe end to end, offline: a fresh copy builds the teacher's reflections, students of
several sizes, the judge's calibration against the (demo) raters and the report; adding a student size
builds only that student and the report. Students train 2 epochs here (the recipe's 12 are for the demo)."""

import json
import time

import pytest
from helpers import copy_repo, dvc, stages_ran

pytestmark = pytest.mark.slow

RECIPE = "examples/reflections"
TIMEOUT_S = 1800  # a hang guard on a shared CI host, not a speed check


def _edit_params(root, old: str, new: str) -> None:
    params = root / RECIPE / "params.yaml"
    text = params.read_text()
    assert old in text
    params.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("reflections"))
    _edit_params(root, "sizes: [s, m, l]", "sizes: [s, m]")
    _edit_params(root, "  epochs: 12\n", "  epochs: 2\n")
    start = time.perf_counter()
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    print(f"\nreflections recipe (2 sizes, 2 epochs) built offline in {time.perf_counter() - start:.0f}s")
    return root, out


def test_a_fresh_copy_builds_every_system_and_the_calibrated_report(built):
    root, out = built
    per_size = {f"{kind}@{size}" for kind in ("train", "generate", "judge") for size in ("s", "m")}
    expected = {"reflect", "dedup", "reflect_heldout", "judge_teacher", "calibrate", "report", *per_size}
    assert stages_ran(out, RECIPE) == expected
    assets = root / RECIPE / "assets"
    calibration = json.loads((assets / "calibration/calibration.json").read_text())
    kappa = calibration["kappa"]
    assert calibration["n_items"] == 80 and kappa["low"] <= kappa["estimate"] <= kappa["high"]
    assert set(calibration["per_rater_kappa"]) == {"rater_a", "rater_b", "rater_c"}
    assert calibration["raters_fleiss_kappa"] is not None
    metrics = json.loads((assets / "report/metrics.json").read_text())
    assert metrics["order"] == ["teacher", "s", "m"]
    assert metrics["judge"]["kappa"] == kappa["estimate"]
    for name, figures in metrics["systems"].items():
        assert figures["n_judged"] + figures["n_unjudged"] == 60, name
        assert figures["ci_low"] <= figures["success_rate"] <= figures["ci_high"], name
        assert set(figures["type_share"]) <= {"simple", "complex"}, name
    assert metrics["systems"]["teacher"]["success_rate"] > metrics["systems"]["s"]["success_rate"]
    report = (assets / "report/report.md").read_text()
    for text in ("judge kappa", "share simple", "Success by student size", "Examples: teacher"):
        assert text in report
    print(report.split("## Success by student size")[0])
    assert json.loads(dvc("status", f"{RECIPE}/dvc.yaml", "--json", cwd=root).stdout or "{}") == {}


def test_adding_a_student_size_builds_only_that_student_and_the_report(built):
    root, _ = built
    _edit_params(root, "sizes: [s, m]", "sizes: [s, m, l]")
    out = dvc("repro", f"{RECIPE}/dvc.yaml", cwd=root, timeout=TIMEOUT_S).stdout
    assert stages_ran(out, RECIPE) == {"train@l", "generate@l", "judge@l", "report"}
    metrics = json.loads((root / RECIPE / "assets/report/metrics.json").read_text())
    assert metrics["order"] == ["teacher", "s", "m", "l"]
