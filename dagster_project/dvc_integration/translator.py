"""Translate a DVC stage into a Dagster AssetSpec: key, deps, group, description, versions.

Like dagster-dbt's key-prefix translator: every asset key starts with its recipe's name, and the
recipe is the asset group, so recipes with the same stage or folder names never collide.
"""

import re
from pathlib import PurePosixPath
from typing import Any

import dagster as dg

from dagster_project.dvc_integration.k8s import check_gpu_launch, k8s_op_tags
from dagster_project.dvc_integration.project import DvcStage, asset_folder

POOL_TAG = "dvc/pool"  # op tag naming a step's pool (the multiprocess executor's tag_concurrency_limits)


def dagster_name(text: str) -> str:
    """`text` as a valid Dagster name (letters, digits and `_`): `train@small` -> `train_small`."""
    return re.sub(r"\W", "_", text) or "_"


class DvcTranslator:
    """Maps DVC stages to asset specs. Subclass and override a method to change one mapping."""

    def get_key_prefix(self, stage: DvcStage) -> list[str]:
        """The recipe's name: `AssetKey([recipe, asset])`."""
        return [stage.recipe]

    def get_asset_name(self, stage: DvcStage) -> str:
        """The name of the folder that holds the stage's outputs (a noun), or the stage's name when its
        outputs lie directly in its recipe folder (or it has none). A folder nested inside the recipe's
        `assets/` is named by its path there (`assets/students/s` -> `students_s`), so a `foreach` that
        writes `students/<size>` and `judged/<size>` gets one asset per folder."""
        if stage.outs:
            folder = PurePosixPath(asset_folder(stage))
            if folder.as_posix() not in (stage.wdir, "."):
                inside = (
                    folder.parts[len(PurePosixPath(stage.wdir).parts) :]
                    if stage.wdir != "."
                    else folder.parts
                )
                if len(inside) > 2 and inside[0] == "assets":
                    return dagster_name("_".join(inside[1:]))
                return dagster_name(folder.name)
        return dagster_name(stage.name)

    def get_asset_key(self, stage: DvcStage) -> dg.AssetKey:
        return dg.AssetKey([*self.get_key_prefix(stage), self.get_asset_name(stage)])

    def get_group_name(self, stage: DvcStage) -> str | None:
        """The recipe is the group (`meta.dagster.group` becomes the tag `group`)."""
        return dagster_name(stage.recipe)

    def get_description(self, stage: DvcStage) -> str:
        text = stage.dagster_meta.get("description") or f"Outputs of DVC stage `{stage.name}`."
        return f"{text}\n\nDVC stage `{stage.address}`: `{stage.cmd}`"

    def get_owners(self, stage: DvcStage) -> list[str]:
        return list(stage.dagster_meta.get("owners") or [])

    def get_tags(self, stage: DvcStage) -> dict[str, str]:
        tags = {str(k): str(v) for k, v in (stage.dagster_meta.get("tags") or {}).items()}
        if stage.dagster_meta.get("group"):
            tags.setdefault("group", str(stage.dagster_meta["group"]))
        return tags

    def get_pool(self, stage: DvcStage) -> str | None:
        """`meta.dagster.pool`: the Dagster pool of the stage's step. A stage with a pool runs as a step
        of its own (each `foreach` entry one step), so an executor can run several at once, and Dagster
        limits how many steps of one pool run at once across runs (the instance's pool limit)."""
        pool = stage.dagster_meta.get("pool")
        if pool is not None and (not isinstance(pool, str) or not pool.strip()):
            raise ValueError(
                f"stage {stage.name!r}: meta.dagster.pool must be a name (e.g. teacher), got {pool!r}"
            )
        return pool or None

    def get_concurrency(self, stage: DvcStage) -> int | None:
        """`meta.dagster.concurrency`: the most steps of the stage's pool one run executes at once
        (under the multiprocess executor); None for no limit of its own."""
        value = stage.dagster_meta.get("concurrency")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"stage {stage.name!r}: meta.dagster.concurrency must be a whole number >= 1, got {value!r}"
            )
        if not self.get_pool(stage):
            raise ValueError(
                f"stage {stage.name!r}: meta.dagster.concurrency limits a pool's steps: add meta.dagster.pool"
            )
        return value

    def get_own_step(self, stage: DvcStage) -> bool:
        """Whether the stage runs as a Dagster step of its own: it names a `pool` (shards to run side by
        side) or `resources` (a pod of its own size on a cluster: deploy/k8s, docs/cluster.md)."""
        return bool(self.get_pool(stage) or stage.dagster_meta.get("resources"))

    def get_op_tags(self, stages: list[DvcStage]) -> dict[str, str]:
        """Tags of the step that runs `stages`: the `dagster-k8s/config` pod resources of a stage with
        `meta.dagster.resources` (always a step of its own). Raises ValueError on a malformed block."""
        tags: dict[str, str] = {}
        for stage in stages:
            try:
                tags.update(k8s_op_tags(stage.dagster_meta))
                check_gpu_launch(stage.cmd, stage.dagster_meta)
            except ValueError as exc:
                raise ValueError(f"stage {stage.name!r}: {exc}") from None
        return tags

    def get_metadata(self, stage: DvcStage) -> dict[str, Any]:
        return {
            "dvc/recipe": stage.recipe,
            "dvc/stage": stage.address,
            "dvc/cmd": dg.MetadataValue.text(stage.cmd),
            "dvc/outs": dg.MetadataValue.json(list(stage.outs)),
            "dvc/deps": dg.MetadataValue.json(list(stage.deps)),
            "dvc/params": dg.MetadataValue.json({f: list(k) for f, k in stage.params.items()}),
        }

    def get_spec(
        self, stage: DvcStage, stages_by_name: dict[str, DvcStage], code_version: str | None
    ) -> dg.AssetSpec:
        """The full AssetSpec for one stage (`stages_by_name`: the stages of its recipe)."""
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
