"""Dagster definitions: every recipe's stages as assets, the dvc CLI resource, the reconciling sensor,
and one error sensor per broken recipe.

This module only composes; see dagster_project/dvc_integration for how dvc.yaml files become assets.
The project directory (the repo root; each folder in it holding a dvc.yaml is a recipe) is
DISTILL_PROJECT_DIR if set, else the repo this package lives in.
"""

import os
from pathlib import Path

from dagster_project.dvc_integration import build_code_location

PROJECT_DIR = Path(os.environ.get("DISTILL_PROJECT_DIR", Path(__file__).resolve().parent.parent)).resolve()

defs = build_code_location(PROJECT_DIR)
