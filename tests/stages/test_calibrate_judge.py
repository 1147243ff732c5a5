"""Judge calibration CLI on a small hand-computed example (6 items, 3 raters, a yes/no judge)."""

import json

import pytest

from dagster_project.stages import calibrate_judge

RATINGS = {  # item: (rater_0, rater_1, rater_2) -> majority
    "1": ["yes", "yes", "yes"],  # yes
    "2": ["yes", "yes", "no"],  # yes
    "3": ["no", "no", "no"],  # no
    "4": ["no", "yes", "no"],  # no
    "5": ["yes", "no", "no"],  # no
    "6": ["yes", "yes", "yes"],  # yes
}
JUDGE = {"1": "yes", "2": "yes", "3": "no", "4": "yes", "5": "no", "6": "no"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_writes_json_and_markdown(tmp_path):
    # Long layout: one row per rating.
    labels = _write(
        tmp_path / "human.jsonl",
        [
            {"id": i, "rater": f"r{k}", "label": v}
            for i, votes in RATINGS.items()
            for k, v in enumerate(votes)
        ],
    )
    judge = _write(tmp_path / "judge.jsonl", [{"id": i, "label": v} for i, v in JUDGE.items()])
    pairs = _write(
        tmp_path / "pairs.jsonl",
        [
            {"id": "p1", "verdict_ab": "A", "verdict_ba": "B"},  # consistent, A wins
            {"id": "p2", "verdict_ab": "B", "verdict_ba": "A"},  # consistent, B wins
            {"id": "p3", "verdict_ab": "A", "verdict_ba": "A"},  # inconsistent: first shown both times
            {"id": "p4", "verdict_ab": "tie", "verdict_ba": "tie"},  # consistent tie
        ],
    )
    out = tmp_path / "calib"
    calibrate_judge.main(
        ["--labels", str(labels), "--judge", str(judge), "--pairwise", str(pairs)]
        + ["--label-order", "yes,no", "--resamples", "200", "--out", str(out)]
    )
    result = json.loads((out / "calibration.json").read_text())
    # majority vs judge: agree on 1, 2, 3, 5 -> p_o = 4/6; both say yes 3 of 6 -> p_e = 1/2; kappa = 1/3.
    assert result["kappa"]["estimate"] == pytest.approx(1 / 3)
    assert result["kappa"]["low"] <= 1 / 3 <= result["kappa"]["high"]
    assert result["percent_agreement"] == pytest.approx(4 / 6)
    assert result["confusion"]["counts"] == [[2, 1], [1, 2]]
    # Fleiss: P_bar = (1 + 1/3 + 1 + 1/3 + 1/3 + 1) / 6 = 2/3; p_yes = 10/18; P_e = 41/81; kappa = 13/40.
    assert result["raters_fleiss_kappa"] == pytest.approx(13 / 40)
    fleiss_ci = result["raters_fleiss_ci"]
    assert fleiss_ci["estimate"] == pytest.approx(13 / 40) and fleiss_ci["n_resamples"] == 200
    assert fleiss_ci["low"] < 13 / 40 < fleiss_ci["high"] <= 1.0
    # rater r0 [y y n n y y] vs judge [y y n y n n]: p_o = 1/2, p_e = 4/6*3/6 + 2/6*3/6 = 1/2 -> 0.
    assert result["per_rater_kappa"]["r0"] == pytest.approx(0.0)
    swap = result["swap_consistency"]
    assert swap["consistency_rate"] == 0.75 and swap["winners"] == ["A", "B", None, "tie"]
    assert swap["first_position_rate"] == pytest.approx(4 / 6) and swap["n_inconsistent_first"] == 1
    md = (out / "calibration.md").read_text()
    assert "Cohen's kappa, judge vs rater majority | 0.333" in md
    assert f"Fleiss' kappa among raters | 0.325 |\n| 95% bootstrap interval | [{fleiss_ci['low']:.3f}, " in md
    assert "data:image/svg+xml;base64," in md
    assert "Position-swap consistency" in md


def test_list_layout_and_missing_verdicts():
    ratings = {"a": ["yes", None, "yes"], "b": ["no", "no", None], "c": ["yes", "no", None]}
    result = calibrate_judge.calibrate(
        ratings, {"a": "yes", "b": "no", "c": None}, ["r0", "r1", "r2"], n_resamples=100
    )
    # c has no judge verdict (dropped); a and b agree -> kappa 1.
    assert result["n_items"] == 2 and result["n_dropped"] == 1
    assert result["kappa"]["estimate"] == 1.0
    # Fleiss over 2 ratings per item: P_i = 1, 1, 0 -> P_bar 2/3; p_yes = 1/2 -> P_e 1/2; kappa 1/3.
    assert result["raters_fleiss_kappa"] == pytest.approx(1 / 3)
    assert result["labels"] == ["no", "yes"]
