"""Judge calibration as a stage kind: a hand-computed example (6 items, 3 raters, a yes/no judge), the
labels file's errors (each named before any teacher call), and the teacher judging items itself."""

import json
import shutil
import sys

import pytest
import yaml
from helpers import REPO_ROOT

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


def run_stage(tmp_path, section, monkeypatch, out_name="calib"):
    """Run the stage on a params file holding `section` as `calibrate`; return its output folder."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"calibrate": section}))
    out = tmp_path / out_name
    argv = ["calibrate_judge", "--params", str(tmp_path / "params.yaml"), "--section", "calibrate"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    monkeypatch.chdir(tmp_path)
    calibrate_judge.main()
    return out


def test_stage_writes_json_and_markdown(tmp_path, monkeypatch):
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
    items = _write(tmp_path / "items.jsonl", [{"id": i, "text": f"item {i}"} for i in RATINGS])
    section = {
        "items": str(items),
        "labels": str(labels),
        "judge_verdicts": str(judge),
        "pairwise": str(pairs),
    }
    section |= {"label_order": ["yes", "no"], "resamples": 200}
    out = run_stage(tmp_path, section, monkeypatch)
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


def _long(ratings):
    return [
        {"id": i, "rater": f"r{k}", "label": v} for i, votes in ratings.items() for k, v in enumerate(votes)
    ]


def test_labels_errors_name_the_line_item_and_rater(tmp_path):
    items = ["1", "2"]
    unknown = _write(tmp_path / "a.jsonl", _long({"1": ["yes", "no"], "9": ["no", "no"]}))
    with pytest.raises(
        calibrate_judge.CalibrationInputError, match=r"a\.jsonl:3: item '9' is not in the judged"
    ):
        calibrate_judge.load_ratings(unknown, items)
    missing = _write(tmp_path / "b.jsonl", _long({"1": ["yes", "no"], "2": ["no"]}))
    with pytest.raises(calibrate_judge.CalibrationInputError, match="item '2' has no label from rater 'r1'"):
        calibrate_judge.load_ratings(missing, items)
    with pytest.raises(calibrate_judge.CalibrationInputError, match="item '1' has no label from rater 'r2'"):
        calibrate_judge.load_ratings(
            _write(tmp_path / "c.jsonl", _long({"1": ["y"], "2": ["y"]})), items, ["r0", "r2"]
        )
    twice = _write(
        tmp_path / "d.jsonl", [*_long({"1": ["yes"], "2": ["no"]}), {"id": "1", "rater": "r0", "label": "no"}]
    )
    with pytest.raises(
        calibrate_judge.CalibrationInputError, match=r"d\.jsonl:3: a second label from 'r0' for item '1'"
    ):
        calibrate_judge.load_ratings(twice, items)
    unrated = _write(tmp_path / "e.jsonl", _long({"1": ["yes"]}))
    with pytest.raises(
        calibrate_judge.CalibrationInputError, match="item '2' of the items file has no ratings"
    ):
        calibrate_judge.load_ratings(unrated, items)
    csv_file = tmp_path / "f.csv"
    csv_file.write_text("id,rater,label\n1,r0,yes\n2,,no\n")
    with pytest.raises(calibrate_judge.CalibrationInputError, match=r"f\.csv:3: missing rater"):
        calibrate_judge.load_ratings(csv_file, items)
    broken = tmp_path / "g.jsonl"
    broken.write_text('{"id": "1", "rater": "r0", "label": "yes"}\n{"id": "2", "rater"\n')
    with pytest.raises(calibrate_judge.CalibrationInputError, match=r"g\.jsonl:2: not valid JSON"):
        calibrate_judge.load_ratings(broken, items)


def test_a_bad_labels_file_fails_the_stage_before_the_judge_runs(tmp_path, monkeypatch, capsys):
    items = _write(tmp_path / "items.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}])
    labels = _write(tmp_path / "labels.jsonl", _long({"1": ["yes", "no"], "3": ["no", "no"]}))
    section = {"items": str(items), "labels": str(labels), "judge_prompt": "no_such_prompt.yaml"}
    with pytest.raises(SystemExit) as exc:  # the prompt file does not exist: params validation, exit 2
        run_stage(tmp_path, section, monkeypatch)
    assert exc.value.code == 2 and "judge_prompt" in capsys.readouterr().err
    section = {"items": str(items), "labels": str(labels), "judge_verdicts": str(labels)}
    with pytest.raises(SystemExit, match="item '3' is not in the judged items"):
        run_stage(tmp_path, section, monkeypatch)
    section["label_order"] = ["yes"]
    section["labels"] = str(_write(tmp_path / "ok.jsonl", _long({"1": ["yes", "no"], "2": ["no", "no"]})))
    with pytest.raises(SystemExit, match="label 'no' is not one of label_order"):
        run_stage(tmp_path, section, monkeypatch)
    assert not (tmp_path / "calib").exists()  # nothing half-written


def test_the_teacher_judges_the_items_itself(tmp_path, monkeypatch):
    """judge_prompt: the (offline) teacher judges each item through the engine; verdicts are written."""
    prompt = tmp_path / "judge_reflection.yaml"
    shutil.copy(REPO_ROOT / "examples/reflections/prompts/judge_reflection.yaml", prompt)
    utterance = "My boss keeps piling extra shifts on me and I feel exhausted."
    good = "It sounds like your boss keeps piling extra shifts on you, and you feel exhausted."
    rows = [
        {"id": "good", "context": "", "utterance": utterance, "reflection": good},
        {
            "id": "advice",
            "context": "",
            "utterance": utterance,
            "reflection": "You should talk to your boss.",
        },
        {"id": "question", "context": "", "utterance": utterance, "reflection": "Why do you work so much?"},
        {
            "id": "good2",
            "context": "",
            "utterance": utterance,
            "reflection": good.replace("It sounds like", "So"),
        },
    ]
    items = _write(tmp_path / "items.jsonl", rows)
    labels = tmp_path / "labels.csv"
    votes = {"good": "ok ok ok", "advice": "bad bad ok", "question": "bad bad bad", "good2": "ok bad ok"}
    labels.write_text(
        "id,rater,label\n"
        + "".join(f"{i},r{k},{v}\n" for i, vs in votes.items() for k, v in enumerate(vs.split()))
    )
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", str(tmp_path / "cache"))
    section = {"items": str(items), "labels": str(labels), "judge_prompt": str(prompt)}
    section |= {
        "verdict_labels": {"true": "ok", "false": "bad"},
        "label_order": ["ok", "bad"],
        "resamples": 100,
    }
    out = run_stage(tmp_path, section, monkeypatch)
    verdicts = {
        r["id"]: r["label"] for r in map(json.loads, (out / "judge_verdicts.jsonl").read_text().splitlines())
    }
    assert verdicts == {"good": "ok", "advice": "bad", "question": "bad", "good2": "ok"}
    result = json.loads((out / "calibration.json").read_text())
    assert result["kappa"]["estimate"] == 1.0 and result["n_items"] == 4
    assert result["judge"]["n_requests"] == 4 and result["judge"]["n_rejected"] == 0
