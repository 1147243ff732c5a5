"""One multi-asset per recipe: a run of selected assets is one `dvc repro --single-item` over exactly
those stages in dependency order, each reported as DVC finishes it; a failing stage reports the ones
that finished and fails the rest by name. (Through the Python API, which sends the same asset
selection as the UI's GraphQL launch; tests/dvc_integration/test_webserver.py covers the launch.)"""

import dagster as dg
from helpers import dvc, executed, set_param

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets
from dagster_project.dvc_integration.assets import PULLED, RECOMPUTED, RUN_CACHE, UP_TO_DATE, stage_events

KEYS = {
    n: dg.AssetKey(["default", n]) for n in ("corpus", "synthesized", "deduped", "student", "eval_report")
}


def _materialize(root, instance, *names, raise_on_error=True):
    return dg.materialize(
        build_dvc_assets(root),
        selection=[KEYS[n] for n in names],
        instance=instance,
        resources={"dvc": DvcCliResource(project_dir=str(root))},
        raise_on_error=raise_on_error,
    )


def test_one_asset_per_stage_in_one_multi_asset_per_recipe(fixture_repo):
    assets = build_dvc_assets(fixture_repo)
    assert len(assets) == 1 and assets[0].can_subset
    assert set(assets[0].keys) == set(KEYS.values())


def test_a_subset_run_executes_exactly_the_selected_stages_in_one_dvc_call(fixture_repo, instance):
    root = fixture_repo
    dvc("repro", cwd=root)
    executed(root)
    set_param(root, "synthesize", "suffix", "?")
    set_param(root, "train", "lr", 0.2)
    result = _materialize(root, instance, "student", "synthesized")  # two of five, out of order
    assert result.success
    assert executed(root) == ["synthesize", "train"]  # exactly those, upstream first
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert sum(m.startswith("dvc --wait-for-lock repro") for m in logs) == 1
    materialized = [e.asset_key for e in result.get_asset_materialization_events()]
    assert materialized == [KEYS["synthesized"], KEYS["student"]]  # in the order DVC finished them
    assert all(
        e.materialization.tags["dagster/data_version"] for e in result.get_asset_materialization_events()
    )
    assert instance.get_latest_materialization_event(KEYS["deduped"]) is None

    # Up to date: DVC skips both, and both are still reported with their data versions.
    again = _materialize(root, instance, "synthesized", "student")
    assert executed(root) == [] and len(again.get_asset_materialization_events()) == 2


def test_a_failing_stage_reports_the_finished_ones_and_fails_the_rest(fixture_repo, instance):
    root = fixture_repo
    text = (
        (root / "dvc.yaml")
        .read_text()
        .replace("cmd: python steps.py train", "cmd: python steps.py train && false")
    )
    (root / "dvc.yaml").write_text(text)
    result = _materialize(root, instance, "corpus", "synthesized", "deduped", "student", "eval_report",
                          raise_on_error=False)  # fmt: skip
    assert not result.success
    assert executed(root) == ["retrieve", "synthesize", "dedup", "train"]
    done = {e.asset_key for e in result.get_asset_materialization_events()}
    assert done == {KEYS["corpus"], KEYS["synthesized"], KEYS["deduped"]}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "not materialized: train, evaluate" in failure.event_specific_data.error.to_string()


def test_stage_events_names_each_stage_when_dvc_is_done_with_it():
    lines = [
        "Stage 'retrieve' didn't change, skipping",
        "Running stage 'examples/x/dvc.yaml:score@small':",
        "> python score.py small",
        "Updating lock file 'examples/x/dvc.yaml'",
        "Stage 'examples/x/dvc.yaml:score@big' is cached - skipping run, checking out outputs",
        "Running stage 'train':",
    ]
    names = {"retrieve": "retrieve", "train": "train"} | {
        f"examples/x/dvc.yaml:score@{k}": f"score@{k}" for k in ("small", "big")
    }
    done = [(name, outcome) for line, name, outcome in stage_events(lines, names) if name]
    assert done == [
        ("retrieve", UP_TO_DATE),
        ("score@small", RECOMPUTED),
        ("score@big", RUN_CACHE),
        ("train", RECOMPUTED),
    ]


def test_stage_events_tell_pulled_from_recomputed_after_a_failed_pull():
    lines = [
        "Pulling data for stage: 'retrieve'",
        "Pulling data for stage: 'train'",
        "WARNING: Some of the cache files do not exist neither locally nor on remote.",
        "Unable to pull data for stage: 'train'",
        "Running stage 'train':",
        "> python train.py",
    ]
    done = [(n, o) for _, n, o in stage_events(lines, {"retrieve": "retrieve", "train": "train"}) if n]
    assert done == [("retrieve", PULLED), ("train", RECOMPUTED)]
