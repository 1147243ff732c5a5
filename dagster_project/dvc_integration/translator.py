"""Translate a DVC stage into a Dagster AssetSpec: key, deps, group, description, versions."""

from pathlib import PurePosixPath
from typing import Any

import dagster as dg

from dagster_project.dvc_integration.project import DvcStage, asset_folder


class DvcTranslator:
    """Maps DVC stages to asset specs. Subclass and override a method to change one mapping."""

    def get_asset_key(self, stage: DvcStage) -> dg.AssetKey:
        """The asset key is the name of the folder that holds the stage's outputs (a noun)."""
        return dg.AssetKey(PurePosixPath(asset_folder(stage)).name)

    def get_group_name(self, stage: DvcStage) -> str | None:
        return stage.dagster_meta.get("group")

    def get_description(self, stage: DvcStage) -> str:
        text = stage.dagster_meta.get("description") or f"Outputs of DVC stage `{stage.name}`."
        return f"{text}\n\nDVC stage `{stage.name}`: `{stage.cmd}`"

    def get_owners(self, stage: DvcStage) -> list[str]:
        return list(stage.dagster_meta.get("owners") or [])

    def get_tags(self, stage: DvcStage) -> dict[str, str]:
        tags = {str(k): str(v) for k, v in (stage.dagster_meta.get("tags") or {}).items()}
        return tags

    def get_pool(self, stage: DvcStage) -> str | None:
        return stage.dagster_meta.get("pool")

    def get_metadata(self, stage: DvcStage) -> dict[str, Any]:
        return {
            "dvc/stage": stage.name,
            "dvc/cmd": dg.MetadataValue.text(stage.cmd),
            "dvc/outs": dg.MetadataValue.json(list(stage.outs)),
            "dvc/deps": dg.MetadataValue.json(list(stage.deps)),
            "dvc/params": dg.MetadataValue.json({f: list(k) for f, k in stage.params.items()}),
        }

    def get_spec(
        self, stage: DvcStage, stages_by_name: dict[str, DvcStage], code_version: str | None
    ) -> dg.AssetSpec:
        """The full AssetSpec for one stage."""
        return dg.AssetSpec(
            key=self.get_asset_key(stage),
            deps=[self.get_asset_key(stages_by_name[u]) for u in stage.upstream],
            description=self.get_description(stage),
            group_name=self.get_group_name(stage),
            owners=self.get_owners(stage),
            tags=self.get_tags(stage),
            kinds={"dvc"},
            code_version=code_version,
            metadata=self.get_metadata(stage),
        )
