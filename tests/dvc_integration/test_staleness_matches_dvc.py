"""Dagster's stale/fresh view of every asset equals `dvc status`, per recipe, whoever ran the stages."""

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from helpers import dvc, executed, set_param

from dagster_project.dvc_integration import (
    DvcCliResource,
    build_dvc_assets,
    build_dvc_lock_sensor,
    load_project,
)
from dagster_project.dvc_integration.translator import DvcTranslator

ROOT_ASSETS = {"corpus", "synthesized", "deduped", "student", "eval_report"}


def dagster_not_fresh(
    instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition], recipe: str
) -> set[str]:
    """The assets of `recipe` that Dagster does not consider fresh, as `<recipe>/<asset>`."""
    resolver = get_stale_status_resolver(instance, assets)
    return {
        key.to_user_string()
        for asset in assets
        for key in asset.keys
        if key.path[0] == recipe and resolver.get_status(key) != StaleStatus.FRESH
    }


def dvc_not_fresh(root: Path, recipe: str) -> set[str]:
    """The assets of `recipe` whose stages `dvc status <its dvc.yaml>` lists, as `<recipe>/<asset>`."""
    project = load_project(root, validate_params=False, code_versions=False)
    r = project.recipe(recipe)
    out = dvc("status", "--json", r.dvc_yaml, cwd=root).stdout
    changed = json.loads(out[out.index("{") :]) if "{" in out else {}
    keys = {s.address: DvcTranslator().get_asset_key(s).to_user_string() for s in r.stages}
    # `dvc status` names the root's stages bare and the others `<dvc.yaml path>:<stage>`.
    return {keys[name if ":" in name else f"dvc.yaml:{name}"] for name in changed}


def prefixed(recipe: str, names: set[str]) -> set[str]:
    return {f"{recipe}/{n}" for n in names}


def sensor_tick(root: Path, instance: dg.DagsterInstance) -> int:
    """Evaluate the reconciling sensor and store what it reports, as the daemon would."""
    sensor = build_dvc_lock_sensor(root)
    result = sensor(dg.build_sensor_context(instance=instance))
    if isinstance(result, dg.SkipReason):
        return 0
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return len(result.asset_events)


def test_stale_status_equals_dvc_status(fixture_repo, instance):
    root = fixture_repo
    everything = prefixed("default", ROOT_ASSETS)
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets, "default") == dvc_not_fresh(root, "default") == everything

    # A CLI run outside Dagster, then one sensor tick: everything fresh in both views.
    dvc("repro", cwd=root)
    assert sensor_tick(root, instance) == 5
    assert dagster_not_fresh(instance, assets, "default") == dvc_not_fresh(root, "default") == set()
    assert sensor_tick(root, instance) == 0, "a second tick must find nothing new"

    # A param edit: only the stage that declares it is stale (downstream waits for new data).
    set_param(root, "dedup", "keep", 2)
    assets = build_dvc_assets(root)  # a code location reload
    assert (
        dagster_not_fresh(instance, assets, "default")
        == dvc_not_fresh(root, "default")
        == {"default/deduped"}
    )

    # CLI repro + tick again.
    dvc("repro", cwd=root)
    assert sensor_tick(root, instance) == 3
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets, "default") == dvc_not_fresh(root, "default") == set()

    # A rebuild through Dagster whose output bytes do not change: downstream stays fresh.
    executed(root)
    set_param(root, "dedup", "comment", "same output")
    assets = build_dvc_assets(root)
    assert (
        dagster_not_fresh(instance, assets, "default")
        == dvc_not_fresh(root, "default")
        == {"default/deduped"}
    )
    result = dg.materialize(
        assets,
        selection="key:default/deduped",
        instance=instance,
        resources={"dvc": DvcCliResource(project_dir=str(root))},
    )
    assert result.success
    assert executed(root) == ["dedup"]
    assets = build_dvc_assets(root)
    assert dagster_not_fresh(instance, assets, "default") == dvc_not_fresh(root, "default") == set()
    assert sensor_tick(root, instance) == 0, "a Dagster run already recorded dvc.lock's entry"


