"""Dagster definitions: the DVC project's stages as assets, the dvc CLI resource, the reconciling sensor.

This module only composes; see dagster_project/dvc_integration for how dvc.yaml becomes assets.
The project directory is DISTILL_PROJECT_DIR if set, else the repo this package lives in.
"""

import os
from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets, build_dvc_lock_sensor

PROJECT_DIR = Path(os.environ.get("DISTILL_PROJECT_DIR", Path(__file__).resolve().parent.parent)).resolve()

dvc_assets = build_dvc_assets(PROJECT_DIR)

defs = dg.Definitions(
    assets=dvc_assets,
    jobs=[dg.define_asset_job("main", selection=dg.AssetSelection.all(), description="The whole pipeline.")],
    sensors=[build_dvc_lock_sensor(PROJECT_DIR)],
    resources={"dvc": DvcCliResource(project_dir=str(PROJECT_DIR))},
)
