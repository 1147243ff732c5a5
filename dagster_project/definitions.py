"""Dagster definitions: every recipe's stages as assets, the dvc CLI resource, the reconciling sensor,
and one error sensor per broken recipe.

This module only composes; see dagster_project/dvc_integration for how dvc.yaml files become assets.
The project directory (the repo root, whose recipes are every folder holding a dvc.yaml) is
DISTILL_PROJECT_DIR if set, else the repo this package lives in.
"""

import os
from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration import (
    DvcCliResource,
    build_dvc_assets,
    build_dvc_lock_sensor,
    build_recipe_error_sensors,
    load_project,
    log_recipe_errors,
    vet_recipes,
)

PROJECT_DIR = Path(os.environ.get("DISTILL_PROJECT_DIR", Path(__file__).resolve().parent.parent)).resolve()

project = vet_recipes(load_project(PROJECT_DIR))
log_recipe_errors(project)

defs = dg.Definitions(
    assets=build_dvc_assets(project),
    jobs=[
        dg.define_asset_job("main", selection=dg.AssetSelection.all(), description="Every recipe."),
        *(
            dg.define_asset_job(
                f"recipe__{r.name}", selection=dg.AssetSelection.groups(r.name), description=r.dvc_yaml
            )
            for r in project.ok_recipes
        ),
    ],
    sensors=[build_dvc_lock_sensor(project), *build_recipe_error_sensors(project)],
    resources={"dvc": DvcCliResource(project_dir=str(PROJECT_DIR))},
)