def test_stale_status_equals_dvc_status_per_recipe(recipes_repo, instance):
    root = recipes_repo
    alpha, beta = root / "examples/alpha", root / "examples/beta"
    everything = {
        "default": prefixed("default", ROOT_ASSETS),
        "alpha": prefixed("alpha", {"corpus", "synthesized", "score"}),
        "beta": prefixed("beta", {"corpus", "shard_1", "shard_2"}),
    }

    def assert_views(expected: dict[str, set[str]]) -> None:
        assets = build_dvc_assets(root)  # a code location reload
        for recipe, stale in expected.items():
            assert dagster_not_fresh(instance, assets, recipe) == dvc_not_fresh(root, recipe) == stale, recipe

    assert_views(everything)

    # One recipe built with the CLI: only its assets become fresh, in both views.
    dvc("repro", "examples/alpha/dvc.yaml", cwd=root)
    assert sorted(executed(alpha)) == ["retrieve", "synthesize"]
    assert sensor_tick(root, instance) == 3
    assert_views({**everything, "alpha": set()})
    assert not (root / "dvc.lock").exists() and not (beta / "dvc.lock").exists()

    # Every recipe (`dvc repro -P`), then a param edit in alpha: only alpha's stage that reads it.
    dvc("repro", "-P", cwd=root)
    assert sensor_tick(root, instance) == 5 + 3
    assert_views({"default": set(), "alpha": set(), "beta": set()})
    set_param(alpha, "synthesize", "suffix", "??")
    assert_views({"default": set(), "alpha": {"alpha/synthesized"}, "beta": set()})

    # Rebuilt through Dagster: the stage runs in its recipe's folder and updates that dvc.lock.
    executed(alpha)
    result = dg.materialize(
        build_dvc_assets(root),
        selection="key:alpha/synthesized",
        instance=instance,
        resources={"dvc": DvcCliResource(project_dir=str(root))},
    )
    assert result.success and executed(alpha) == ["synthesize"]
    assert "??" in (alpha / "assets/synthesized/examples.txt").read_text()
    # Its output changed, so alpha's score (downstream) is stale in both views; a CLI repro settles it.
    assert_views({"default": set(), "alpha": {"alpha/score"}, "beta": set()})
    dvc("repro", "examples/alpha/dvc.yaml", cwd=root)
    assert sensor_tick(root, instance) == 1
    assert_views({"default": set(), "alpha": set(), "beta": set()})

    # A data edit in beta: its foreach entries wait for new data, the stage reading the file is stale.
    (beta / "data/in.txt").write_text("changed\n")
    assert_views({"default": set(), "alpha": set(), "beta": {"beta/corpus"}})


def test_materialization_reports_versions_and_metadata(fixture_repo, instance):
    assets = build_dvc_assets(fixture_repo)
    result = dg.materialize(
        assets, instance=instance, resources={"dvc": DvcCliResource(project_dir=str(fixture_repo))}
    )
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey(["default", "eval_report"]))
    mat = event.asset_materialization
    assert mat.tags["dagster/data_version"]
    assert mat.tags["dvc/stage"] == "evaluate" and mat.tags["dvc/recipe"] == "default"
    assert mat.metadata["metrics/k"].value == 5
    # Materializing again when DVC skips every stage still reports each asset, same data version.
    before = mat.tags["dagster/data_version"]
    executed(fixture_repo)
    result = dg.materialize(
        assets, instance=instance, resources={"dvc": DvcCliResource(project_dir=str(fixture_repo))}
    )
    assert executed(fixture_repo) == []
    key = dg.AssetKey(["default", "eval_report"])
    again = instance.get_latest_materialization_event(key).asset_materialization
    assert again.tags["dagster/data_version"] == before


@pytest.mark.parametrize("shape", ["folders", "files"])
def test_cli_build_then_sensor_leaves_every_asset_fresh(fixture_repo, instance, shape):
    """Built with the CLI, then the definitions load and the sensor ticks: every asset is fresh and none
    unsynced, whether train/evaluate depend on dedup's whole output folder or on a file inside it."""
    root = fixture_repo
    if shape == "files":  # deps on a file inside the upstream's output folder (like the root recipe's)
        text = (root / "dvc.yaml").read_text()
        text = text.replace("deps: [steps.py, assets/deduped]", "deps: [steps.py, assets/deduped/train.txt]")
        text = text.replace(
            "deps: [steps.py, assets/student, assets/deduped]",
            "deps: [steps.py, assets/student, assets/deduped/train.txt]",
        )
        (root / "dvc.yaml").write_text(text)
    dvc("repro", cwd=root)
    assets = build_dvc_assets(root)
    assert sensor_tick(root, instance) == 5
    resolver = get_stale_status_resolver(instance, assets)
    for asset in assets:
        for key in asset.keys:
            assert resolver.get_status(key) == StaleStatus.FRESH, (key, resolver.get_stale_causes(key))
    assert dvc_not_fresh(root, "default") == set()

    # dedup rebuilt alone with different bytes: what reads it is stale in both views.
    set_param(root, "dedup", "keep", 2)
    dvc("repro", "--single-item", "dedup", cwd=root)
    assert sensor_tick(root, instance) >= 1  # dedup (and what now records a different consumed version)
    assert (
        dagster_not_fresh(instance, build_dvc_assets(root), "default")
        == dvc_not_fresh(root, "default")
        == {"default/student", "default/eval_report"}
    )
