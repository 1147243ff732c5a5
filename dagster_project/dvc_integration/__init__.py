"""The DVC -> Dagster integration, dagster-dbt in miniature.

The repo's dvc.yaml files (read once, via DVC) become a project of recipes (`project`), each recipe's
stages become asset specs under the recipe's key prefix and group (`translator`), each asset
materializes by running DVC (`resource`), versions come from each recipe's dvc.lock (`versions`), a
sensor reconciles runs made outside Dagster (`sensor`), a broken recipe is reported by name
(`errors`), and `location` composes them into one code location. No domain logic lives here.
"""

from dagster_project.dvc_integration.assets import build_dvc_assets, build_recipe_assets
from dagster_project.dvc_integration.errors import (
    build_recipe_error_sensors,
    log_recipe_errors,
    vet_recipes,
)
from dagster_project.dvc_integration.location import build_code_location
from dagster_project.dvc_integration.project import DvcProject, DvcStage, Recipe, load_project
from dagster_project.dvc_integration.resource import DvcCliResource
from dagster_project.dvc_integration.sensor import build_dvc_lock_sensor
from dagster_project.dvc_integration.translator import DvcTranslator

__all__ = [
    "DvcCliResource",
    "DvcProject",
    "DvcStage",
    "DvcTranslator",
    "Recipe",
    "build_code_location",
    "build_dvc_assets",
    "build_dvc_lock_sensor",
    "build_recipe_assets",
    "build_recipe_error_sensors",
    "load_project",
    "log_recipe_errors",
    "vet_recipes",
]
