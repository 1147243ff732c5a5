"""Broken recipes, reported by name without hiding the others.

A recipe whose dvc.yaml DVC cannot read, whose params do not validate, or whose stages cannot become
assets has no assets; instead it gets a sensor `recipe_error__<name>` (running by default) whose every
tick fails with the error, so the UI shows it (Automation, and the code location's sensors) next to
the recipes that loaded. The error is also logged when the definitions load.
"""

import dagster as dg

from dagster_project.dvc_integration.assets import build_recipe_assets
from dagster_project.dvc_integration.project import DvcProject, Recipe
from dagster_project.dvc_integration.translator import DvcTranslator, dagster_name

ERROR_SENSOR_PREFIX = "recipe_error__"


class RecipeError(Exception):
    """A recipe that could not be loaded; the message names the recipe, its file and the cause."""


def vet_recipes(project: DvcProject, translator: DvcTranslator | None = None) -> DvcProject:
    """The project where every loaded recipe whose stages cannot become assets (two stages with one
    asset key, a malformed `meta.dagster` block) carries that error instead of its stages."""
    for recipe in project.ok_recipes:
        try:
            build_recipe_assets(recipe, translator)
        except Exception as exc:
            project = project.replace(recipe.failed(f"{recipe.dvc_yaml}: {type(exc).__name__}: {exc}"))
    return project


def recipe_error_message(recipe: Recipe) -> str:
    """What a broken recipe's log line and sensor ticks say."""
    return f"recipe {recipe.name!r} did not load, so it has no assets: {recipe.error}"


def log_recipe_errors(project: DvcProject) -> None:
    """Log one error per broken recipe (shown where the code location loads, e.g. `dagster dev`)."""
    log = dg.get_dagster_logger("distill")
    for recipe in project.broken_recipes:
        log.error(recipe_error_message(recipe))


def build_recipe_error_sensor(recipe: Recipe) -> dg.SensorDefinition:
    """A running sensor whose every tick fails with the recipe's error."""
    message = recipe_error_message(recipe)

    @dg.sensor(
        name=f"{ERROR_SENSOR_PREFIX}{dagster_name(recipe.name)}",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=message,
        tags={"dvc/recipe_error": "true"},
    )
    def _recipe_error(context: dg.SensorEvaluationContext):
        raise RecipeError(message)

    return _recipe_error


def build_recipe_error_sensors(project: DvcProject) -> list[dg.SensorDefinition]:
    """One error sensor per broken recipe."""
    return [build_recipe_error_sensor(r) for r in project.broken_recipes]
