"""The judge_report kind: success rates with intervals per system, kappa beside each, a visible warning
under a low kappa, type shares, students ordered by size, unjudged outputs counted."""

import json
import sys

import polars as pl
import pytest
import yaml

from dagster_project.stages import judge_report


def _judged(folder, verdicts, types, n_rejected=0):
    folder.mkdir(parents=True)
    n = len(verdicts)
    pl.DataFrame(
        {
            "utterance": [f"utterance {i}" for i in range(n)],
            "reflection": [f"reflection {i}" for i in range(n)],
            "acceptable": verdicts,
            "type": types,
            "reason": ["rule"] * n,
        }
    ).write_parquet(folder / "examples.parquet")
    pl.DataFrame({"reason": ["bad json"] * n_rejected}, schema={"reason": pl.String}).write_parquet(
        folder / "rejects.parquet"
    )


def _run(tmp_path, monkeypatch, kappa, section=None):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"report": section or {"resamples": 200}}))
    calibration = tmp_path / "calibration"
    calibration.mkdir(exist_ok=True)
    (calibration / "calibration.json").write_text(
        json.dumps({"kappa": {"estimate": kappa, "low": kappa - 0.1, "high": kappa + 0.1}, "n_items": 80})
    )
    out = tmp_path / f"report_{kappa}"
    argv = ["judge_report", "--params", str(tmp_path / "params.yaml"), "--section", "report"]
    argv += ["--calibration", str(calibration), "--systems", str(tmp_path / "judged")]
    argv += ["--students", str(tmp_path / "students"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    judge_report.main()
    return out


@pytest.fixture
def systems(tmp_path):
    _judged(tmp_path / "judged/teacher", [True] * 9 + [False], ["complex"] * 5 + ["simple"] * 5)
    _judged(tmp_path / "judged/big", [True] * 6 + [False] * 4, ["simple"] * 10, n_rejected=2)
    _judged(tmp_path / "judged/small", [True] * 2 + [False] * 8, ["simple"] * 8 + ["complex"] * 2)
    for name, n in (("big", 500_000), ("small", 90_000)):
        (tmp_path / "students" / name).mkdir(parents=True)
        (tmp_path / "students" / name / "train_log.json").write_text(json.dumps({"n_params": n}))
    return tmp_path


def test_rates_intervals_kappa_and_order(systems, monkeypatch):
    out = _run(systems, monkeypatch, kappa=0.8)
    metrics = json.loads((out / "metrics.json").read_text())
    figures = metrics["systems"]
    assert metrics["order"] == ["teacher", "small", "big"]  # the teacher first, then students by size
    assert figures["teacher"]["success_rate"] == pytest.approx(0.9)
    assert figures["big"]["success_rate"] == pytest.approx(0.6) and figures["big"]["n_unjudged"] == 2
    for f in figures.values():
        assert f["ci_low"] <= f["success_rate"] <= f["ci_high"]
    assert figures["small"]["type_share"] == {"simple": 0.8, "complex": 0.2}
    assert metrics["judge"] == {
        "kappa": 0.8, "kappa_low": pytest.approx(0.7), "kappa_high": pytest.approx(0.9),
        "kappa_threshold": 0.6, "trusted": True,
    }  # fmt: skip
    report = (out / "report.md").read_text()
    assert "| teacher | - | 0.900 |" in report and "0.80 [0.70, 0.90]" in report
    assert "WARNING" not in report and "LOW" not in report
    assert (out / "plots/success_by_size.csv").read_text().splitlines() == [
        "system,n_params,success_rate",
        "small,90000,0.2",
        "big,500000,0.6",
    ]
    examples = json.loads((out / "examples.json").read_text())
    assert all(not r["acceptable"] for r in examples["small"]["worst"])
    assert "<svg" in (out / "report.html").read_text()


def test_a_low_kappa_is_a_visible_warning_beside_every_rate(systems, monkeypatch):
    out = _run(systems, monkeypatch, kappa=0.45)
    report = (out / "report.md").read_text()
    assert "WARNING: the judge's kappa is below 0.6" in report
    assert report.count("0.45 [0.35, 0.55] LOW") == 3  # one per system row
    assert json.loads((out / "metrics.json").read_text())["judge"]["trusted"] is False
    assert "WARNING" in (out / "report.html").read_text()


def test_a_missing_verdict_column_is_named(systems, monkeypatch):
    with pytest.raises(SystemExit, match="has no column 'verdict'"):
        _run(systems, monkeypatch, kappa=0.8, section={"verdict_column": "verdict"})
