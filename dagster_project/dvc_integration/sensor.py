"""A sensor that reconciles runs made outside Dagster (`dvc repro`, `dvc pull`, `git checkout`).

Each tick compares every dvc.lock entry of every recipe (and the provenance it implies) with what Dagster last
recorded for that asset; where they differ it reports a runless materialization carrying the
code version, data version and input data versions derived from dvc.lock, so Dagster's stale/fresh
view equals `dvc status`.
"""

import subprocess
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    INPUT_EVENT_POINTER_TAG_PREFIX,
    NULL_EVENT_POINTER,
)

from dagster_project.dvc_integration.assets import (
    LOCK_ENTRY_TAG,
    SOURCE_TAG,
    as_project,
    materialization_parts,
)
from dagster_project.dvc_integration.checks import check_definitions, check_evaluations
from dagster_project.dvc_integration.project import DvcProject, Recipe
from dagster_project.dvc_integration.translator import DvcTranslator
from dagster_project.dvc_integration.versions import (
    code_version_from_lock,
    input_versions_from_lock,
    read_lock,
)


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def expected_events(
    root: Path, recipe: Recipe, translator: DvcTranslator, instance: dg.DagsterInstance
) -> list[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Runless materializations for every stage of `recipe` whose dvc.lock entry Dagster has not
    recorded, each followed by the evaluations of the stage's declared checks (`meta.dagster.checks`)."""
    lock = read_lock(root, recipe)
    stages = recipe.stages
    by_name = {s.name: s for s in stages}
    commit = None
    events = []
    for stage in stages:
        entry = lock.get(stage.name)
        if not entry:
            continue
        key = translator.get_asset_key(stage)
        data_version, tags, metadata = materialization_parts(root, recipe, stage)
        tags[CODE_VERSION_TAG] = code_version_from_lock(stage, stages, entry)
        if data_version:
            tags[DATA_VERSION_TAG] = data_version
            tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
        for up_name, version in input_versions_from_lock(stage, stages, entry, lock, root).items():
            up_key = translator.get_asset_key(by_name[up_name])
            tags[f"{INPUT_DATA_VERSION_TAG_PREFIX}/{up_key.to_user_string()}"] = version
            # Dagster reads provenance only with an event pointer; unpartitioned staleness compares
            # data versions, so the upstream's latest event (or NULL) is an honest pointer.
            records = instance.fetch_materializations(up_key, limit=1).records
            pointer = str(records[0].storage_id) if records else NULL_EVENT_POINTER
            tags[f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{up_key.to_user_string()}"] = pointer
        latest = instance.get_latest_materialization_event(key)
        recorded = (
            dict(latest.asset_materialization.tags or {}) if latest and latest.asset_materialization else {}
        )
        keys = [LOCK_ENTRY_TAG, CODE_VERSION_TAG, DATA_VERSION_TAG] + [
            k for k in tags if k.startswith(INPUT_DATA_VERSION_TAG_PREFIX)
        ]
        if all(recorded.get(k) == tags.get(k) for k in keys):
            continue
        commit = commit or _git_commit(root)
        tags[SOURCE_TAG] = "dvc.lock"
        if commit:
            tags["dvc/git_commit"] = commit
        events.append(dg.AssetMaterialization(asset_key=key, tags=tags, metadata=metadata))
        events.extend(check_evaluations(root / stage.wdir, key, check_definitions(stage.dagster_meta)))
    return events


def build_dvc_lock_sensor(
    project: "DvcProject | str | Path",
    translator: DvcTranslator | None = None,
    minimum_interval_seconds: int = 15,
) -> dg.SensorDefinition:
    """The one reconciling sensor for every recipe that loaded (running by default): each tick reads
    each recipe's dvc.lock."""
    project = as_project(project)
    translator = translator or DvcTranslator()
    recipes = project.ok_recipes
    asset_keys = [translator.get_asset_key(s) for r in recipes for s in r.stages]

    @dg.sensor(
        name="dvc_lock_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=asset_keys or None,  # no recipe loaded: no target
        description="Reports runless materializations for dvc.lock entries made outside Dagster, "
        f"for the recipes {', '.join(r.name for r in recipes) or '(none)'}.",
    )
    def dvc_lock_sensor(context: dg.SensorEvaluationContext):
        events = []
        for recipe in recipes:
            found = expected_events(project.root, recipe, translator, context.instance)
            if found:
                n = sum(isinstance(e, dg.AssetMaterialization) for e in found)
                context.log.info(f"recipe {recipe.name}: reconciling {n} asset(s) from {recipe.dvc_lock}")
            events.extend(found)
        if not events:
            return dg.SkipReason("every recipe's dvc.lock matches what Dagster recorded")
        return dg.SensorResult(asset_events=events)

    return dvc_lock_sensor
