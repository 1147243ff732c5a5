"""Build one Dagster asset per DVC stage. Materializing it runs `dvc repro --single-item <stage>`."""

from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration.checks import check_definitions, check_results, check_specs
from dagster_project.dvc_integration.metadata import output_metadata
from dagster_project.dvc_integration.project import (
    DvcStage,
    code_versions_from_workspace,
    data_version_from_lock,
    load_stages,
    lock_entry_hash,
    read_lock,
)
from dagster_project.dvc_integration.resource import DvcCliResource
from dagster_project.dvc_integration.translator import DvcTranslator

LOCK_ENTRY_TAG = "dvc/lock_entry"
STAGE_TAG = "dvc/stage"
SOURCE_TAG = "dvc/source"


def materialization_parts(root: Path, stage: DvcStage) -> tuple[str | None, dict[str, str], dict]:
    """Data version, provenance tags and metadata of a stage as dvc.lock and its outputs say now."""
    entry = read_lock(root).get(stage.name)
    tags = {STAGE_TAG: stage.name}
    lock_hash = lock_entry_hash(entry)
    if lock_hash:
        tags[LOCK_ENTRY_TAG] = lock_hash
    preview = stage.dagster_meta.get("preview")
    return data_version_from_lock(entry), tags, output_metadata(root, stage.outs, preview)


def _build_one(root: Path, stage: DvcStage, spec: dg.AssetSpec, pool: str | None) -> dg.AssetsDefinition:
    checks = check_definitions(stage.dagster_meta)

    @dg.multi_asset(
        specs=[spec],
        check_specs=check_specs(spec.key, checks),
        name=f"dvc_{stage.name}",
        pool=pool,
        op_tags={"dvc/stage": stage.name},
    )
    def _asset(context: dg.AssetExecutionContext, dvc: DvcCliResource):
        context.log.info(f"dvc --wait-for-lock repro --single-item {stage.name}")
        dvc.repro(stage.name, log=context.log.info)
        # Always report, also when DVC skipped the stage or restored it from the run cache:
        # versions come from dvc.lock, not from what the command printed.
        data_version, tags, metadata = materialization_parts(Path(dvc.project_dir), stage)
        yield dg.MaterializeResult(
            asset_key=spec.key,
            data_version=dg.DataVersion(data_version) if data_version else None,
            tags={**tags, SOURCE_TAG: "dagster"},
            metadata=metadata,
        )
        # Checks declared in dvc.yaml `meta.dagster.checks`, over the outputs as they are now.
        yield from check_results(Path(dvc.project_dir), spec.key, checks)

    return _asset


def build_dvc_assets(
    project_dir: str | Path, translator: DvcTranslator | None = None
) -> list[dg.AssetsDefinition]:
    """One asset per stage of the DVC project at `project_dir` (its dvc.yaml is the only graph)."""
    root = Path(project_dir)
    translator = translator or DvcTranslator()
    stages = load_stages(root)
    by_name = {s.name: s for s in stages}
    code_versions = code_versions_from_workspace(root, stages)
    assets = []
    for stage in stages:
        spec = translator.get_spec(stage, by_name, code_versions[stage.name])
        assets.append(_build_one(root, stage, spec, translator.get_pool(stage)))
    return assets
