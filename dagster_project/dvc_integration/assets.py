"""Build one Dagster asset per DVC stage of every recipe. Materializing it runs
`dvc --wait-for-lock repro --single-item <dvc.yaml path>:<stage>` from the repo root."""

from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration.checks import check_definitions, check_results, check_specs
from dagster_project.dvc_integration.metadata import output_metadata
from dagster_project.dvc_integration.project import DvcProject, DvcStage, Recipe
from dagster_project.dvc_integration.resource import DvcCliResource
from dagster_project.dvc_integration.translator import DvcTranslator, dagster_name
from dagster_project.dvc_integration.versions import data_version_from_lock, lock_entry_hash, read_lock

LOCK_ENTRY_TAG = "dvc/lock_entry"
STAGE_TAG = "dvc/stage"
RECIPE_TAG = "dvc/recipe"
SOURCE_TAG = "dvc/source"


def as_project(project: "DvcProject | str | Path") -> DvcProject:
    """A loaded project, loading it from a repo root if given a path."""
    return project if isinstance(project, DvcProject) else DvcProject.load(project)


def materialization_parts(
    root: Path, recipe: Recipe, stage: DvcStage
) -> tuple[str | None, dict[str, str], dict]:
    """Data version, provenance tags and metadata of a stage as its recipe's dvc.lock and outputs say now."""
    entry = read_lock(root, recipe).get(stage.name)
    tags = {STAGE_TAG: dagster_name(stage.name), RECIPE_TAG: recipe.name}  # tag values: [A-Za-z0-9_.-]
    lock_hash = lock_entry_hash(entry)
    if lock_hash:
        tags[LOCK_ENTRY_TAG] = lock_hash
    preview = stage.dagster_meta.get("preview")
    return data_version_from_lock(entry), tags, output_metadata(root, stage.outs, preview)


def _build_one(recipe: Recipe, stage: DvcStage, spec: dg.AssetSpec, pool: str | None) -> dg.AssetsDefinition:
    checks = check_definitions(stage.dagster_meta)

    @dg.multi_asset(
        specs=[spec],
        check_specs=check_specs(spec.key, checks),
        name=f"dvc__{dagster_name(recipe.name)}__{dagster_name(stage.name)}",
        pool=pool,
        op_tags={STAGE_TAG: dagster_name(stage.name), RECIPE_TAG: dagster_name(recipe.name)},
    )
    def _asset(context: dg.AssetExecutionContext, dvc: DvcCliResource):
        root = Path(dvc.project_dir)
        context.log.info(f"dvc --wait-for-lock repro --single-item {stage.address}")
        dvc.repro(stage.address, log=context.log.info)
        # Always report, also when DVC skipped the stage or restored it from the run cache:
        # versions come from dvc.lock, not from what the command printed.
        data_version, tags, metadata = materialization_parts(root, recipe, stage)
        yield dg.MaterializeResult(
            asset_key=spec.key,
            data_version=dg.DataVersion(data_version) if data_version else None,
            tags={**tags, SOURCE_TAG: "dagster"},
            metadata=metadata,
        )
        # Checks declared in dvc.yaml `meta.dagster.checks`, over the outputs as they are now
        # (check files are relative to the stage's folder, like every path in its dvc.yaml).
        yield from check_results(root / stage.wdir, spec.key, checks)

    return _asset


def build_recipe_assets(recipe: Recipe, translator: DvcTranslator | None = None) -> list[dg.AssetsDefinition]:
    """One asset per stage of one (loaded) recipe. Raises if two of its stages map to one asset key."""
    translator = translator or DvcTranslator()
    by_name = {s.name: s for s in recipe.stages}
    seen: dict[dg.AssetKey, str] = {}
    assets = []
    for stage in recipe.stages:
        spec = translator.get_spec(stage, by_name, recipe.code_versions.get(stage.name))
        if spec.key in seen:
            key = spec.key.to_user_string()
            raise ValueError(
                f"stages {seen[spec.key]!r} and {stage.name!r} both map to asset {key!r}"
                " (their outputs lie in folders of one name): rename an output folder"
            )
        seen[spec.key] = stage.name
        assets.append(_build_one(recipe, stage, spec, translator.get_pool(stage)))
    return assets


def build_dvc_assets(
    project: "DvcProject | str | Path", translator: DvcTranslator | None = None
) -> list[dg.AssetsDefinition]:
    """One asset per stage of every recipe that loaded (a recipe that failed gets none; see
    `errors.build_recipe_error_sensors`)."""
    project = as_project(project)
    return [a for recipe in project.ok_recipes for a in build_recipe_assets(recipe, translator)]
