"""Asset checks declared in dvc.yaml (`meta.dagster.checks`): the safe assertion language, and a passing and
a failing check reported both by a Dagster materialization and by the sensor for a `dvc repro` run."""

import json

import dagster as dg
import pytest
import yaml
from helpers import dvc, run

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets, build_dvc_lock_sensor
from dagster_project.dvc_integration.checks import CheckDefinition, CheckError, evaluate_assertion

METRICS = {
    "student": {"token_f1": 0.5, "exact_match": 0.25},
    "baseline": {"token_f1": 0.125, "exact_match": 0.25},
    "n_test": 8,
    "name": "demo",
    "history": [{"loss": 2.0}, {"loss": 1.5}],
    "flag": True,
    "bad": float("nan"),
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("student.token_f1 > baseline.token_f1", True),
        ("student.exact_match > baseline.exact_match", False),
        ("student.exact_match >= baseline.exact_match", True),
        ("student.token_f1 - baseline.token_f1 >= 0.375", True),  # 0.5 - 0.125 = 0.375 exactly
        ("student.token_f1 >= 2 * baseline.token_f1 + 0.3", False),  # 0.5 >= 0.55
        ("n_test == 8 and name == 'demo'", True),
        ("not (n_test < 8) or flag == false", True),
        ("history.1.loss < history.0.loss", True),
        ("-student.token_f1 < 0", True),
        ("flag", True),
        ("(1 + 2) * 3 == 9", True),
    ],
)
def test_assertion_language(expression, expected):
    passed, _ = evaluate_assertion(expression, METRICS)
    assert passed is expected


def test_assertion_records_the_values_it_read():
    _, read = evaluate_assertion("student.token_f1 > baseline.token_f1", METRICS)
    assert read == {"student.token_f1": 0.5, "baseline.token_f1": 0.125}


@pytest.mark.parametrize(
    "expression",
    [
        "student.missing > 0",  # unknown path
        "bad > 0",  # NaN never passes
        "name > 1",  # a string is not a number
        "n_test >",  # incomplete
        "__import__('os')",  # no calls: '(' after a path is unexpected
        "n_test ; 1",  # unknown character
        "1 / 0 > 0",
    ],
)
def test_bad_assertions_raise(expression):
    with pytest.raises(CheckError):
        evaluate_assertion(expression, METRICS)


def test_check_definition_validates_its_entry():
    ok = CheckDefinition.from_meta({"name": "c", "file": "m.json", "assert": "a > 1", "severity": "warn"})
    assert ok.dagster_severity == dg.AssetCheckSeverity.WARN
    with pytest.raises(ValueError):
        CheckDefinition.from_meta({"name": "c", "assert": "a > 1"})
    with pytest.raises(ValueError):
        CheckDefinition.from_meta({"name": "c", "file": "m.json", "assert": "a > 1", "severity": "fatal"})


