"""Dagster's stale/fresh view of every asset equals `dvc status`, whoever ran the stages."""

import json

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from helpers import dvc, executed, set_param

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets, build_dvc_lock_sensor
from dagster_project.dvc_integration.project import load_stages
from dagster_project.dvc_integration.translator import DvcTranslator


def dagster_not_fresh(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition]) -> set[str]:
    resolver = get_stale_status_resolver(instance, assets)
    return {
        key.to_user_string()
        for asset in assets
        for key in asset.keys
        if resolver.get_status(key) != StaleStatus.FRESH
    }


def dvc_not_fresh(root) -> set[str]:
    out = dvc("status", "--json", cwd=root).stdout
    changed = json.loads(out[out.index("{") :]) if "{" in out else {}
    by_stage = {s.name: DvcTranslator().get_asset_key(s).to_user_string() for s in load_stages(root)}
    return {by_stage[name.split(":")[-1]] for name in changed}


def sensor_tick(root, instance) -> int:
    """Evaluate the reconciling sensor and store what it reports, as the daemon would."""
    sensor = build_dvc_lock_sensor(root)
    result = sensor(dg.build_sensor_context(instance=instance))
    if isinstance(result, dg.SkipReason):
        return 0
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return len(result.asset_events)


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


def test_stale_status_equals_dvc_status(fixture_repo, instance):
    root = fixture_repo
    everything = {"corpus", "synthesized", "deduped", "student", "eval_report"}
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets) == dvc_not_fresh(root) == everything

    # A CLI run outside Dagster, then one sensor tick: everything fresh in both views.
    dvc("repro", cwd=root)
    assert sensor_tick(root, instance) == 5
    assert dagster_not_fresh(instance, assets) == dvc_not_fresh(root) == set()
    assert sensor_tick(root, instance) == 0, "a second tick must find nothing new"

    # A param edit: only the stage that declares it is stale (downstream waits for new data).
    set_param(root, "dedup", "keep", 2)
    assets = build_dvc_assets(root)  # a code location reload
    assert dagster_not_fresh(instance, assets) == dvc_not_fresh(root) == {"deduped"}

    # CLI repro + tick again.
    dvc("repro", cwd=root)
    assert sensor_tick(root, instance) == 3
    assert dagster_not_fresh(instance, assets := build_dvc_assets(root)) == dvc_not_fresh(root) == set()

    # A rebuild through Dagster whose output bytes do not change: downstream stays fresh.
    executed(root)
    set_param(root, "dedup", "comment", "same output")
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets) == dvc_not_fresh(root) == {"deduped"}
    result = dg.materialize(
        assets,
        selection="key:deduped",
        instance=instance,
        resources={"dvc": DvcCliResource(project_dir=str(root))},
    )
    assert result.success
    assert executed(root) == ["dedup"]
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets) == dvc_not_fresh(root) == set()
    assert sensor_tick(root, instance) == 0, "a Dagster run already recorded dvc.lock's entry"


def test_materialization_reports_versions_and_metadata(fixture_repo, instance):
    assets = build_dvc_assets(fixture_repo)
    result = dg.materialize(
        assets, instance=instance, resources={"dvc": DvcCliResource(project_dir=str(fixture_repo))}
    )
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey("eval_report"))
    mat = event.asset_materialization
    assert mat.tags["dagster/data_version"]
    assert mat.tags["dvc/stage"] == "evaluate"
    assert mat.metadata["metrics/k"].value == 5
    # Materializing again when DVC skips every stage still reports each asset, same data version.
    before = mat.tags["dagster/data_version"]
    executed(fixture_repo)
    result = dg.materialize(
        assets, instance=instance, resources={"dvc": DvcCliResource(project_dir=str(fixture_repo))}
    )
    assert executed(fixture_repo) == []
    again = instance.get_latest_materialization_event(dg.AssetKey("eval_report")).asset_materialization
    assert again.tags["dagster/data_version"] == before
