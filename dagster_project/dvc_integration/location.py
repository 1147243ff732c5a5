"""One Dagster code location for every recipe of a repo: what `definitions.py` serves."""

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration.assets import build_dvc_assets
from dagster_project.dvc_integration.errors import build_recipe_error_sensors, log_recipe_errors, vet_recipes
from dagster_project.dvc_integration.executors import (
    celery_executor_from_env,
    dvc_executor,
    parallel_run_config,
)
from dagster_project.dvc_integration.project import DvcProject, load_project
from dagster_project.dvc_integration.resource import DvcCliResource
from dagster_project.dvc_integration.sensor import build_dvc_lock_sensor
from dagster_project.dvc_integration.translator import DvcTranslator

PROJECT_DIR_ENV = "DISTILL_PROJECT_DIR"


def project_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The project (repo root) the definitions serve: DISTILL_PROJECT_DIR if set, else the repo this
    package lives in."""
    environ = os.environ if environ is None else environ
    default = Path(__file__).resolve().parent.parent.parent
    return Path(environ.get(PROJECT_DIR_ENV) or default).resolve()


def pull_from_remote(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Materialize tries the remote first (`dvc repro --pull`): yes unless DISTILL_DVC_PULL=0."""
    environ = os.environ if environ is None else environ
    return environ.get("DISTILL_DVC_PULL", "1").strip() not in ("0", "false", "no")


EXECUTOR_ENV = "DISTILL_EXECUTOR"
EXECUTORS = ("in_process", "k8s", "celery")


def project_executor(project_dir: Path, environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor of the project's runs, chosen by DISTILL_EXECUTOR: `in_process` (the default: in the
    run's process, `multiprocess` choosable in run config), `k8s` (a pod per step, configured by
    `deploy/k8s/run_config.yaml`; docs/cluster.md) or `celery` (each step a task for dagster-celery
    workers, through the broker DISTILL_CELERY_BROKER names; executors.celery_config)."""
    environ = os.environ if environ is None else environ
    name = environ.get(EXECUTOR_ENV, "").strip() or "in_process"
    if name == "in_process":
        return dvc_executor
    if name == "k8s":
        from dagster_project.dvc_integration.k8s import k8s_executor

        return k8s_executor(project_dir / "deploy" / "k8s" / "run_config.yaml")
    if name == "celery":
        return celery_executor_from_env(environ)
    raise ValueError(f"{EXECUTOR_ENV}={name!r} is not an executor; allowed: {', '.join(EXECUTORS)}")


def recipe_jobs(
    project: DvcProject, translator: DvcTranslator | None = None, parallel_config: bool = True
) -> list:
    """`main` (every recipe) and one job per recipe, `recipe__<name>` (its group). With the default
    executor, the job of a recipe with pool stages runs them side by side (multiprocess executor)."""
    jobs = [dg.define_asset_job("main", selection=dg.AssetSelection.all(), description="Every recipe.")]
    for r in project.ok_recipes:
        parallel = parallel_run_config(r, translator) if parallel_config else None
        jobs.append(
            dg.define_asset_job(
                f"recipe__{r.name}",
                selection=dg.AssetSelection.groups(r.name),
                config=parallel,
                description=f"The recipe `{r.name}` ({r.dvc_yaml})."
                + (" Its pool stages run side by side (multiprocess executor)." if parallel else ""),
            )
        )
    return jobs


def build_code_location(
    project_dir: "str | Path | DvcProject", translator: DvcTranslator | None = None
) -> dg.Definitions:
    """Every recipe's stages as assets (prefixed and grouped by recipe), the dvc CLI resource, the
    reconciling sensor, and an error sensor per broken recipe (also logged)."""
    project = project_dir if isinstance(project_dir, DvcProject) else load_project(project_dir)
    project = vet_recipes(project, translator)
    log_recipe_errors(project)
    executor = project_executor(Path(project.root))
    return dg.Definitions(
        assets=build_dvc_assets(project, translator),
        jobs=recipe_jobs(project, translator, parallel_config=executor is dvc_executor),
        sensors=[build_dvc_lock_sensor(project, translator), *build_recipe_error_sensors(project)],
        resources={"dvc": DvcCliResource(project_dir=str(project.root), pull=pull_from_remote())},
        # Most runs are one step per recipe that waits on `dvc`: running it in the run's own process
        # saves a second process start (and definitions load) per run; DVC isolates each stage itself.
        # Run config can choose `multiprocess` (the recipe jobs of recipes with pool stages do).
        executor=executor,
    )