def _add_checks(root):
    """The fixture's evaluate stage writes metrics.json {"chars": N > 0, "k": 5}: one passing, one failing."""
    path = root / "dvc.yaml"
    data = yaml.safe_load(path.read_text())
    data["stages"]["evaluate"]["meta"]["dagster"]["checks"] = [
        {"name": "has_chars", "file": "assets/eval_report/metrics.json", "assert": "chars > 0"},
        {
            "name": "k_is_large",
            "file": "assets/eval_report/metrics.json",
            "assert": "k > 10",
            "severity": "warn",
        },
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run(["git", "commit", "-qam", "checks"], cwd=root)


def _latest_check(instance, name):
    key = dg.AssetCheckKey(dg.AssetKey(["default", "eval_report"]), name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    assert record is not None and record.event is not None, name
    return record.event.dagster_event.event_specific_data


def test_materialization_reports_passing_and_failing_checks(fixture_repo, instance):
    _add_checks(fixture_repo)
    assets = build_dvc_assets(fixture_repo)
    eval_asset = next(a for a in assets if dg.AssetKey(["default", "eval_report"]) in a.keys)
    assert {k.name for k in eval_asset.check_keys} == {"has_chars", "k_is_large"}
    result = dg.materialize(
        assets, instance=instance, resources={"dvc": DvcCliResource(project_dir=str(fixture_repo))}
    )
    assert result.success  # a failing non-blocking check does not fail the run
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["has_chars"].passed is True
    assert evaluations["k_is_large"].passed is False
    assert evaluations["k_is_large"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["k_is_large"].metadata["k"].value == 5.0
    assert evaluations["k_is_large"].metadata["assert"].value == "k > 10"


def test_sensor_reports_checks_for_runs_outside_dagster(fixture_repo, instance):
    _add_checks(fixture_repo)
    dvc("repro", cwd=fixture_repo)
    sensor = build_dvc_lock_sensor(fixture_repo)
    result = sensor(dg.build_sensor_context(instance=instance))
    checks = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert {(c.check_name, c.passed) for c in checks} == {("has_chars", True), ("k_is_large", False)}
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    assert _latest_check(instance, "has_chars").passed is True
    assert _latest_check(instance, "k_is_large").passed is False


def test_headline_numbers_come_first_in_metadata(tmp_path):
    from dagster_project.dvc_integration.metadata import output_metadata

    deep = {f"cat{i}": {"n": i, "student": {"token_f1": 0.1, "exact_match": 0.0}} for i in range(20)}
    metrics = {"student": {"token_f1": 0.5}, "baseline": {"token_f1": 0.1}, "n_test": 3, "per_category": deep}
    (tmp_path / "out").mkdir()
    (tmp_path / "out/metrics.json").write_text(json.dumps(metrics))
    meta = output_metadata(tmp_path, ("out",))
    assert meta["metrics/student.token_f1"].value == 0.5
    assert meta["metrics/baseline.token_f1"].value == 0.1 and meta["metrics/n_test"].value == 3


def test_step_curves_become_a_table_of_sparklines(tmp_path):
    from dagster_project.dvc_integration.metadata import output_metadata, read_curve, sparkline

    curves = tmp_path / "out/dvclive/plots/metrics/train"
    curves.mkdir(parents=True)
    loss = [4.0, 3.0, 2.5, 2.0, 1.0, 1.5]
    (curves / "loss.tsv").write_text(
        "timestamp\tstep\tloss\n" + "".join(f"17000{i}\t{i + 1}\t{v}\n" for i, v in enumerate(loss))
    )
    (tmp_path / "out/headline.csv").write_text("metric,system,value\nf1,student,0.5\n")  # not a curve
    (tmp_path / "out/torn.tsv").write_text("step\tloss\n1\t2.0\n2\t")  # a torn row: not shown
    assert read_curve(curves / "loss.tsv") == ("loss", [1, 2, 3, 4, 5, 6], loss)
    assert read_curve(tmp_path / "out/headline.csv") is None and read_curve(tmp_path / "out/torn.tsv") is None
    # Lowest value -> lowest block, highest -> highest; 4.0..1.0 in 8 levels.
    assert sparkline(loss) == "█▆▅▃▁▂"
    assert sparkline([float(i) for i in range(400)], width=40) == "".join(c * 5 for c in "▁▂▃▄▅▆▇█")
    table = output_metadata(tmp_path, ("out",))["curves"].value
    assert table.splitlines()[2] == (
        "| `out/dvclive/plots/metrics/train/loss.tsv` | 6 | 4 | 1.5 | 1 (step 5) | `█▆▅▃▁▂` |"
    )
    assert len(table.splitlines()) == 3
    # Not curves, or not drawable, and never a crash: a step of inf, values whose range overflows, NaN.
    (tmp_path / "out/inf_step.csv").write_text("step,loss\n0,1\ninf,2\n")
    (tmp_path / "out/huge.csv").write_text("step,loss\n0,-1e308\n1,1e308\n\n")  # blank line: skipped
    (tmp_path / "out/nan.tsv").write_text("step\tloss\n0\tnan\n1\tnan\n")
    assert read_curve(tmp_path / "out/inf_step.csv") is None
    assert read_curve(tmp_path / "out/huge.csv") == ("loss", [0, 1], [-1e308, 1e308])
    assert sparkline([-1e308, 1e308]) == "" and sparkline([float("nan")] * 3) == ""
    rows = output_metadata(tmp_path, ("out",))["curves"].value.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| `out/dvclive/plots/metrics/train/loss.tsv`",
                                                 "| `out/huge.csv`", "| `out/nan.tsv`"]  # fmt: skip
    assert rows[1].endswith("| n/a |") and rows[2].endswith("| n/a |")
