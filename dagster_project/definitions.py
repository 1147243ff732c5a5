"""Dagster definitions: every recipe's stages as assets, the dvc CLI resource, the reconciling sensor,
and one error sensor per broken recipe.

This module only composes; see dagster_project/dvc_integration for how dvc.yaml files become assets.
The project directory (the repo root; each folder in it holding a dvc.yaml is a recipe) is
DISTILL_PROJECT_DIR if set, else the repo this package lives in.
"""

from dagster_project.dvc_integration.location import build_code_location, project_dir_from_env

PROJECT_DIR = project_dir_from_env()

defs = build_code_location(PROJECT_DIR)
